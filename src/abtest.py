"""A/B experiments: train several config variants ("arms") over several seeds through the one training loop.

Every arm of a seed sees the same batches in the same order (the data generator depends only on the
seed), so differences between arms come from the component swapped, and the spread over seeds says how
much of a difference is noise (arms of other batch shapes draw batches of their own). Arms are compared at equal
steps, or at equal training tokens where they differ in tokens per step (batch, block, accumulation): at equal steps
a larger batch has simply read more text. Results go to results/<name>.json and a plot to images/<name>.png.
"""
from __future__ import annotations

import json
import re
import shlex
import statistics
import textwrap
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from checkpoint import read_config
from checks import check_int
from cli import MODEL_FLAGS, TRAIN_FLAGS
from common import REPO_ROOT, ArgumentParser, UserError, add_output_folders, atomic_write_json, output_folder
from device import describe_hardware, pick_device
from model import GPTConfig
from plots import pyplot, save_figure
from presets import apply_preset, cpu_preset_note, describe
from trainer import TrainConfig, run_differences, train

AB_PRESETS = ("ab-reference", "ab-cpu")  # presets.py: the first is the default; *-reference presets run one seed
CPU_SEEDS = 3  # seeds per arm at the other presets
AB_SCRIPT = "experiments/ab.py"  # the A/B of arms from the command line; its records say written_by: AB_SCRIPT
EXPERIMENT_FLAGS = ("max_steps", "eval_interval", "eval_iters", "batch_size")  # what an experiment's flags override
# set by the harness for every arm; and tokenizers, whose losses per token do not compare (compare_tokenizers.py
# compares them in bits per character)
NOT_ARM_FIELDS = {"seed", "device", "data", "out_dir", "sample_tokens", "tokenizer"}
ARM_FIELDS = {name: typ for name, (typ, _) in {**MODEL_FLAGS, **TRAIN_FLAGS}.items() if name not in NOT_ARM_FIELDS}
ARM_FIELDS["compile"] = str  # --compile has a flag of its own (cli.py); an arm may set auto, on or off


def build_parser(description: str, presets: tuple[str, ...] = AB_PRESETS, cpu_seeds: int = CPU_SEEDS) -> ArgumentParser:
    p = ArgumentParser(description=description, epilog=describe(presets))
    p.add_argument("--preset", choices=presets, default=presets[0], help=f"model/training size (default: {presets[0]})")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per arm (default: 1)" if cpu_seeds == 1 else
                   f"seeds per arm (default: 1 for a *-reference preset (a GPU's size), {cpu_seeds} for the others)")
    p.add_argument("--max-steps", type=int, default=None, help="override the preset's steps")
    p.add_argument("--eval-interval", type=int, default=None, help="override the preset's eval interval")
    p.add_argument("--eval-iters", type=int, default=None, help="override the preset's eval batches")
    p.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default: auto)")
    p.add_argument("--data", default=None, help="training text (default: data/input.txt)")
    add_output_folders(p)
    p.add_argument("--runs-dir", type=output_folder, default=str(REPO_ROOT / "checkpoints" / "swaps"),
                   help="checkpoints of every arm (default: checkpoints/swaps/)")
    p.add_argument("--resume", action="store_true",
                   help="after a stopped experiment: keep the runs it finished (same settings, seed, machine and "
                        "text) and continue the one it stopped in from its last checkpoint; without it every run "
                        "trains afresh")
    return p


def default_seeds(preset: str, cpu_seeds: int = CPU_SEEDS) -> int:
    return 1 if preset.endswith("reference") else cpu_seeds


def configs_from_args(args, cpu_seeds: int = CPU_SEEDS, base: GPTConfig | None = None) -> tuple[GPTConfig, TrainConfig, int]:
    """The experiment's model and training configs: `base` (default: the vanilla GPT) with the preset applied."""
    seeds = args.seeds if args.seeds is not None else default_seeds(args.preset, cpu_seeds)
    check_int(seeds, "--seeds", 1, 1000)
    model, tc = apply_preset(args.preset, base or GPTConfig(), TrainConfig(device=args.device, data=args.data,
                                                                            sample_tokens=0))
    tc = replace(tc, **{name: getattr(args, name) for name in EXPERIMENT_FLAGS if getattr(args, name) is not None})
    tc.validate()
    return model, tc, seeds


# ----------------------------------------------------------------------------- arms on the command line, and back

