"""Adversarial inputs, tried as a careless or hostile user would, on tiny models: every case is one class of
problem with several inputs. For each case:
- a user error exits non-zero with exactly one `error:` line and no traceback, and prints nothing to stdout;
- a valid but odd input exits 0;
- every file that existed before in the folders involved is byte-identical afterwards (nothing lost or changed).
main() runs in this process (conftest.run_main), so a case costs milliseconds, not a Python start-up.
"""
import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoint import RunLock
from conftest import ROOT, TINY_FLAGS, assert_user_error, run_main, tiny_sizes, tiny_train_config
from model_modern import modern_config
from trainer import train

TRAIN = ROOT / "training" / "train.py"
TRAIN_MODERN = ROOT / "training" / "train_modern.py"
GENERATE = ROOT / "src" / "generate.py"
PUBLISH = ROOT / "publish.py"


def snapshot(*folders) -> dict:
    """Every file under the folders, with its bytes."""
    return {p: p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def check_untouched(before: dict) -> None:
    for path, data in before.items():
        assert path.exists(), f"{path} was deleted"
        assert path.read_bytes() == data, f"{path} was changed"


def user_error(script, *args, folders=(), needle: str = "", midway: bool = False):
    """Run a case that must be refused: one error line (naming `needle`), nothing changed, and nothing printed
    before it unless the error comes `midway` through the work (a divergence, a full disk)."""
    before = snapshot(*folders)
    result = run_main(script, *args)
    assert_user_error(result, *([needle] if needle else []))
    assert midway or result.stdout == "", f"printed before failing: {result.stdout[:200]!r}"
    check_untouched(before)
    return result


def valid(script, *args, folders=()):
    before = snapshot(*folders)
    result = run_main(script, *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    check_untouched(before)
    return result


@pytest.fixture(scope="module")
def text(tmp_path_factory, shakespeare):
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text(shakespeare[:30_000])
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, text):
    """A tiny trained modern run (best/, last/, history.json, summary.json)."""
    out = tmp_path_factory.mktemp("runs") / "modern"
    sizes = tiny_sizes()
    train(modern_config(**sizes), tiny_train_config(out, text, max_steps=10, eval_interval=5), log=lambda *_: None)
    return out


@pytest.fixture
def run_copy(run, tmp_path):
    """A private copy of the run, for cases that damage it."""
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


# ----------------------------------------------------------------------------- training flags

@pytest.mark.parametrize("flags, needle", [
    (["--seed", "1e20"], "--seed"), (["--seed", "99999999999999999999"], "--seed"), (["--seed", "-1"], "--seed"),
    (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "0"], "--lr"),
    (["--min-lr", "-5"], "--min-lr"), (["--schedule", "cosine", "--lr", "1e-3", "--min-lr", "1"], "--min-lr"),
    (["--grad-clip", "nan"], "--grad-clip"), (["--grad-clip", "-1"], "--grad-clip"),
    (["--max-time", "nan"], "--max-time"), (["--max-time", "-3"], "--max-time"),
    (["--weight-decay", "inf"], "--weight-decay"), (["--dropout", "nan"], "--dropout"), (["--dropout", "1"], "--dropout"),
    (["--n-layer", "0"], "--n-layer"), (["--n-layer", "2.5"], "--n-layer"), (["--block-size", "0"], "--block-size"),
    (["--block-size", "1000000000000"], "--block-size"), (["--n-embd", "30", "--n-head", "4"], "divisible"),
    (["--batch-size", "0"], "--batch-size"), (["--eval-iters", "-2"], "--eval-iters"), (["--sample-tokens", "-1"], "--sample"),
    (["--schedule", "linear"], "--schedule"), (["--dtype", "fp8"], "fp8"), (["--device", "tpu"], "tpu"),
    (["--device", "cuda:abc"], "cuda"), (["--tokenizer", "bpe:abc"], "bpe:abc"), (["--tokenizer", "bpe:10"], "256"),
    (["--tokenizer", "no-such-encoding"], "unknown tokenizer 'no-such-encoding'; choose char, bpe:"), (["--resume", "--overwrite"], "choose one"),
    (["--preset", "gpu-cluster"], "--preset"), (["--bogus-flag"], "--bogus-flag"), (["--max-steps"], "--max-steps"),
    (["--n-embd", "8192", "--n-layer", "1000", "--n-head", "8"], "GiB"),
])
def test_bad_training_flags_are_refused_before_anything_is_written(tmp_path, text, flags, needle):
    user_error(TRAIN, *TINY_FLAGS, "--data", text, "--out-dir", tmp_path / "run", *flags, folders=[tmp_path],
               needle=needle)
    assert not (tmp_path / "run").exists(), "a refused run left its folder behind"


