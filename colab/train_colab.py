"""Everything in one run, built to survive a Colab disconnect: vanilla -> modern -> BPE -> benchmarks -> figures.

    python -u colab/train_colab.py                        # all phases at the reference sizes (a T4 or better)
    python -u colab/train_colab.py --phases modern bpe    # only some
    python -u colab/train_colab.py --preset cpu           # the whole thing in minutes, locally

In Colab, checkpoints/, results/ and images/ live in MyDrive/tinyllm on Google Drive, which the notebook mounts
(--out-dir to change; outside Colab the repo's own folders). Run it again after a disconnect: finished
phases are skipped (their summary.json / results file exists) and an interrupted one resumes from its
last checkpoint. Each phase is the same script a local user runs, in a process of its own.
"""
from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from cli import RUN_DEFAULTS, TRAINING_SCRIPTS, parse_training_args, write_run_results  # noqa: E402
from common import REPO_ROOT, ArgumentParser, UserError, one_line, output_folder, run_cli  # noqa: E402
from device import benchmark_record_name, describe_hardware, pick_device, resolve_dtype  # noqa: E402
from presets import PRESETS, cpu_preset_note  # noqa: E402
from trainer import run_differences, text_difference  # noqa: E402

DRIVE_MOUNT = Path("/content/drive")
DRIVE_DIR = DRIVE_MOUNT / "MyDrive" / "tinyllm"
CPU_PRESETS = {"vanilla": "cpu", "modern": "cpu", "bpe": "bpe-cpu"}  # --preset cpu: each phase's preset (presets.py)
PHASES = [*TRAINING_SCRIPTS, "benchmarks", "figures"]  # a training phase: its run of cli.RUN_DEFAULTS


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--phases", nargs="+", choices=PHASES, default=PHASES, help="what to run, in this order")
    p.add_argument("--preset", choices=["cpu"], default=None,
                   help="small sizes for a CPU: presets cpu and bpe-cpu of presets.py (default: reference sizes)")
    p.add_argument("--out-dir", type=output_folder, default=None,
                   help="where checkpoints/, results/, images/ go (default: Drive in Colab, else the repo)")
    p.add_argument("--train-args", default="", help="extra flags for every training phase, e.g. '--max-steps 500'")
    p.add_argument("--benchmark-args", default="", help="extra flags for training/benchmark.py")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    return p


def in_colab() -> bool:
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ModuleNotFoundError:  # no `google` package at all: find_spec imports the parent first
        return False


def storage_root(requested: Path | None) -> Path:
    """Drive in Colab (so a disconnect loses nothing), the repo elsewhere, or what --out-dir says."""
    if requested is not None:
        return requested.resolve()
    if in_colab():
        return mounted_drive()
    return REPO_ROOT


def mounted_drive() -> Path:
    """DRIVE_DIR, on a Drive the notebook mounted. Mounting asks for authorisation through the notebook's kernel,
    which a script started with `!python` cannot reach, so the notebook mounts it first; this only tries itself
    (it works under %run, inside the kernel) and otherwise says what to do."""
    if not DRIVE_DIR.parent.is_dir():
        try:
            from google.colab import drive
            drive.mount(str(DRIVE_MOUNT))
        except Exception as err:  # no kernel to ask, authorisation refused, ...: all the user's to fix
            raise UserError(f"Google Drive is not mounted ({type(err).__name__}: {one_line(err)[:120]}); run "
                            f"`from google.colab import drive; drive.mount('{DRIVE_MOUNT}')` in a notebook cell "
                            "first, or pass --out-dir") from None
    return DRIVE_DIR


def phase_state(run_dir: Path) -> str:
    """done (a finished run wrote summary.json), interrupted (a last/ checkpoint without one), or new."""
    if (run_dir / "summary.json").exists():
        return "done"
    return "interrupted" if (run_dir / "last" / "config.json").exists() else "new"


def differences_from(run_dir: Path, phase: str, argv: list[str]) -> str:
    """What the finished run in `run_dir` trained differently from what `argv` asks this phase to train ("" where
    nothing differs): a finished phase is skipped, so a run of other settings (a shortened first try, another
    --train-args) must not pass for the one asked for."""
    model_config, train_config = parse_training_args(argv, phase, *RUN_DEFAULTS[phase], tuple(PRESETS), announce=None)
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        differences = run_differences(summary["model_config"], summary["train_config"], model_config, train_config)
    except (OSError, ValueError, KeyError, TypeError, UserError) as err:
        raise UserError(f"[{phase}] {run_dir / 'summary.json'} is unreadable ({one_line(err)[:120]}); move "
                        f"{run_dir} away to train this phase again") from None
    # the data file's own errors (missing, offline) as they are, not as an unreadable summary
    return ", ".join(filter(None, [differences, text_difference(summary.get("data_text"), train_config)]))