def parse_arm(spec: str) -> tuple[str, dict]:
    """`LABEL:FIELD=VALUE,...` (or `FIELD=VALUE,...`) -> (label, {field: value of the field's type})."""
    label, colon, changes = spec.partition(":")
    if not colon or "=" in label:  # no label: the changes name the arm
        label, changes = spec, spec
    overrides = {}
    for change in filter(None, (c.strip() for c in changes.split(","))):
        field, equals, value = change.partition("=")
        field = field.strip().replace("-", "_")
        if field == "tokenizer":
            raise UserError(f"--arm {spec!r}: losses per token of different tokenizers do not compare; "
                            "experiments/compare_tokenizers.py compares tokenizers in bits per character")
        if not equals or field not in ARM_FIELDS:
            raise UserError(f"--arm {spec!r}: {change!r} is not FIELD=VALUE with a field of "
                            f"{', '.join(sorted(ARM_FIELDS))}")
        try:
            overrides[field] = ARM_FIELDS[field](value.strip())
        except ValueError:
            kind = "an integer" if ARM_FIELDS[field] is int else "a number"
            raise UserError(f"--arm {spec!r}: {field} needs {kind}, got {value.strip()!r}") from None
    if not label.strip():
        raise UserError(f"--arm {spec!r} names no arm: give LABEL:, FIELD=VALUE or both")
    return label.strip(), overrides


def arm_spec(label: str, overrides: dict) -> str:
    """The --arm that parse_arm reads back as (label, overrides): `LABEL:FIELD=VALUE,...`, or the label alone where
    the label is the changes themselves (`lr=3e-3`)."""
    labelled = f"{label}:{','.join(f'{field}={value}' for field, value in overrides.items())}"
    for spec in (labelled, label):
        try:
            if parse_arm(spec) == (label, overrides):
                return spec
        except UserError:
            pass
    return labelled


def rerun_command(record: dict) -> str:
    """The command that reruns an A/B record, rebuilt from what the record holds (none kept its command line): the
    script, the preset, the seeds and experiment flags where they differ from the preset's, and for AB_SCRIPT the
    base model and every arm."""
    name, preset = record["experiment"], record["preset"]
    from_command_line = record.get("written_by") == AB_SCRIPT
    words = ["python", "-u", *((AB_SCRIPT, name) if from_command_line else (f"experiments/{name}.py",))]
    if from_command_line and record.get("base", "modern") != "modern":
        words += ["--base", record["base"]]
    words += ["--preset", preset]
    if record["seeds"] != default_seeds(preset):
        words += ["--seeds", str(record["seeds"])]
    preset_config = apply_preset(preset, GPTConfig(), TrainConfig())[1]
    for field in EXPERIMENT_FLAGS:
        value = record["train_config"].get(field)
        if value != getattr(preset_config, field):
            words += [f"--{field.replace('_', '-')}", str(value)]
    if from_command_line:
        for label, arm in record["arms"].items():
            words += ["--arm", arm_spec(label, arm["overrides"])]
    return shlex.join(words)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def plus_minus(mean_and_std, seeds: int, spec: str = ".4f") -> str:
    """'mean ± std over the seeds' as the tables print it, or the mean alone for one seed, whose std of 0 would claim
    a certainty no single run has. `spec` formats both; a '+' in it signs the mean only."""
    mean, std = mean_and_std
    return f"{mean:{spec}}" + (f" ± {std:{spec.replace('+', '')}}" if seeds > 1 else "")


def arm_configs(model: GPTConfig, tc: TrainConfig, label: str, overrides: dict) -> tuple[GPTConfig, TrainConfig]:
    """An arm's model and training configs: its overrides laid over the experiment's and checked, so that run_arms
    refuses a bad value in the last arm before the first one trains (the UserError names the arm). An arm of
    another batch size is evaluated on the experiment's batches (the evaluation draws batch_size windows per batch):
    on windows of its own, part of its difference in val loss would be a difference of text."""
    model_fields = set(GPTConfig.__dataclass_fields__)
    if "batch_size" in overrides and not tc.eval_batch_size:  # evaluated on the experiment's windows, not its own
        overrides = {"eval_batch_size": tc.batch_size, **overrides}
    try:
        arm_model = replace(model, **{k: v for k, v in overrides.items() if k in model_fields})
        arm_train = replace(tc, **{k: v for k, v in overrides.items() if k not in model_fields})
        arm_train.validate()
    except UserError as err:
        raise UserError(f"arm {label!r}: {err}") from None
    return arm_model, arm_train


def hours_on_cpu_note(args) -> str | None:
    """The line for an experiment at a *-reference preset's sizes on a CPU, where it takes hours (presets.py)."""
    return cpu_preset_note(args.preset, pick_device(args.device).type) if args.max_steps is None else None