@pytest.mark.parametrize("content, needle", [
    (None, "not found"), (b"", "too short"), (b"0123456789", "validation split has 1 tokens"),
    ("café, to be or not to be\n".encode("latin-1") * 50, "utf-8"), ("folder", "is a folder"),
])
def test_bad_data_files_name_the_problem_and_leave_no_run_folder(tmp_path, content, needle):
    data = tmp_path / "data.txt"
    if content == "folder":
        data.mkdir()
    elif content is not None:
        data.write_bytes(content)
    user_error(TRAIN, *TINY_FLAGS, "--data", data, "--out-dir", tmp_path / "run", folders=[tmp_path], needle=needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("data, needle", [("", "--data is empty"), (os.devnull, "is not a regular file")])
def test_data_paths_that_are_no_file_name_the_problem(tmp_path, data, needle):
    user_error(TRAIN, *TINY_FLAGS, "--data", data, "--out-dir", tmp_path / "run", folders=[tmp_path], needle=needle)
    assert not (tmp_path / "run").exists()


def test_a_run_refused_for_its_data_prints_its_error_alone_even_at_the_default_sizes(tmp_path, monkeypatch):
    """At the default sizes on a CPU a run announces that they take hours (presets.cpu_preset_note), but only once
    the trainer has accepted the data and the run folder: a refused run prints its one line and nothing before it."""
    import cli
    monkeypatch.setattr(cli, "pick_device", lambda requested: torch.device("cpu"))  # the note is for a CPU
    user_error(TRAIN, "--data", tmp_path / "missing.txt", "--out-dir", tmp_path / "run", folders=[tmp_path],
               needle="not found")


def test_a_runs_announcements_come_right_before_its_first_line(tmp_path, text):
    """What the flags' parsing decided (here: a preset's fp32 values) is printed once the run has passed its checks,
    just before the trainer's first line."""
    result = valid(TRAIN_MODERN, "--preset", "demo", "--dtype", "fp32", "--device", "cpu", "--n-embd", "32",
                   "--block-size", "16", "--batch-size", "4", "--max-steps", "2", "--eval-iters", "1",
                   "--sample-tokens", "0", "--data", text, "--out-dir", tmp_path / "run", folders=[])
    lines = result.stdout.splitlines()
    assert lines[0].startswith("--preset demo: it trains in fp32 here") and "fp32 values: n_layer=3" in lines[0]
    assert lines[1].startswith("modern model, ") and "| cpu (" in lines[1], lines[:2]


def test_an_empty_out_dir_is_refused_not_taken_as_the_working_folder(tmp_path, text, monkeypatch):
    working = tmp_path / "working"
    working.mkdir()
    monkeypatch.chdir(working)
    user_error(TRAIN, *TINY_FLAGS, "--data", text, "--out-dir", "", folders=[tmp_path], needle="--out-dir is empty")
    assert not any(working.iterdir()), "the run wrote into the working folder"


def test_data_without_the_sample_prompts_characters_still_finishes(tmp_path):
    data = tmp_path / "digits.txt"
    data.write_text("0123456789 \n" * 400)  # no 'R', 'O', 'M', 'E' or ':'
    result = valid(TRAIN, *TINY_FLAGS, "--data", data, "--out-dir", tmp_path / "run", "--max-steps", "4",
                   "--eval-interval", "2", "--sample-tokens", "20")
    assert "sample from" in result.stdout and "prompt '\\n'" in result.stdout


# ----------------------------------------------------------------------------- the run folder

def test_a_run_folder_is_never_replaced_without_resume_or_overwrite(run_copy, text):
    result = user_error(TRAIN_MODERN, *TINY_FLAGS, "--data", text, "--out-dir", run_copy, folders=[run_copy],
                        needle="--resume")
    assert "--overwrite" in result.stderr
    # --overwrite starts it over: a new run, best/ and last/ written by it alone
    valid(TRAIN_MODERN, *TINY_FLAGS, "--data", text, "--out-dir", run_copy, "--overwrite", "--max-steps", "2",
          "--eval-interval", "2")
    assert json.loads((run_copy / "summary.json").read_text())["steps"] == 2


def test_overwrite_never_deletes_what_tinyllm_did_not_write(tmp_path, text):
    folder = tmp_path / "mine"
    (folder / "best").mkdir(parents=True)
    (folder / "best" / "thesis.tex").write_text("three years of work")
    user_error(TRAIN, *TINY_FLAGS, "--data", text, "--out-dir", folder, "--overwrite", folders=[folder],
               needle="not written by tinyllm")


def test_a_second_run_into_the_same_folder_is_refused(run_copy, text):
    with RunLock(run_copy):
        user_error(TRAIN_MODERN, *TINY_FLAGS, "--data", text, "--out-dir", run_copy, "--resume", folders=[run_copy],
                   needle="another training run")


def test_recovery_and_generation_leave_a_users_files_alone(run, tmp_path, text):
    """A user's hidden files next to (and inside) a run: generation writes nothing anywhere, and training's
    crash recovery touches only the names its own writer creates."""
    import shutil
    home = tmp_path / "H"
    for name in ("notes", ".notes.old", ".build.tmp-c", ".best.old", ".x.tinyllm-tmp-12"):
        (home / name).mkdir(parents=True)
        (home / name / "keep.txt").write_text(name)
    (home / ".vimrc.old").write_text("set nu")
    shutil.copytree(run, home / "m")
    (home / "m" / ".last.old").mkdir()
    (home / "m" / ".draft.tmp").write_text("mine")
    listing = sorted(p.name for p in home.rglob("*"))
    valid(GENERATE, "--checkpoint", home / "m", "--tokens", "5", "--seed", "0", folders=[home])
    assert sorted(p.name for p in home.rglob("*")) == listing
    # a write that a kill interrupted leaves our own marked temp file: the next run's recovery removes it alone
    leftover = home / "m" / ".history.json.tinyllm-tmp-4242-0123abcd"
    leftover.write_text("{half")
    valid(TRAIN_MODERN, *TINY_FLAGS, "--data", text, "--out-dir", home / "m", "--resume", "--max-steps", "12",
          "--eval-interval", "2", folders=[home / "notes"])
    assert not leftover.exists()
    assert sorted(p.name for p in home.rglob("*")) == listing


# ----------------------------------------------------------------------------- divergence and full disks

def test_a_nan_evaluation_is_never_saved(run_copy, text):
    result = user_error(TRAIN_MODERN, *TINY_FLAGS, "--data", text, "--out-dir", run_copy, "--resume", "--lr", "1e30",
                        "--eval-interval", "1", "--max-steps", "20", folders=[run_copy], needle="diverged", midway=True)
    assert "(step 10) is intact" in result.stderr
    valid(TRAIN_MODERN, *TINY_FLAGS, "--data", text, "--out-dir", run_copy, "--resume", "--max-steps", "12",
          "--eval-interval", "2")  # the next resume at a sane lr goes on from the good state
    assert math.isfinite(json.loads((run_copy / "summary.json").read_text())["final_val_loss"])


@pytest.mark.parametrize("failing", ["train_state.pt", "model.safetensors"])
def test_a_full_disk_on_the_first_save_says_what_is_left(tmp_path, text, monkeypatch, failing):
    import checkpoint
    real = checkpoint.atomic_write_bytes

    def full(path, data):
        if path.name == failing:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full)
    result = user_error(TRAIN, *TINY_FLAGS, "--data", text, "--out-dir", tmp_path / "run", "--max-steps", "4",
                        "--eval-interval", "2", needle="No space left on device", midway=True)
    assert "no checkpoint had been written yet" in result.stderr and "--overwrite" in result.stderr
    assert not (tmp_path / "run").exists(), "nothing was saved, so no folder (nor temp file) is left"


