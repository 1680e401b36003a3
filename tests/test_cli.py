"""The scripts as a user runs them: bad input gives one clear line, a non-zero exit, no traceback,
and nothing is overwritten. Most bad-input cases run main() in-process (run_main); a few start a real Python."""
import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from common import UserError
from conftest import (ROOT, TINY_FLAGS, assert_user_error, load_script, run_main, run_script, tiny_model_config,
                      tiny_train_config)

TRAIN = ROOT / "training" / "train.py"
TRAIN_MODERN = ROOT / "training" / "train_modern.py"
GENERATE = ROOT / "src" / "generate.py"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny modern run trained through the real script: checkpoint folder for the generate tests."""
    out = tmp_path_factory.mktemp("runs") / "modern"
    data = tmp_path_factory.mktemp("data") / "small.txt"
    data.write_text((ROOT / "data" / "input.txt").read_text()[:30_000])
    result = run_script(TRAIN_MODERN, *TINY_FLAGS, "--max-steps", "20", "--eval-interval", "10",
                        "--data", data, "--out-dir", out, "--sample-tokens", "50")
    assert result.returncode == 0, result.stderr
    assert "sample from" in result.stdout
    return out, data


def test_training_script_writes_the_checkpoint_layout(tiny_run):
    out, _ = tiny_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["architecture"] == "modern" and summary["steps"] == 20
    assert (out / "best" / "model.safetensors").exists() and (out / "last" / "train_state.pt").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--max-steps", "-1"], "--max-steps"),
    (["--n-embd", "30", "--n-head", "4"], "divisible"),
    (["--lr", "-1"], "--lr"),
    (["--dtype", "fp16"], "fp16"),
    (["--device", "cuda"], "cuda"),
])
def test_bad_training_flags(tmp_path, small_text, flags, needle):
    result = run_main(TRAIN, *TINY_FLAGS, "--data", small_text, "--out-dir", tmp_path / "run", *flags)
    assert_user_error(result, needle)
    assert not (tmp_path / "run" / "last").exists()


def test_bad_data_files(tmp_path):
    (tmp_path / "short.txt").write_text("too short")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("to be or not to be, café\n".encode("latin-1") * 50)
    for name, needle in [("missing.txt", "not found"), ("short.txt", "too short"), ("empty.txt", "too short"),
                         ("latin1.txt", "utf-8")]:
        result = run_main(TRAIN, *TINY_FLAGS, "--data", tmp_path / name, "--out-dir", tmp_path / "run")
        assert_user_error(result, needle)


def test_resume_without_checkpoint_and_with_another_config(tmp_path, tiny_run):
    out, data = tiny_run
    result = run_main(TRAIN, *TINY_FLAGS, "--data", data, "--out-dir", tmp_path / "none", "--resume")
    assert_user_error(result, "no checkpoint")
    before = (out / "last" / "model.safetensors").read_bytes()
    result = run_main(TRAIN_MODERN, *TINY_FLAGS, "--n-embd", "64", "--data", data, "--out-dir", out, "--resume")
    assert_user_error(result, "does not match")
    result = run_main(TRAIN_MODERN, *TINY_FLAGS, "--block-size", "32", "--data", data, "--out-dir", out, "--resume")
    assert_user_error(result, "block_size")
    assert (out / "last" / "model.safetensors").read_bytes() == before


def test_unwritable_out_dir(tmp_path, small_text):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_script(TRAIN, *TINY_FLAGS, "--data", small_text, "--out-dir", blocker / "run")
    assert_user_error(result, "cannot write")


def test_generate_streams_text_from_a_checkpoint(tiny_run):
    out, _ = tiny_run
    result = run_script(GENERATE, "--checkpoint", out, "--prompt", "ROMEO:", "--tokens", "40", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:") and len(result.stdout.rstrip("\n")) == len("ROMEO:") + 40
    again = run_script(GENERATE, "--checkpoint", out, "--prompt", "ROMEO:", "--tokens", "40", "--seed", "1", "--no-cache")
    assert again.stdout == result.stdout
    # the names transformers' generate() uses are aliases of --tokens and --temp
    aliases = run_script(GENERATE, "--checkpoint", out, "--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", "1",
                         "--temperature", "0.8")
    assert aliases.stdout == result.stdout


def test_generating_never_imports_the_compiler(tiny_run):
    """Loading a checkpoint and generating from it need nothing of torch.compile, whose torch._dynamo takes seconds
    to import: counting the parameters on the meta device used to import it (checkpoint.SkipInit, RotaryEmbedding)."""
    out, _ = tiny_run
    result = run_script("-X", "importtime", GENERATE, "--checkpoint", out, "--tokens", "5", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "| torch._dynamo" not in result.stderr


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_low_precision_weights_generate_almost_the_same_distribution(tiny_run, dtype):
    """--dtype bf16 halves the bytes read per token, int8 quarters them; the next-token distribution of the
    trained checkpoint must stay close to fp32's."""
    import torch
    from checkpoint import load_model
    from engine import prepare_weights
    out, _ = tiny_run
    model, _ = load_model(out)
    idx = torch.tensor([model.tokenizer.encode("ROMEO:\nWhat say")])
    full = torch.log_softmax(model(idx)[0].float(), -1)
    low_model = prepare_weights(model, dtype, torch.device("cpu"))
    assert next(low_model.parameters()).dtype == torch.bfloat16
    assert low_model.lm_head.weight is low_model.tok_emb.weight
    low = torch.log_softmax(low_model(idx)[0].float(), -1)
    assert 0 < (full.exp() - low.exp()).abs().max() < 0.02
    result = run_script(GENERATE, "--checkpoint", out, "--prompt", "ROMEO:", "--tokens", "20", "--dtype", dtype)
    assert result.returncode == 0 and result.stdout.startswith("ROMEO:"), result.stderr