def earlier_run(run_dir: Path, model: GPTConfig, tc: TrainConfig) -> tuple[str, dict | None]:
    """What `run_dir` holds of this very run (the same model, settings and seed, on this machine and text), with its
    record: "finished" (its summary), "interrupted" (its last/ checkpoint, which --resume continues bit for bit), or
    "none". An experiment stopped halfway then reruns only what it had not finished; a run of other settings, of a
    data file edited since, or from another machine (whose tokens/s would not compare) is trained again."""
    try:
        if (run_dir / "summary.json").exists():
            state, record = "finished", json.loads((run_dir / "summary.json").read_text())
            saved_model = record["model_config"]
        elif (run_dir / "last" / "train_state.pt").exists():
            state, record = "interrupted", read_config(run_dir / "last")
            saved_model = record["model"]
        else:
            return "none", None
        same = (not run_differences(saved_model, record["train_config"], model, tc, record.get("data_text"))
                and record["hardware"] == describe_hardware(pick_device(tc.device)))
    except (OSError, ValueError, KeyError, TypeError, UserError):  # unreadable: trained again
        return "none", None
    return (state, record) if same else ("none", None)


def run_arms(name: str, arms: dict[str, dict], model: GPTConfig, tc: TrainConfig, seeds: int, runs_dir,
             first_seed: int = 0, note: str | None = None, resume: bool = False) -> dict:
    """Train every arm for seeds first_seed .. first_seed + seeds - 1; returns the per-arm curves, params, tokens/s.
    `note`: printed once every arm is checked, before the first one trains (a bad arm prints nothing).
    resume=True: what an earlier, stopped call left of each run is reused (earlier_run); it is opt-in, since after
    a change to the code an identical config must train again."""
    configs = {label: arm_configs(model, tc, label, overrides) for label, overrides in arms.items()}  # all checked
    if note:
        print(note, flush=True)
    out = {label: {"overrides": overrides, "curves": [], "bpc_curves": [], "tokens_per_sec": [], "params": None,
                   "best_val": [], "best_bpc": [], "elapsed_s": [],
                   "tokens_per_step": configs[label][1].batch_size * configs[label][1].grad_accum
                   * configs[label][0].block_size} for label, overrides in arms.items()}
    runs, done, trained, started = seeds * len(configs), 0, 0, time.perf_counter()
    for seed in range(first_seed, first_seed + seeds):
        for label, (arm_model, arm_train) in configs.items():
            run_dir = Path(runs_dir) / name / re.sub(r"[^\w.-]+", "_", label) / f"seed{seed}"  # a portable folder name
            print(f"--- {name}: {label}, seed {seed} ---", flush=True)
            arm_train = replace(arm_train, seed=seed, out_dir=str(run_dir))
            state, summary = earlier_run(run_dir, arm_model, arm_train) if resume else ("none", None)
            if state == "finished":
                print(f"    finished earlier in {run_dir}, with these settings on this machine: reused", flush=True)
            else:
                if state == "interrupted":
                    print(f"    interrupted earlier: resumed from {run_dir / 'last'}", flush=True)
                arm_train = replace(arm_train, resume=state == "interrupted", overwrite=state == "none")
                try:
                    summary = train(arm_model, arm_train, log=lambda *_: None)
                except KeyboardInterrupt as stop:
                    raise type(stop)(f"in run {done + 1} of {runs} ({label}, seed {seed}); the same command with "
                                     f"--resume keeps the {done} finished and continues this one from its last "
                                     "checkpoint, if it has one") from None
                trained += 1
            evals = json.loads((run_dir / "history.json").read_text())["evals"]
            arm = out[label]
            arm["curves"].append([(e["step"], e["val_loss"]) for e in evals])
            arm["bpc_curves"].append([(e["step"], e["val_bpc"]) for e in evals])
            arm["tokens_per_sec"].append(summary["tokens_per_sec"])
            arm["best_val"].append(summary["best_val_loss"])
            arm["best_bpc"].append(summary["best_val_bpc"])
            arm["elapsed_s"].append(summary["elapsed_s"])
            arm["params"] = summary["params"]
            arm["precision"] = {"dtype": summary["dtype"], "reason": summary["dtype_reason"]}
            arm["compiled"] = {"enabled": summary["compiled"], "reason": summary["compile_reason"]}
            arm["vocab_size"], arm["chars_per_token"] = summary["vocab_size"], summary["chars_per_val_token"]
            done += 1
            if trained or done == runs:  # the runs trained so far set the pace (a reused one took no time)
                eta = f"{(time.perf_counter() - started) / max(trained, 1) * (runs - done):.0f}s"
            else:
                eta = "–"
            print(f"    best val {summary['best_val_loss']:.4f}, {summary['tokens_per_sec']:,.0f} tok/s | "
                  f"run {done}/{runs}, ETA {eta}", flush=True)
    return out