# ----------------------------------------------------------------------------- generation

@pytest.mark.parametrize("flags, needle", [
    (["--temp", "nan"], "--temp"), (["--temp", "inf"], "--temp"), (["--temp", "-1"], "--temp"),
    (["--top_p", "nan"], "--top_p"), (["--top_p", "0"], "--top_p"), (["--top_k", "0"], "--top_k"),
    (["--tokens", "-1"], "--tokens"), (["--tokens", "100000000000"], "--tokens"), (["--seed", "-4"], "--seed"),
    (["--prompt", "ROMEO@#"], "not in the vocabulary"), (["--prompt", ""], "empty"),
    (["--device", "cuda"], "cuda"), (["--dtype", "fp8"], "fp8"), (["--engine", "warp"], "warp"),
])
def test_bad_generation_flags(run, flags, needle):
    user_error(GENERATE, "--checkpoint", run, *flags, folders=[run], needle=needle)


@pytest.mark.parametrize("flags", [
    ["--tokens", "0"], ["--temp", "0"], ["--top_k", "100000"], ["--top_p", "1"],
    ["--prompt", "ROMEO:\n" * 40],  # longer than the block
    ["--seed", "4294966000", "--tokens", "3"],
])
def test_odd_but_valid_generation_flags(run, flags):
    valid(GENERATE, "--checkpoint", run, "--tokens", "8", *flags, folders=[run])