def test_generate_demo_with_a_checkpoint(tiny_run):
    out, _ = tiny_run
    result = run_script(GENERATE, "--demo", "--checkpoint", out, "--seed", "0")
    assert result.returncode == 0, result.stderr
    texts = dict(section.split(" ===\n", 1) for section in result.stdout.split("=== ")[1:])
    assert list(texts) == [label for label, *_ in load_script(GENERATE).DEMO_SETTINGS]
    assert all(text.startswith("ROMEO:") for text in texts.values())
    assert len(set(texts.values())) == len(texts), "every setting samples text of its own from the same seed"


@pytest.mark.parametrize("flags, needle", [
    (["--prompt", "ROMEO@#"], "not in the vocabulary"),
    (["--temp", "-1"], "--temp"),
    (["--top_k", "0"], "--top_k"),
    (["--top_p", "0"], "--top_p"),
    (["--top_p", "1.5"], "--top_p"),
    (["--tokens", "-5"], "--tokens"),
    (["--dtype", "fp16", "--device", "cpu"], "fp16"),
    (["--engine", "c", "--dtype", "bf16"], "fp32 or int8"),
    (["--engine", "c", "--dtype", "int8", "--no-cache"], "--no-cache"),
])
def test_generate_rejects_bad_arguments(tiny_run, flags, needle):
    out, _ = tiny_run
    assert_user_error(run_main(GENERATE, "--checkpoint", out, *flags), needle)