def comparison_axis(arms: dict, key: str = "curves") -> tuple[str, dict[str, list]]:
    """What the arms are compared at, and their curves on it: "step", or "tokens" (step x tokens per step) where the
    arms differ in tokens per step. Records written before tokens_per_step was kept compare at steps."""
    per_step = {label: arm.get("tokens_per_step", 1) for label, arm in arms.items()}
    if len(set(per_step.values())) == 1:
        return "step", {label: arm[key] for label, arm in arms.items()}
    return "tokens", {label: [[(step * per_step[label], value) for step, value in curve] for curve in arm[key]]
                      for label, arm in arms.items()}


def common_steps(curves: list[list]) -> list[int]:
    """The evaluation steps every curve has. Runs stopped by --max-time (or early stopping) end at steps of their
    own, so arms and seeds are compared only where all of them were evaluated."""
    return sorted(set.intersection(*({step for step, _ in curve} for curve in curves)))


def summarise(arms: dict) -> list[dict]:
    """Per eval step (or tokens, comparison_axis): mean and std of each arm's val loss, and each variant's paired
    difference to the first arm."""
    labels = list(arms)
    base = labels[0]
    axis, curves = comparison_axis(arms)
    at = {label: [dict(curve) for curve in curves[label]] for label in labels}  # per seed: step -> loss
    rows = []
    for step in common_steps([curve for label in labels for curve in curves[label]]):
        row = {axis: step}
        for label in labels:
            row[label] = mean_std([curve[step] for curve in at[label]])
            if label != base:
                row[f"{label} - {base}"] = mean_std([v[step] - b[step] for v, b in zip(at[label], at[base])])
        rows.append(row)
    return rows


def end_of_run(arms: dict) -> dict | None:
    """A last table row: each run's final evaluation, paired by seed, where some run ended past the last step every
    run reached (None where all ended there). A run that --max-time stops a few steps early otherwise drops out of the
    table's last row, yet its WSD decay followed the clock, so its final evaluation is where its recipe ends: the row
    compares what each arm reaches in its budget. Its first cell names the steps (or tokens) the runs ended at."""
    labels = list(arms)
    axis, by_label = comparison_axis(arms)
    base, curves = labels[0], [curve for label in labels for curve in by_label[label]]
    ends = {step for step, _ in (curve[-1] for curve in curves)}
    if ends == {common_steps(curves)[-1]}:
        return None
    unit = "steps" if axis == "step" else "tokens"
    row = {axis: f"end of run ({unit} {axis_cell(min(ends))}–{axis_cell(max(ends))})"}
    last = {label: [curve[-1][1] for curve in by_label[label]] for label in labels}
    for label in labels:
        row[label] = mean_std(last[label])
        if label != base:
            row[f"{label} - {base}"] = mean_std([v - b for v, b in zip(last[label], last[base])])
    return row


def axis_cell(value) -> str:
    """A table's first cell: a step, a token count (with thousands separators) or a label."""
    return f"{value:,}" if isinstance(value, int) and value >= 10_000 else str(value)