def damage(folder, **model_fields):
    config = json.loads((folder / "config.json").read_text())
    config["model"].update(model_fields)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("edit, needle", [
    (lambda f: damage(f, n_layer=2.5), "n_layer"),
    (lambda f: damage(f, block_size=1e12), "block_size"),
    (lambda f: damage(f, block_size=10**12), "block_size"),
    (lambda f: damage(f, n_embd=-32), "n_embd"),
    (lambda f: damage(f, dropout=float("nan")), "dropout"),
    (lambda f: damage(f, norm="batchnorm"), "norm"),
    (lambda f: damage(f, surprise=1), "unknown"),
    (lambda f: damage(f, vocab_size=66), "do not match"),
    (lambda f: (f / "config.json").write_text("[1, 2, 3]"), "not a tinyllm checkpoint"),
    (lambda f: (f / "config.json").write_text((f / "config.json").read_text().replace('"chars": "', '"chars": 5, "x": "')),
     "chars"),
    (lambda f: (f / "config.json").write_bytes(b"\xff\xfe garbage"), "corrupt"),
    (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 10), "corrupt"),
    (lambda f: save_file({k: v.fill_(float("nan")) for k, v in load_file(f / "model.safetensors").items()},
                         f / "model.safetensors"), "NaN"),
])
def test_damaged_checkpoints_are_one_line_errors(run_copy, edit, needle):
    edit(run_copy / "best")
    user_error(GENERATE, "--checkpoint", run_copy / "best", "--tokens", "4", folders=[run_copy], needle=needle)


def test_a_checkpoint_path_that_is_a_file(run):
    user_error(GENERATE, "--checkpoint", run / "best" / "config.json", folders=[run], needle="is a file")


@pytest.mark.parametrize("state, needle", [
    ({}, "damaged"), ({"step": "ten"}, "step"), ({"best_step": 99}, "best_step"), ({"torch_rng": []}, "torch_rng"),
    ({"timed_s": float("nan")}, "timed_s"), ({"timed_tokens": -5}, "timed_tokens"), ([1, 2], "list"),
])
def test_damaged_training_states_are_one_line_errors(run_copy, text, state, needle):
    full = torch.load(run_copy / "last" / "train_state.pt", weights_only=True)
    if isinstance(state, dict) and state:
        full.update(state)
        state = full
    torch.save(state, run_copy / "last" / "train_state.pt")
    user_error(TRAIN_MODERN, *TINY_FLAGS, "--data", text, "--out-dir", run_copy, "--resume", folders=[run_copy],
               needle=needle)


# ----------------------------------------------------------------------------- publishing

@pytest.mark.parametrize("repo_id", ["../etc", "me/a b", "me/x\nlicense: evil", "me", "a/b/c", "me/-x"])
def test_publish_refuses_repo_ids_the_hub_would_refuse(run, tmp_path, repo_id):
    user_error(PUBLISH, "--checkpoint", run, "--repo-id", repo_id, "--dry-run", "--out", tmp_path / "P",
               folders=[run], needle=f"--repo-id {repo_id!r} is not")
    assert not (tmp_path / "P").exists()


def test_publish_never_replaces_a_folder_it_did_not_build(run, tmp_path):
    user_folder = tmp_path / "P"
    user_folder.mkdir()
    (user_folder / "config.json").write_text("x")
    (user_folder / "thesis.tex").write_text("y")
    for out in (user_folder, run / "best", run):
        user_error(PUBLISH, "--checkpoint", run, "--repo-id", "me/x", "--dry-run", "--out", out,
                   folders=[user_folder, run], needle="publish.py did not write")
    # an earlier export of its own is replaced
    valid(PUBLISH, "--checkpoint", run, "--repo-id", "me/x", "--dry-run", "--out", tmp_path / "E", folders=[run])
    valid(PUBLISH, "--checkpoint", run, "--repo-id", "me/x", "--dry-run", "--out", tmp_path / "E", folders=[run])
    assert not [p for p in tmp_path.iterdir() if ".tinyllm-tmp-" in p.name]


# ----------------------------------------------------------------------------- the other scripts