def run_script(phase: str, script: str, argv: list[str]) -> None:
    """One phase is the repo's own script in a process of its own, as a user would run it."""
    print(f"[{phase}] {script} {' '.join(argv)}", flush=True)
    done = subprocess.run([sys.executable, "-u", str(REPO / script), *argv])
    if done.returncode != 0:
        raise UserError(f"[{phase}] {script} failed (exit status {done.returncode}); run train_colab.py again to "
                        "resume from there")


def results_name(phase: str, preset: str | None) -> str:
    """A phase's results file: train_<phase> with --preset cpu, train_<phase>-reference at the reference sizes (the
    name a local GPU run with --out-dir checkpoints/<phase>-reference writes), so that copying a Colab results/
    into the repo does not overwrite the committed CPU-preset records, train_<phase>.json. The run folder keeps the
    phase's name either way, so a run begun before this naming still resumes."""
    return f"train_{phase}" + ("" if preset else "-reference")


def run_training_phase(phase: str, root: Path, args) -> None:
    run_dir = root / "checkpoints" / phase
    state = phase_state(run_dir)
    argv = ["--out-dir", str(run_dir), "--device", args.device, *shlex.split(args.train_args)]
    argv += ["--preset", CPU_PRESETS[phase]] if args.preset else []
    if state == "done":
        differences = differences_from(run_dir, phase, argv)
        if differences:
            raise UserError(f"[{phase}] {run_dir} holds a finished run of other settings ({differences}); run with "
                            "the settings it had, or move that folder away to train this phase again")
        print(f"[{phase}] done already ({run_dir / 'summary.json'}); skipping", flush=True)
        return
    argv += ["--resume"] if state == "interrupted" else ["--overwrite"]  # "new": nothing there can be resumed
    print(f"[{phase}] {'resuming' if state == 'interrupted' else 'starting'}", flush=True)
    run_script(phase, f"training/{TRAINING_SCRIPTS[phase]}", argv)
    results = write_run_results(run_dir, root / "results", results_name(phase, args.preset))
    print(f"[{phase}] results: {results}", flush=True)


def run_benchmarks(root: Path, args) -> None:
    results = root / "results" / f"{benchmark_record_name(pick_device(args.device), bool(args.preset))}.json"
    if results.exists():
        print(f"[benchmarks] done already ({results}); skipping", flush=True)
        return
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)  # a benchmarks-only run on a fresh Drive: none yet
    run_script("benchmarks", "training/benchmark.py",
               ["--checkpoints", str(root / "checkpoints"), "--results-dir", str(root / "results"), "--images-dir",
                str(root / "images"), "--device", args.device, *(["--quick"] if args.preset else []),
                *shlex.split(args.benchmark_args)])


def run_figures(root: Path, args) -> None:
    """The figures that read checkpoints (cheap, so always redone)."""
    run_script("figures", "experiments/visualize.py",
               ["all", "--checkpoints", str(root / "checkpoints"), "--results-dir", str(root / "results"),
                "--images-dir", str(root / "images"), "--device", args.device])


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    root = storage_root(args.out_dir)
    device = pick_device(args.device)
    precision = resolve_dtype("auto", device)
    print(f"device: {device} ({describe_hardware(device)}); training dtype: {precision.dtype} ({precision.reason}); "
          f"storage: {root}{' (Google Drive)' if root == DRIVE_DIR else ''}", flush=True)
    note = cpu_preset_note(args.preset, device.type, ("cpu",))  # the reference sizes on a CPU: hours
    if note:
        print(note, flush=True)
    for phase in [p for p in PHASES if p in args.phases]:
        if phase in TRAINING_SCRIPTS:
            run_training_phase(phase, root, args)
        elif phase == "benchmarks":
            run_benchmarks(root, args)
        else:
            run_figures(root, args)
    print(f"all phases done; results in {root / 'results'}, plots in {root / 'images'}")


if __name__ == "__main__":
    run_cli(main)