def test_generate_with_missing_or_corrupt_checkpoints(tmp_path, tiny_run):
    out, _ = tiny_run
    assert_user_error(run_script(GENERATE, "--checkpoint", tmp_path / "nothing-here"), "not found")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((out / "best" / "config.json").read_text())
    data = (out / "best" / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_user_error(run_main(GENERATE, "--checkpoint", broken), "truncated")
    (broken / "config.json").write_text("{not json")
    assert_user_error(run_main(GENERATE, "--checkpoint", broken), "corrupt")
    other = json.loads((out / "best" / "config.json").read_text())
    other["model"]["n_embd"] = 64
    (broken / "config.json").write_text(json.dumps(other))
    (broken / "model.safetensors").write_bytes(data)
    assert_user_error(run_main(GENERATE, "--checkpoint", broken), "do not match")


def test_the_default_run_folder_is_in_the_repo_wherever_the_script_starts(tmp_path, monkeypatch):
    from cli import parse_training_args
    from model import GPTConfig
    from trainer import TrainConfig
    monkeypatch.chdir(tmp_path)
    _, tc = parse_training_args([], "x", GPTConfig(), TrainConfig(out_dir="checkpoints/vanilla"))
    assert tc.out_dir == str(ROOT / "checkpoints" / "vanilla")
    _, tc = parse_training_args(["--out-dir", "mine"], "x", GPTConfig(), TrainConfig(out_dir="checkpoints/vanilla"))
    assert tc.out_dir == "mine"  # an explicit folder is the user's, relative to where they are
    assert tc.record()["out_dir"] == ".../mine"  # and records never hold a machine's folders


def test_compile_flag_alone_means_on_and_its_default_is_auto():
    from cli import parse_training_args
    from model import GPTConfig
    from trainer import TrainConfig
    parsed = {tuple(argv): parse_training_args(argv, "x", GPTConfig(), TrainConfig())[1].compile
              for argv in ([], ["--compile"], ["--compile", "off"])}
    assert parsed == {(): "auto", ("--compile",): "on", ("--compile", "off"): "off"}


def test_a_preset_takes_its_fp32_values_only_where_the_run_trains_in_fp32_on_a_cpu(capsys, monkeypatch, tmp_path):
    """--preset cpu/demo name a smaller model for an fp32 run on a CPU (fewer steps fit their wall-clock budget
    there); the precision and the device decide, explicit flags still win, and the run says why its model is not
    the preset's own."""
    import cli
    from cli import RUN_DEFAULTS, parse_training_args
    from presets import PRESETS
    for preset in ("cpu", "demo"):
        own, fp32 = PRESETS[preset].values, PRESETS[preset].fp32_values
        assert fp32 and all(own[k] != v for k, v in fp32.items())  # each fp32 value differs from the preset's own

        def n_layer(*flags):
            return parse_training_args(["--preset", preset, "--device", "cpu", *flags], "x",
                                       *RUN_DEFAULTS["modern"], presets=(preset,))[0].n_layer
        assert n_layer("--dtype", "bf16") == own["n_layer"]
        assert capsys.readouterr().out == ""
        assert n_layer("--dtype", "fp32") == fp32["n_layer"]
        assert capsys.readouterr().out.startswith(f"--preset {preset}: it trains in fp32 here (--dtype fp32 asked "
                                                  f"for), so with its fp32 values: n_layer={fp32['n_layer']}")
        assert n_layer("--dtype", "fp32", "--n-layer", "5") == 5
        assert capsys.readouterr().out == ""  # nothing of the fp32 values is left to announce
        with monkeypatch.context() as patch:  # MPS trains in fp32 too, at a speed nobody measured
            patch.setattr(cli, "pick_device", lambda requested: torch.device("mps"))
            assert n_layer("--dtype", "fp32") == own["n_layer"]
    # a resumed run keeps the model it began with: here begun in fp32 (3 layers), resumed where auto picks bf16
    from checkpoint import CONFIG
    monkeypatch.setattr(cli, "pick_device", lambda requested: torch.device("cpu"))
    began = tmp_path / "demo" / "last"
    began.mkdir(parents=True)
    (began / CONFIG).write_text(json.dumps({"model": {}, "device": "cpu", "dtype": "fp32"}))
    resumed = parse_training_args(["--preset", "demo", "--dtype", "bf16", "--out-dir", str(tmp_path / "demo"),
                                   "--resume"], "x", *RUN_DEFAULTS["modern"], presets=("demo",))[0]
    assert resumed.n_layer == PRESETS["demo"].fp32_values["n_layer"]
    assert "--preset demo: the run being resumed began in fp32 on a CPU, so with its fp32 values" in capsys.readouterr().out
    # an A/B experiment's arms share the preset's own model, whatever their precision (swap7: fp32 vs bf16)
    from abtest import build_parser, configs_from_args
    from model import GPTConfig
    args = build_parser("x", ("cpu",)).parse_args(["--preset", "cpu", "--device", "cpu"])
    assert configs_from_args(args, base=GPTConfig.named("modern"))[0].n_layer == PRESETS["cpu"].values["n_layer"]


def test_help_shows_defaults():
    result = run_main(TRAIN, "--help")
    assert result.returncode == 0 and "(default: 5000)" in result.stdout and "presets:" in result.stdout
    assert "(default: None)" not in result.stdout  # --data: its text says what happens without it
    colab = run_main(ROOT / "colab" / "train_colab.py", "--help")  # an empty default is no default to show
    assert colab.returncode == 0 and "(default: )" not in colab.stdout and "(default: auto)" in colab.stdout
    check = " ".join(run_main(ROOT / "experiments" / "llama_cpp_check.py", "--help").stdout.split())
    assert "(default: 'ROMEO:\\n')" in check  # a newline in a default is shown as one, not as a line break
    tokenizers = " ".join(run_main(ROOT / "experiments" / "compare_tokenizers.py", "--help").stdout.split())
    assert "seeds per arm (default: 1)" in tokenizers  # one seed at every preset: no "1 ... 1 for the others"


@pytest.mark.parametrize("script", ["training/benchmark.py", "experiments/swap4_kvcache.py", "publish.py"])
def test_help_shows_default_paths_relative_to_the_repo(script):
    """Defaults anchored at the repo (so a script finds checkpoints/ from any folder) are shown as repo paths in
    --help, not as the folders of the machine it runs on."""
    result = run_main(ROOT / script, "--help")
    help_text = " ".join(result.stdout.split())  # argparse wraps lines
    assert result.returncode == 0 and str(ROOT) not in help_text
    assert "in the repo)" in help_text


def test_the_default_run_folder_in_help_is_the_repos_from_any_working_folder(monkeypatch):
    """Started from training/, train_modern.py trains into checkpoints/modern of the repo, but --help said
    training/checkpoints/modern: the default was shown relative to the working folder."""
    monkeypatch.chdir(ROOT / "training")
    help_text = " ".join(run_main(TRAIN_MODERN, "--help").stdout.split())
    assert "(default: checkpoints/modern)" in help_text and "training/checkpoints" not in help_text


def test_without_any_checkpoint_generate_points_to_the_demo(tmp_path, monkeypatch):
    generate = load_script(GENERATE)
    monkeypatch.setattr(generate, "CHECKPOINTS", tmp_path / "checkpoints")
    with pytest.raises(UserError, match=r"^no checkpoint found in checkpoints/; run python src/generate.py --demo"):
        generate.main(["--device", "cpu"])
    assert not (tmp_path / "checkpoints").exists()  # nothing trained, nothing written


@pytest.fixture
def tiny_demo(tmp_path, small_text, monkeypatch):
    """generate.py with checkpoints/ in tmp_path and a demo preset that trains in a second."""
    import presets
    generate = load_script(GENERATE)
    monkeypatch.setattr(generate, "CHECKPOINTS", tmp_path / "checkpoints")
    for key, value in dict(n_layer=1, n_embd=16, n_head=2, block_size=16, max_steps=6, eval_interval=3,
                           eval_iters=1, batch_size=4, data=str(small_text)).items():
        monkeypatch.setitem(presets.PRESETS["demo"].values, key, value)
    demo = dataclasses.replace(presets.PRESETS["demo"], fp32_values={})  # the same tiny model on every CPU
    monkeypatch.setitem(presets.PRESETS, "demo", demo)
    return generate


def test_demo_on_a_fresh_clone_trains_a_model_first(tiny_demo, tmp_path, capsys, monkeypatch):
    import common
    monkeypatch.setattr(common, "REPO_ROOT", tmp_path)  # the clone
    tiny_demo.main(["--demo", "--seed", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "No checkpoint found: training" in out and "--preset demo" in out
    assert "\ncheckpoint: checkpoints/demo (modern, " in out  # where in the clone, not the machine's folders
    assert out.count("=== temperature") == 5
    assert (tmp_path / "checkpoints" / "demo" / "best" / "model.safetensors").exists()


def test_the_first_demo_says_what_its_training_took_on_this_kind_of_machine(tmp_path, monkeypatch):
    """The first-run message quoted results/train_demo.json, an AVX512_BF16 EPYC's run, on every machine, though the
    repo holds the demo's record of other kinds of machine too (train_demo-cpu-amx.json, ...)."""
    generate = load_script(GENERATE)
    monkeypatch.setattr(generate, "RESULTS", tmp_path)
    monkeypatch.setattr(generate, "hardware_tag", lambda _device: "cpu-amx")
    cpu = torch.device("cpu")
    assert generate.demo_expectation(cpu) == "it stops after 120 s of wall clock on any machine"  # no record at all
    record = {"elapsed_s": 93.0, "best_val_loss": 1.5683, "train_config": {"max_time": 120.0}}
    (tmp_path / "train_demo.json").write_text(json.dumps({**record, "hardware": "an EPYC"}))
    assert generate.demo_expectation(cpu).startswith("on an EPYC it took 93 s and reached val loss 1.57")
    (tmp_path / "train_demo-cpu-amx.json").write_text(json.dumps({**record, "hardware": "a Xeon", "elapsed_s": 120.0}))
    assert generate.demo_expectation(cpu) == ("on a Xeon it took 120 s and reached val loss 1.57; it stops after 120 s "
                                              "of wall clock on any machine")


def test_demo_trains_on_a_demo_model_whose_training_was_stopped(tiny_demo, tmp_path, capsys):
    """A first --demo stopped after its first checkpoint left a barely trained model: the next trains it on from
    there (not from scratch), then samples; once finished, later runs only sample."""
    import trainer
    real_step = trainer.Trainer.train_step

    def ctrl_c_after_the_first_checkpoint(self):
        if self.progress.step == 3:  # evaluated and saved at step 3
            raise KeyboardInterrupt
        return real_step(self)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer.Trainer, "train_step", ctrl_c_after_the_first_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            tiny_demo.main(["--demo", "--seed", "0", "--device", "cpu"])
    run = tmp_path / "checkpoints" / "demo"
    assert (run / "last" / "train_state.pt").exists() and not (run / "summary.json").exists()
    capsys.readouterr()
    tiny_demo.main(["--demo", "--seed", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "training it on from its last checkpoint" in out and "resumed from" in out and "at step 3" in out
    assert json.loads((run / "summary.json").read_text())["steps"] == 6 and out.count("=== temperature") == 5
    tiny_demo.main(["--demo", "--seed", "0", "--device", "cpu"])
    assert "training" not in capsys.readouterr().out


def test_engines_that_cannot_run_are_refused_up_front(monkeypatch):
    import torch
    import cdecode
    import device
    import engine as generate
    from common import UserError
    cpu = torch.device("cpu")
    monkeypatch.setattr(device.shutil, "which", lambda _name: None)
    monkeypatch.setattr(cdecode.shutil, "which", lambda _name: None)
    with pytest.raises(UserError, match="C\\+\\+ compiler"):
        generate.check_engine("compile", cpu, "fp32")
    generate.check_engine("compile", torch.device("cuda"), "fp32")  # GPUs compile with Triton, no C++ compiler needed
    with pytest.raises(UserError, match="needs a C compiler"):
        generate.check_engine("c", cpu, "int8")
    with pytest.raises(UserError, match="use --dtype fp32 or int8"):
        generate.check_engine("c", cpu, "bf16")
    with pytest.raises(UserError, match="add --device cpu"):
        generate.check_engine("c", torch.device("cuda"), "int8")
    with pytest.raises(UserError, match="drop --no-cache"):
        generate.check_engine("compile", cpu, "fp32", use_cache=False)
    generate.check_engine("eager", cpu, "fp32", use_cache=False)


def test_output_cut_short_by_its_reader_is_not_a_crash():
    """`python experiments/report.py --show benchmark | head -1`: the reader stops reading (here it closes the pipe
    before the script writes anything, so the pipe is surely broken), and the script stops without a traceback
    (exit status 1, as Python's documentation advises for a broken pipe)."""
    process = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "report.py"), "--show", "benchmark"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    with process.stderr:
        stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1 and "Traceback" not in stderr, stderr


def test_text_the_terminal_cannot_encode_is_escaped_not_a_crash(tmp_path):
    """A model of the user's own text generates its characters. Where stdout cannot encode them (here
    PYTHONIOENCODING=ascii; a Windows pipe in cp1252 is the common case), print raised UnicodeEncodeError after
    the first line: now every such character comes out as a Python escape, and the command succeeds."""
    from model_modern import modern_config
    from trainer import train
    data = tmp_path / "own.txt"
    data.write_text("字ιστυ 語ιυιβεξ: πσογεεδ 🎭\n" * 400, encoding="utf-8")
    sizes = {k: v for k, v in vars(tiny_model_config()).items() if k in ("block_size", "n_layer", "n_head", "n_embd")}
    train(modern_config(**sizes), tiny_train_config(tmp_path / "run", data, max_steps=4), log=lambda *_: None)
    result = run_script(ROOT / "src" / "generate.py", "--checkpoint", tmp_path / "run", "--prompt", "字ι", "--tokens",
                        "20", "--device", "cpu", env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "\\u5b57\\u03b9" in result.stdout and result.stdout.isascii()


def test_a_run_at_a_gpus_sizes_on_a_cpu_names_the_preset_sized_for_one(capsys):
    """The training scripts' defaults (the original project's sizes) and the *-reference presets train for hours
    on a CPU: one line says so before anything starts, and names the preset for a CPU. Nothing is said where the
    user chose a preset or sizes, nor on a GPU."""
    from cli import RUN_DEFAULTS, parse_training_args
    from presets import cpu_preset_note

    model, train = RUN_DEFAULTS["modern"]
    for argv, note in ((["--device", "cpu"], "--preset cpu is sized for one"), (["--device", "cpu", "--preset", "demo"], None),
                       (["--device", "cpu", "--n-layer", "2"], None), (["--device", "cpu", "--max-steps", "50"], None)):
        parse_training_args(argv, "x", model, train, ("cpu", "demo"))
        out = capsys.readouterr().out
        assert (note in out and "take hours on a CPU" in out) if note else "take hours" not in out, (argv, out)
    assert "--preset bpe-cpu" in cpu_preset_note(None, "cpu", ("bpe-cpu",))
    assert "--preset ab-cpu is sized" in cpu_preset_note("ab-reference", "cpu")
    assert "--preset tokenizers-cpu is sized" in cpu_preset_note("tokenizers-reference", "cpu")
    assert cpu_preset_note("ab-reference", "cuda") is None and cpu_preset_note("ab-cpu", "cpu") is None
    assert cpu_preset_note(None, "mps", ("cpu",)) is None


def test_a_folder_holds_a_checkpoint_where_load_model_would_find_one(tmp_path):
    """checkpoint.holds_checkpoint decides where the scripts' defaults fall back (random weights, the demo, a figure
    left out): a checkpoint folder, or a run folder with best/ or last/, and nothing else."""
    from checkpoint import holds_checkpoint
    assert not holds_checkpoint(tmp_path / "missing") and not holds_checkpoint(tmp_path)
    (tmp_path / "run" / "last").mkdir(parents=True)
    assert not holds_checkpoint(tmp_path / "run")  # an empty last/: a run that never saved
    (tmp_path / "run" / "last" / "config.json").write_text("{}")
    assert holds_checkpoint(tmp_path / "run") and holds_checkpoint(tmp_path / "run" / "last")


def test_a_default_with_a_newline_is_quoted_and_a_percent_sign_in_help_stays_one():
    from common import ArgumentParser
    parser = ArgumentParser()
    parser.add_argument("--prompt", default="50%\n", help="decay 20%% of it")
    assert "decay 20% of it (default: '50%\\n')" in " ".join(parser.format_help().split())