@pytest.mark.parametrize("script, flags, needle", [
    ("training/benchmark.py", ["--repeats", "0"], "--repeats"),
    ("training/benchmark.py", ["--dtypes", "fp8"], "fp8"),
    ("training/benchmark.py", ["--decode", "int4"], "int4"),
    ("training/benchmark.py", ["--decode", "bf16+c"], "the C step runs fp32 or int8"),
    ("training/benchmark.py", ["--nanogpt", "/nonexistent/nanoGPT"], "model.py"),
    ("training/benchmark.py", ["--memory-batch", "-1"], "--memory-batch"),
    ("training/benchmark.py", ["--gen-tokens", "0"], "--gen-tokens"),  # was taken as unset: the default ran
    ("training/benchmark.py", ["--gen-tokens", "99999999999"], "--gen-tokens"),  # was an 800 GB allocation
    ("training/benchmark.py", ["--batches", "1", "99999999999"], "--batches"),
    ("training/benchmark.py", ["--sample-tokens", "-1"], "--sample-tokens"),  # was a traceback after the timings
    ("experiments/swap1_rmsnorm.py", ["--seeds", "0"], "--seeds"),
    ("experiments/swap1_rmsnorm.py", ["--preset", "huge"], "--preset"),
    ("experiments/swap4_kvcache.py", ["--repeats", "0"], "--repeats"),
    ("experiments/swap4_kvcache.py", ["--lengths", "64", "99999999999"], "--lengths"),  # was an 800 GB allocation
    ("experiments/swap4_kvcache.py", ["--batches", "99999999999"], "--batches"),
    ("experiments/report.py", ["--collect", "/nonexistent/run"], "summary.json"),
    ("experiments/visualize.py", ["sideways"], "sideways"),
    ("experiments/ab.py", ["../x", "--arm", "a:", "--arm", "b:lr=1"], "experiment name '../x'"),
    ("experiments/ab.py", ["x", "--arm", "", "--arm", "b:lr=1"], "names no arm"),
    ("experiments/ab.py", ["x", "--arm", "a:", "--arm", "b:lr=-1"], "arm 'b': --lr must be greater than 0"),
    ("experiments/ab.py", ["x", "--arm", "a:", "--arm", "b:n_layer=1.5"], "n_layer needs an integer, got '1.5'"),
    ("colab/train_colab.py", ["--phases", "everything"], "--phases"),
])
def test_other_scripts_refuse_bad_flags_in_one_line(tmp_path, script, flags, needle):
    user_error(ROOT / script, *flags, folders=[ROOT / "results", ROOT / "images"], needle=needle)



@pytest.mark.parametrize("script, flag", [
    ("experiments/swap1_rmsnorm.py", "--results-dir"), ("experiments/swap1_rmsnorm.py", "--images-dir"),
    ("experiments/swap1_rmsnorm.py", "--runs-dir"), ("experiments/swap4_kvcache.py", "--results-dir"),
    ("experiments/visualize.py", "--images-dir"), ("experiments/recipe_search.py", "--runs-dir"),
    ("experiments/llama_cpp_check.py", "--results-dir"), ("training/benchmark.py", "--results-dir"),
])
def test_output_folders_are_checked_before_any_work(tmp_path, script, flag):
    """A folder that cannot be written fails when the flags are read (it used to end a finished experiment in a
    traceback), and an empty one is refused rather than taken as the working folder."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    user_error(ROOT / script, flag, str(a_file / "results"), folders=[tmp_path], needle=f"{a_file} is a file")
    user_error(ROOT / script, flag, "", folders=[tmp_path], needle=f"{flag}: is empty")


@pytest.mark.parametrize("script, name, flags", [
    ("training/benchmark.py", "benchmark_mine.json", ["--replot"]),
    ("experiments/swap1_rmsnorm.py", "swap1_rmsnorm.json", ["--replot"]),
    ("experiments/recipe_search.py", "recipe_120s.json", ["--steps", "demo-fit"]),
])
@pytest.mark.parametrize("damage", ["{bad", '{"rows": 1, "models": 2}'])
def test_a_damaged_results_file_is_named_before_any_work(tmp_path, script, name, flags, damage):
    """A results file a script reads back (to redraw it, or to add a row), hand-edited or left with merge markers:
    one line naming it, before anything trains."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / name).write_text(damage)
    extra = ["--images-dir", tmp_path / "i"] if "recipe" not in script else ["--runs-dir", tmp_path / "runs"]
    user_error(ROOT / script, *flags, "--results-dir", tmp_path / "r", *extra, folders=[tmp_path], needle=name)


def test_the_bpe_scripts_tokenizer_comparison_waits_for_the_runs_checks(run, text):
    """train_bpe.py prints how the two tokenizers cut a line before training: not before a refusal."""
    user_error(ROOT / "training" / "train_bpe.py", *TINY_FLAGS, "--tokenizer", "bpe:300", "--data", text,
               "--out-dir", run, folders=[run], needle="--overwrite")
