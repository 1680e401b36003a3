"""The all-in-one Colab script at a tiny size: every phase runs, and after a kill it skips what finished (with the
settings asked for) and resumes the rest."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, load_script
from device import hardware_tag

# the sizes of conftest.tiny_model_config: the benchmark phase's compiled step is then test_benchmark.py's, which
# the inductor's cache holds by now (a cold compile costs tens of seconds)
TRAIN_ARGS = ("--n-layer 2 --n-head 4 --n-embd 32 --block-size 16 --dropout 0 --batch-size 4 --eval-iters 2 "
              "--eval-interval 5 --max-steps 80 --sample-tokens 0 --dtype fp32 --grad-accum 1")


def colab(tmp_path, small_text, *phases):
    bench = f"--size checkpoint --repeats 1 --gen-tokens 4 --sample-tokens 5 --train-batch 2 --decode --no-components --data {small_text}"
    return [sys.executable, str(ROOT / "colab" / "train_colab.py"), "--preset", "cpu", "--out-dir", str(tmp_path / "drive"),
            "--device", "cpu", "--train-args", f"{TRAIN_ARGS} --data {small_text}", "--benchmark-args", bench,
            "--phases", *phases]


def test_all_phases_run_and_a_killed_run_resumes(tmp_path, small_text):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    drive = tmp_path / "drive"
    # run the vanilla phase, start the modern one and kill it (with its training process) once it has written a
    # checkpoint, as a Colab disconnect kills the whole runtime
    proc = subprocess.Popen(colab(tmp_path, small_text, "vanilla", "modern"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600  # a guard against a hang only: a busy machine may take its time
    last = drive / "checkpoints" / "modern" / "last" / "config.json"
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (drive / "checkpoints" / "modern" / "summary.json").exists(), "the run finished before the kill"
    killed_at = json.loads(last.read_text())["step"]

    again = subprocess.run(colab(tmp_path, small_text, "vanilla", "modern", "bpe", "benchmarks", "figures"), env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    out = again.stdout
    assert "[vanilla] done already" in out and "[modern] resuming" in out and "[bpe] starting" in out
    assert f"resumed from {drive / 'checkpoints' / 'modern' / 'last'} at step {killed_at}" in out
    benchmark = f"benchmark_quick_{hardware_tag(torch.device('cpu'))}"  # named by the class of this machine
    for name in ("train_vanilla", "train_modern", "train_bpe", benchmark, "losses", "attention"):
        assert (drive / "results" / f"{name}.json").exists(), name
    assert json.loads((drive / "results" / "train_modern.json").read_text())["steps"] == 80
    assert (drive / "images" / "losses.png").exists() and (drive / "images" / f"{benchmark}.png").exists()
    assert "device: cpu (" in out and "; training dtype: " in out and " (auto: this CPU has " in out

    # a finished phase of other settings (a shortened first try) is not skipped as if it were the run asked for
    from common import UserError
    colab_script = load_script(ROOT / "colab" / "train_colab.py")
    longer = colab(tmp_path, small_text, "vanilla")[2:]
    longer[longer.index("--train-args") + 1] += " --max-steps 120 --n-layer 3"
    finished = (drive / "checkpoints" / "vanilla" / "summary.json").read_bytes()
    with pytest.raises(UserError, match=r"^\[vanilla\] .*vanilla holds a finished run of other settings \(n_layer: 2 -> 3, "
                                        r"max_steps: 80 -> 120\); run with the settings it had, or move that folder"):
        colab_script.main(longer)
    assert (drive / "checkpoints" / "vanilla" / "summary.json").read_bytes() == finished


def test_outside_colab_without_google_installed_the_repo_is_the_storage(monkeypatch):
    """find_spec("google.colab") imports `google` first, and raised where no google package is installed: the
    documented local run (no --out-dir) died of a ModuleNotFoundError there."""
    from common import REPO_ROOT, UserError
    colab_script = load_script(ROOT / "colab" / "train_colab.py")
    monkeypatch.setitem(sys.modules, "google", None)  # `import google` now fails, as where it is not installed
    assert colab_script.in_colab() is False and colab_script.storage_root(None) == REPO_ROOT
    with pytest.raises(UserError, match="--out-dir: is empty"):
        colab_script.build_parser().parse_args(["--out-dir", ""])


def test_in_colab_a_mounted_drive_is_used_and_an_unmounted_one_is_a_one_line_error(tmp_path, monkeypatch):
    """Mounting needs the notebook's kernel (its authorisation dialog): from `!python` it fails, so the script
    uses the Drive the notebook mounted and, where there is none, says to mount it in a cell."""
    import types
    from common import UserError
    colab_script = load_script(ROOT / "colab" / "train_colab.py")
    monkeypatch.setattr(colab_script, "in_colab", lambda: True)
    monkeypatch.setattr(colab_script, "DRIVE_DIR", tmp_path / "drive" / "MyDrive" / "tinyllm")
    calls = []

    def mount_without_a_kernel(mountpoint):
        calls.append(mountpoint)
        raise AttributeError("'NoneType' object has no attribute 'kernel'")

    google = types.ModuleType("google")
    google.colab = types.ModuleType("google.colab")
    google.colab.drive = types.SimpleNamespace(mount=mount_without_a_kernel)
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google.colab)
    with pytest.raises(UserError, match=r"^Google Drive is not mounted \(AttributeError: .*\); run `from google.colab "
                                        r"import drive; drive.mount\('/content/drive'\)` in a notebook cell first"):
        colab_script.storage_root(None)
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)  # the notebook's cell mounted it
    assert colab_script.storage_root(None) == tmp_path / "drive" / "MyDrive" / "tinyllm" and len(calls) == 1


@pytest.mark.parametrize("preset, written", [(None, "train_vanilla-reference.json"), ("cpu", "train_vanilla.json")])
def test_a_reference_size_phase_does_not_write_over_the_cpu_preset_record(tmp_path, monkeypatch, preset, written):
    """results/train_vanilla.json is the committed record of the CPU preset: a Colab run at the reference sizes,
    copied into the repo, must land beside it, under the name a local GPU run of that config writes."""
    import types
    colab_script = load_script(ROOT / "colab" / "train_colab.py")
    run_dir = tmp_path / "checkpoints" / "vanilla"

    def finished_run(phase, script, argv):  # what the training script leaves behind: a finished run
        assert ("--preset" in argv) == (preset is not None) and argv[argv.index("--out-dir") + 1] == str(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text('{"steps": 7}')
        (run_dir / "history.json").write_text('{"evals": []}')

    monkeypatch.setattr(colab_script, "run_script", finished_run)
    model = types.SimpleNamespace(tokenizer=None)  # the sample is not what this test is about
    monkeypatch.setattr("cli.load_model", lambda folder: (model, None))
    monkeypatch.setattr("cli.sample_prompt", lambda tokenizer: "ROMEO:")
    monkeypatch.setattr("cli.generate_text", lambda *args, **kwargs: "ROMEO: hi")
    args = colab_script.build_parser().parse_args(["--device", "cpu"] + (["--preset", preset] if preset else []))
    colab_script.run_training_phase("vanilla", tmp_path, args)
    assert [p.name for p in (tmp_path / "results").iterdir()] == [written]
    assert json.loads((tmp_path / "results" / written).read_text())["steps"] == 7


def test_every_command_of_the_notebook_names_a_script_and_flags_that_exist():
    """colab/tinyllm.ipynb is not run by CI: a renamed script or flag would break it only on Colab. Each `!python`
    line's script must exist and its flags must parse with that script's own parser; the folder the cells %cd into
    is the one the clone cell clones to."""
    import shlex
    notebook = json.loads((ROOT / "colab" / "tinyllm.ipynb").read_text())
    lines = [line.strip() for cell in notebook["cells"] if cell["cell_type"] == "code" for line in cell["source"]]
    commands = [shlex.split(line[1:]) for line in lines if line.startswith("!python")]
    assert len(commands) >= 2
    for command in commands:
        script = next(arg for arg in command[1:] if arg.endswith(".py"))
        args = command[command.index(script) + 1:]
        load_script(ROOT / script).build_parser().parse_args(args)  # a bad flag raises UserError
    clone = next(line for line in lines if "git clone" in line)
    assert any(line == f"%cd {clone.split()[-1]}" for line in lines)


def test_a_finished_phase_of_another_text_is_not_skipped_and_a_missing_text_is_named(tmp_path):
    """The skip check compares the text a finished phase recorded (data_text) with the file it would read now: an
    edited file at the same path is a difference; a missing one is the data's own error, not "summary.json is
    unreadable"."""
    from cli import RUN_DEFAULTS, parse_training_args
    from common import UserError
    from data import describe_text
    from presets import PRESETS
    colab_script = load_script(ROOT / "colab" / "train_colab.py")
    data = tmp_path / "text.txt"
    data.write_text("ROMEO: a text of its own\n" * 50)
    argv = ["--data", str(data), "--n-layer", "2", "--max-steps", "10"]
    model, train = parse_training_args(argv, "vanilla", *RUN_DEFAULTS["vanilla"], tuple(PRESETS), announce=None)
    run = tmp_path / "vanilla"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"model_config": model.to_dict(), "train_config": train.record(),
                                                  "data_text": describe_text(data.read_text())}))
    assert colab_script.differences_from(run, "vanilla", argv) == ""
    data.write_text("JULIET: edited since\n" * 50)
    assert colab_script.differences_from(run, "vanilla", argv).startswith("training text: other content at ")
    data.unlink()
    with pytest.raises(UserError, match=r"^data file .*text.txt not found"):
        colab_script.differences_from(run, "vanilla", argv)