def format_table(rows: list[dict], seeds: int) -> str:
    axis, *keys = rows[0]
    lines = [f"| {axis} | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for row in rows:
        cells = (plus_minus(row[k], seeds, "+.4f" if " - " in k else ".4f") for k in keys)
        lines.append(f"| {axis_cell(row[axis])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(arms: dict, title: str, path: Path, key: str = "curves",
                ylabel: str = "validation loss (nats/char)") -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    axis, curves = comparison_axis(arms, key)
    end_label = "end of run: each run's last evaluation (mean)"
    for label, arm in arms.items():
        steps = common_steps(curves[label])[1:]  # skip step 0 (the untrained ~ln V) to keep the scale readable
        values = torch.tensor([[dict(curve)[step] for step in steps] for curve in curves[label]])
        mean = values.mean(0)
        line, = ax.plot(steps, mean, marker="o", label=f"{label} ({arm['params']:,} params)")
        if len(values) > 1:
            ax.fill_between(steps, values.min(0).values, values.max(0).values, alpha=0.2)
        ends = [curve[-1] for curve in curves[label]]
        if any(step != steps[-1] for step, _ in ends):  # runs the clock stopped elsewhere: their mean final evaluation
            ax.plot([steps[-1], statistics.fmean(s for s, _ in ends)], [mean[-1], statistics.fmean(v for _, v in ends)],
                    linestyle="--", marker="s", markevery=[1], color=line.get_color(), label=end_label)
            end_label = None  # one legend entry for every arm's
    ax.set_xlabel({"step": "step", "tokens": "training tokens"}[axis])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def figure_title(title: str, record: dict) -> str:
    """A plot's title: the experiment, then how it ran, wrapped to the figure's width (a CPU's name and flags are
    long enough to run off its edges)."""
    how = f"({record['preset']} preset, {record['seeds']} seed(s), {record['hardware']}, {record['date']})"
    return "\n".join([title, *textwrap.wrap(how, 80)])


def plot_record(name: str, title: str, record: dict, images_dir, **curves) -> None:
    """images_dir/<name>.png: the val-loss curves of an experiment's record (`curves`: plot_curves' key and ylabel
    for others), the same whether it was just run or read back from its results file."""
    plot_curves(record["arms"], figure_title(title, record), Path(images_dir) / f"{name}.png", **curves)


def experiment_record(name: str, args, model: GPTConfig, tc: TrainConfig, seeds: int, arms: dict, extra: dict) -> dict:
    device = pick_device(args.device)
    return {"experiment": name, "preset": args.preset, "seeds": seeds, "hardware": describe_hardware(device),
            "device": str(device), "date": datetime.now(timezone.utc).date().isoformat(), "torch": torch.__version__,
            "model_config": model.to_dict(), "train_config": tc.record(),
            "arms": {label: {"overrides": a["overrides"], "params": a["params"], "precision": a["precision"],
                             "compiled": a["compiled"], "tokens_per_step": a["tokens_per_step"],
                             "tokens_per_sec": mean_std(a["tokens_per_sec"]), "elapsed_s": mean_std(a["elapsed_s"]),
                             "best_val": mean_std(a["best_val"]), "curves": a["curves"]} for label, a in arms.items()},
            "table": summarise(arms), **extra}


def swap_parser(title: str, presets: tuple[str, ...] = AB_PRESETS) -> ArgumentParser:
    """build_parser's flags and --replot: what every A/B script takes."""
    parser = build_parser(title, presets)
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the figure from the results file an earlier run wrote (no training)")
    return parser


def run_swap(name: str, title: str, arms: dict[str, dict], argv=None, extra_fn=None,
             base: GPTConfig | None = None, presets: tuple[str, ...] = AB_PRESETS) -> dict:
    """The whole experiment: parse flags, then run_parsed. base: the model the arms change (default: the vanilla
    GPT); presets: the ones offered, the first the default."""
    return run_parsed(name, title, arms, swap_parser(title, presets).parse_args(argv), extra_fn, base)


def run_parsed(name: str, title: str, arms: dict[str, dict], args, extra_fn=None,
               base: GPTConfig | None = None) -> dict:
    """Train the arms, print the table, write JSON and plot (or, with --replot, only redraw the plot)."""
    if args.replot:
        return replot(name, title, args)
    model, tc, seeds = configs_from_args(args, base=base)
    started = time.perf_counter()
    results = run_arms(name, arms, model, tc, seeds, args.runs_dir, note=hours_on_cpu_note(args), resume=args.resume)
    extra = extra_fn(args, model, tc, seeds, results) if extra_fn else {}
    record = experiment_record(name, args, model, tc, seeds, results, extra)
    record["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(f"\n{title} — val loss, mean ± std over {seeds} seed(s), preset {args.preset}")
    print(format_table(record["table"] + list(filter(None, [end_of_run(record["arms"])])), seeds))
    for label, arm in record["arms"].items():
        tps, clock = arm["tokens_per_sec"], arm["elapsed_s"]
        print(f"{label}: {arm['params']:,} params, {plus_minus(tps, seeds, ',.0f')} training tokens/s, "
              f"{plus_minus(clock, seeds, ',.0f')} s a run")
    atomic_write_json(Path(args.results_dir) / f"{name}.json", record)
    plot_record(name, title, record, args.images_dir)
    print(f"wrote {Path(args.results_dir) / f'{name}.json'} and {Path(args.images_dir) / f'{name}.png'}")
    return record


def replot(name: str, title: str, args, **curves) -> dict:
    """images/<name>.png redrawn from results/<name>.json alone: the figure is a view of the file."""
    path = Path(args.results_dir) / f"{name}.json"
    if not path.exists():
        raise UserError(f"{path} does not exist: run the experiment without --replot first")
    try:
        record = json.loads(path.read_text())
        plot_record(name, title, record, args.images_dir, **curves)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a results file of {name} ({err!r}); rerun the experiment") from None
    print(f"redrew {Path(args.images_dir) / f'{name}.png'} from {path}")
    return record
