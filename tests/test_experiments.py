"""Smoke tests of the experiment scripts at a tiny size: they run end to end and write their JSON and PNG."""
import json
import math
from dataclasses import replace

import pytest

from abtest import arm_spec, parse_arm, rerun_command
from checkpoint import save_model_folder
import docs
from common import UserError
from conftest import ROOT, assert_user_error, load_script, run_main, run_script, tiny_model_config
from model import CONFIGS, GPT
from tokenizer import CharTokenizer

TINY = ["--preset", "ab-cpu", "--seeds", "2", "--max-steps", "6", "--eval-interval", "3", "--eval-iters", "2",
        "--batch-size", "4", "--device", "cpu"]


@pytest.mark.parametrize("script, name, arms", [
    ("swap1_rmsnorm.py", "swap1_rmsnorm", {"vanilla", "rmsnorm"}),
    ("swap2_swiglu.py", "swap2_swiglu", {"vanilla", "swiglu", "relu2"}),
    ("swap3_rope.py", "swap3_rope", {"vanilla", "rope"}),
])
def test_swap_scripts_write_results_and_plots(tmp_path, small_text, script, name, arms):
    result = run_script(ROOT / "experiments" / script, *TINY, "--data", small_text, "--results-dir", tmp_path / "r",
                        "--images-dir", tmp_path / "i", "--runs-dir", tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "r" / f"{name}.json").read_text())
    assert set(record["arms"]) == arms and record["seeds"] == 2
    assert [row["step"] for row in record["table"]] == [0, 3, 6]
    assert all(len(a["curves"]) == 2 for a in record["arms"].values())
    assert (tmp_path / "i" / f"{name}.png").stat().st_size > 10_000
    assert "± " in result.stdout and "training tokens/s" in result.stdout
    if name == "swap1_rmsnorm":
        assert record["norm_timing_ms"]["layernorm"] > 0 and record["norm_timing_ms"]["rmsnorm"] > 0
    if name == "swap3_rope":
        assert set(record["length_generalisation"]) >= {"at_block_size", "2x_sliding_window", "2x_full_attention"}


def test_your_own_ab_experiment_from_the_command_line(tmp_path, small_text):
    flags = [*TINY, "--data", small_text, "--results-dir", tmp_path / "r", "--images-dir", tmp_path / "i",
             "--runs-dir", tmp_path / "runs"]
    result = run_script(ROOT / "experiments" / "ab.py", "lr", "--arm", "lr=1e-3", "--arm", "fast:lr=3e-3,n_layer=2",
                        *flags)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "r" / "lr.json").read_text())
    assert record["arms"]["fast"]["overrides"] == {"lr": 3e-3, "n_layer": 2} and record["arms"]["lr=1e-3"]["overrides"] == {"lr": 1e-3}
    assert record["arms"]["fast"]["params"] < record["arms"]["lr=1e-3"]["params"]  # one layer fewer, really trained
    assert all(arm["elapsed_s"][0] > 0 for arm in record["arms"].values())  # each arm's wall clock, mean ± std
    progress = [line.split("| ")[-1] for line in result.stdout.splitlines() if "ETA" in line]
    assert [p.split(",")[0] for p in progress] == ["run 1/4", "run 2/4", "run 3/4", "run 4/4"]  # 2 arms x 2 seeds
    assert progress[-1] == "run 4/4, ETA 0s"  # nothing left after the last
    assert "fast - lr=1e-3" in record["table"][-1] and (tmp_path / "i" / "lr.png").stat().st_size > 10_000
    # a bad arm is refused before any arm trains; the project's own records are never replaced
    for arms, needle in ((["--arm", "a:", "--arm", "b:n_head=5"], "arm 'b': n_embd (128) must be divisible by n_head (5)"),
                         (["--arm", "a:", "--arm", "b:tokenizer=bpe:512"], "compare_tokenizers.py"),
                         (["--arm", "a:", "--arm", "b:compile=always"], "arm 'b': --compile must be one of"),
                         (["--arm", "lr=1e-3"], "at least two arms")):
        assert_user_error(run_main(ROOT / "experiments" / "ab.py", "other", *arms, *flags), needle)
    assert not (tmp_path / "runs" / "other").exists()
    (tmp_path / "r" / "mine.json").write_text("{}")
    assert_user_error(run_main(ROOT / "experiments" / "ab.py", "mine", "--arm", "a:", "--arm", "b:lr=1", *flags),
                      "holds results this script did not write")
    assert parse_arm("bpe arm:lr=1e-3, warmup-steps=5") == ("bpe arm", {"lr": 1e-3, "warmup_steps": 5})
    assert parse_arm("compiled:compile=on") == ("compiled", {"compile": "on"})


@pytest.mark.parametrize("label, overrides", [("wide", {"n_embd": 64, "lr": 0.002}), ("baseline", {}),
                                              ("lr=3e-3", {"lr": 0.003}), ("dropout 10%", {"dropout": 0.1})])
def test_an_arm_written_back_as_a_flag_reads_as_the_same_arm(label, overrides):
    assert parse_arm(arm_spec(label, overrides)) == (label, overrides)


def test_the_docs_show_the_command_that_reruns_each_ab_record_and_it_is_the_one_typed_for_it():
    """Each A/B table in the DEVLOG is titled by the command that reruns it, rebuilt from its record: arms, base model,
    preset, seeds and step overrides. It must agree with the command report.py names when the record is missing."""
    import shlex

    def words(command):  # the arms compared as parse_arm reads them: "lr=2e-3" and "lr=0.002" are one arm
        split = shlex.split(command)
        return [parse_arm(w) if i and split[i - 1] == "--arm" else w for i, w in enumerate(split)]

    typed = {name: command for name, *_, command in docs.TRAINING_SWAPS + [docs.WHOLE_SWAP]}
    typed.update({name: command for name, _, command in docs.RECIPE_AB_TESTS.values()})
    devlog = (ROOT / "DEVLOG.md").read_text()
    for name, command in typed.items():
        record = json.loads((ROOT / "results" / f"{name}.json").read_text())
        assert words(rerun_command(record)) == words(command), name
        assert f"(`{rerun_command(record)}`, " in devlog, name
    record = json.loads((ROOT / "results" / "cpu_batch.json").read_text())
    record["seeds"], record["train_config"]["eval_iters"], record["base"] = 5, 7, "vanilla"
    assert rerun_command(record).startswith("python -u experiments/ab.py cpu_batch --base vanilla --preset cpu --seeds 5 "
                                            "--eval-iters 7 --arm 'batch 32:' --arm 'batch 16:batch_size=16,")


def test_a_stopped_experiment_resumes_with_the_results_of_an_uninterrupted_one(tmp_path, small_text, capsys):
    """Ctrl-C in the third of four runs, then --resume: the two finished runs are reused, the stopped one continues
    from its checkpoint, and every curve equals an uninterrupted experiment's (CPU, fp32: bit for bit). A run of other
    settings, or of a data file edited since, is not reused, and without --resume every run trains afresh."""
    import abtest
    import trainer
    from conftest import tiny_model_config, tiny_train_config
    model, tc = tiny_model_config(), tiny_train_config(tmp_path, small_text, max_steps=8, eval_interval=4)
    arms = {"a": {}, "b": {"lr": 3e-3}}
    whole = abtest.run_arms("x", arms, model, tc, 2, tmp_path / "whole")
    real_step, steps = trainer.Trainer.train_step, []

    def ctrl_c_in_the_third_run(self):
        steps.append(self.progress.step)
        if len(steps) == 2 * 8 + 6:  # step 6 of the third run: its checkpoint at step 4 is on disk
            raise KeyboardInterrupt
        return real_step(self)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer.Trainer, "train_step", ctrl_c_in_the_third_run)
        with pytest.raises(KeyboardInterrupt, match=r"in run 3 of 4 \(a, seed 1\); the same command with --resume"):
            abtest.run_arms("x", arms, model, tc, 2, tmp_path / "stopped")
    capsys.readouterr()
    resumed = abtest.run_arms("x", arms, model, tc, 2, tmp_path / "stopped", resume=True)
    out = capsys.readouterr().out
    assert out.count("reused") == 2 and out.count("resumed from") == 1
    assert "run 2/4, ETA –" in out  # reused runs took no time: no pace to tell the rest by
    for label in arms:
        assert resumed[label]["curves"] == whole[label]["curves"] and resumed[label]["best_val"] == whole[label]["best_val"]
    abtest.run_arms("x", arms, model, replace(tc, eval_iters=3), 2, tmp_path / "stopped", resume=True)
    assert "reused" not in capsys.readouterr().out  # other settings: trained again
    abtest.run_arms("x", arms, model, replace(tc, eval_iters=3), 2, tmp_path / "stopped")
    assert "reused" not in capsys.readouterr().out  # no --resume: trained again
    small_text.write_text(small_text.read_text() + "\nEDITED.\n")  # the same path, another text
    abtest.run_arms("x", arms, model, replace(tc, eval_iters=3), 2, tmp_path / "stopped", resume=True)
    assert "reused" not in capsys.readouterr().out  # a run of the text before the edit: trained again


def test_arms_stopped_at_steps_of_their_own_are_compared_where_all_were_evaluated(tmp_path):
    """--max-time (or early stopping) ends runs at steps of their own: the table and the figure use the steps every
    seed of every arm reached, instead of pairing values of different steps or failing on ragged curves, and a last
    row pairs each run's final evaluation (none where every run ended at the last common step)."""
    from abtest import end_of_run, plot_curves, summarise
    arms = {"a": {"curves": [[(0, 4.0), (10, 3.0), (20, 2.0)], [(0, 4.2), (10, 3.2), (17, 2.5)]], "params": 1},
            "b": {"curves": [[(0, 4.0), (10, 2.5), (20, 1.5)], [(0, 4.2), (10, 2.9), (20, 1.9)]], "params": 1}}
    table = summarise(arms)
    assert [row["step"] for row in table] == [0, 10]
    assert table[1]["b - a"] == pytest.approx((-0.4, 0.1414213), abs=1e-6)
    end = end_of_run(arms)  # each run's last evaluation, paired by seed: (1.5 - 2.0, 1.9 - 2.5)
    assert end["step"] == "end of run (steps 17–20)" and end["a"] == pytest.approx((2.25, 0.3535534), abs=1e-6)
    assert end["b - a"] == pytest.approx((-0.55, 0.0707107), abs=1e-6)
    assert end_of_run({label: {"curves": [c[:2] for c in arm["curves"]]} for label, arm in arms.items()}) is None
    plot_curves(arms, "ragged", tmp_path / "ragged.png")
    assert (tmp_path / "ragged.png").exists()


def test_arms_of_other_batch_shapes_are_compared_at_equal_training_tokens(tmp_path):
    """At equal steps a batch twice as large has read twice the text: arms that differ in tokens per step are
    paired at the tokens they have trained on, in the table, the end-of-run row and the figure; and an arm of another
    batch size is evaluated on the experiment's windows."""
    from abtest import arm_configs, end_of_run, format_table, plot_curves, summarise
    from conftest import tiny_model_config
    from trainer import TrainConfig
    arms = {"batch 32": {"curves": [[(0, 4.0), (10, 3.0), (20, 2.0)]] * 2, "params": 1, "tokens_per_step": 200},
            "batch 16": {"curves": [[(0, 4.0), (20, 2.9), (40, 1.9)], [(0, 4.0), (20, 3.1), (38, 2.3)]], "params": 1,
                         "tokens_per_step": 100}}
    table = summarise(arms)
    assert [row["tokens"] for row in table] == [0, 2000]  # step 10 of batch 32 is step 20 of batch 16
    assert table[1]["batch 16 - batch 32"] == pytest.approx((0.0, 0.1414213), abs=1e-6)
    end = end_of_run(arms)
    assert end["tokens"] == "end of run (tokens 3800–4000)" and end["batch 16 - batch 32"][0] == pytest.approx(0.1)
    assert format_table(table, 2).splitlines()[0] == "| tokens | batch 32 | batch 16 | batch 16 - batch 32 |"
    model, tc = tiny_model_config(), TrainConfig(batch_size=32)
    assert arm_configs(model, tc, "batch 16", {"batch_size": 16})[1].eval_batch_size == 32  # the experiment's windows
    assert arm_configs(model, tc, "lr", {"lr": 1e-3})[1].eval_batch_size == 0  # the default: its own batch size
    same = {label: {**arm, "tokens_per_step": 100} for label, arm in arms.items()}
    assert [row["step"] for row in summarise(same)] == [0, 20]
    plot_curves(arms, "batch", tmp_path / "batch.png")
    assert (tmp_path / "batch.png").exists()


def test_swap4_kvcache_times_both_modes_and_checks_greedy_identity(tmp_path, monkeypatch):
    swap4 = load_script(ROOT / "experiments" / "swap4_kvcache.py")
    monkeypatch.setattr(swap4, "REPO_ROOT", tmp_path)  # no checkpoints/modern there: random reference weights
    record = swap4.main(["--lengths", "8", "--batches", "1", "2", "--repeats", "1", "--device", "cpu",
                         "--results-dir", str(tmp_path / "r"), "--images-dir", str(tmp_path / "i")])
    assert record == json.loads((tmp_path / "r" / "swap4_kvcache.json").read_text())
    assert "random weights" in record["model"] and record["block_size"] == 256
    assert len(record["rows"]) == 2 and all(r["greedy_identical"] for r in record["rows"])
    assert (tmp_path / "i" / "swap4_kvcache.png").exists()


def test_swap4_kvcache_times_the_checkpoint_asked_for_and_never_random_weights_in_its_place(tmp_path):
    tokenizer = CharTokenizer.from_text("ROMEO: abc\n")
    model = GPT(tiny_model_config(**CONFIGS["modern"], vocab_size=tokenizer.vocab_size))
    model.tokenizer = tokenizer
    save_model_folder(tmp_path / "tiny", model, model.tokenizer, {"architecture": "modern"})
    common = ["--lengths", "4", "--batches", "1", "--repeats", "1", "--device", "cpu",
              "--results-dir", tmp_path / "r", "--images-dir", tmp_path / "i"]
    result = run_main(ROOT / "experiments" / "swap4_kvcache.py", "--checkpoint", tmp_path / "tiny", *common)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "r" / "swap4_kvcache.json").read_text())
    assert "tiny" in record["model"] and record["block_size"] == model.config.block_size
    (tmp_path / "r" / "swap4_kvcache.json").unlink()
    mistyped = run_main(ROOT / "experiments" / "swap4_kvcache.py", "--checkpoint", tmp_path / "tinyy", *common)
    assert_user_error(mistyped, "tinyy", "not found")
    assert not (tmp_path / "r" / "swap4_kvcache.json").exists()


def test_tokenizer_experiment_compares_in_bits_per_character(tmp_path, small_text):
    result = run_script(ROOT / "experiments" / "compare_tokenizers.py", "--preset", "tokenizers-cpu", "--tokenizers", "char", "bpe:300",
                        "--max-steps", "4", "--eval-interval", "2", "--eval-iters", "2", "--batch-size", "4", "--device", "cpu",
                        "--data", small_text, "--results-dir", tmp_path / "r", "--images-dir", tmp_path / "i",
                        "--runs-dir", tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "r" / "tokenizers.json").read_text())
    char, bpe = (next(r for r in record["rows"] if r["tokenizer"] == name) for name in ("char", "bpe:300"))
    assert char["chars_per_token"] == 1.0 and bpe["chars_per_token"] > 1.2
    # a char token is a character, so bits/char is the loss in bits; the same holds for every eval of the curve
    assert abs(char["best_val_bpc"][0] - char["best_val_loss"][0] / math.log(2)) < 1e-9
    # tied embeddings: the vocabularies differ by (300 - char vocab) rows of n_embd, and nothing else
    n_embd = record["model_config"]["n_embd"]
    assert bpe["params"] - char["params"] == (300 - char["vocab_size"]) * n_embd
    assert [s for s, _ in record["arms"]["bpe:300"]["bpc_curves"][0]] == [0, 2, 4]
    assert (tmp_path / "i" / "tokenizers.png").stat().st_size > 10_000
    assert "| bpe:300 | 300 |" in result.stdout
    (tmp_path / "i" / "tokenizers.png").unlink()  # --replot redraws it from the results file alone, no training
    replot = run_main(ROOT / "experiments" / "compare_tokenizers.py", "--replot", "--results-dir", tmp_path / "r",
                      "--images-dir", tmp_path / "i", "--runs-dir", tmp_path / "no-runs")
    assert replot.returncode == 0 and (tmp_path / "i" / "tokenizers.png").stat().st_size > 10_000
    assert not (tmp_path / "no-runs").exists()


def test_tokenizer_experiment_rejects_a_bad_name_before_training(tmp_path, small_text):
    result = run_main(ROOT / "experiments" / "compare_tokenizers.py", "--preset", "tokenizers-cpu", "--tokenizers", "char", "bpe:12",
                        "--data", small_text, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2 and "at least 256" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_training_swaps_muon_schedule_and_precision(tmp_path, small_text):
    """Muon at equal steps and at equal time, cosine vs WSD, fp32 vs bf16: each arm runs what its label says."""
    common = [*TINY, "--seeds", "1", "--data", small_text, "--results-dir", tmp_path / "r", "--images-dir",
              tmp_path / "i", "--runs-dir", tmp_path / "runs"]
    for script in ("swap5_muon.py", "swap6_schedule.py", "swap7_bf16.py"):
        assert run_main(ROOT / "experiments" / script, *common).returncode == 0
    muon = json.loads((tmp_path / "r" / "swap5_muon.json").read_text())
    assert set(muon["arms"]) == {"adamw", "muon"} and muon["arms"]["muon"]["overrides"] == {"optimizer": "muon"}
    same_time = muon["equal_wall_clock"]
    assert len(same_time["steps"]) == 1 and 1 <= same_time["steps"][0] <= 12
    assert same_time["adamw_best_val"] == muon["arms"]["adamw"]["best_val"]
    schedule = json.loads((tmp_path / "r" / "swap6_schedule.json").read_text())
    assert {a["overrides"]["schedule"] for a in schedule["arms"].values()} == {"cosine", "wsd"}
    assert (tmp_path / "i" / "swap6_schedule.png").exists()
    (tmp_path / "i" / "swap6_schedule.png").unlink()  # --replot redraws it from the results file alone, no training
    replot = run_main(ROOT / "experiments" / "swap6_schedule.py", "--replot", "--results-dir", tmp_path / "r",
                      "--images-dir", tmp_path / "i", "--runs-dir", tmp_path / "no-runs")
    assert replot.returncode == 0 and (tmp_path / "i" / "swap6_schedule.png").stat().st_size > 10_000
    assert not (tmp_path / "no-runs").exists()
    assert_user_error(run_main(ROOT / "experiments" / "swap6_schedule.py", "--replot", "--results-dir", tmp_path / "none"),
                      "run the experiment without --replot first")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "swap6_schedule.json").write_text('{"arms": ')  # cut short
    assert_user_error(run_main(ROOT / "experiments" / "swap6_schedule.py", "--replot", "--results-dir", tmp_path / "bad"),
                      "is not a results file of swap6_schedule")
    precision = json.loads((tmp_path / "r" / "swap7_bf16.json").read_text())
    assert {label: a["precision"]["dtype"] for label, a in precision["arms"].items()} == {"fp32": "fp32", "bf16": "bf16"}


def test_a_figure_title_wraps_a_long_machine_description():
    from abtest import figure_title
    hardware = "Intel(R) Xeon(R) Processor, family 6 model 167 (avx2 avx512f avx512_bf16 amx_bf16), 2 threads"
    lines = figure_title("Swap 7", {"preset": "cpu", "seeds": 2, "hardware": hardware, "date": "2026-12-03"}).splitlines()
    assert lines[0] == "Swap 7" and len(lines) > 2 and all(len(line) <= 80 for line in lines)
    assert " ".join(lines[1:]) == f"(cpu preset, 2 seed(s), {hardware}, 2026-12-03)"


def test_the_whole_swap_trains_each_named_architecture(tmp_path, small_text):
    """Swap 8's arms are the two named architectures, each trained as what it says (read back from its checkpoint)."""
    from checkpoint import load_model
    result = run_main(ROOT / "experiments" / "swap8_modern.py", *TINY, "--seeds", "1", "--data", small_text,
                      "--results-dir", tmp_path / "r", "--images-dir", tmp_path / "i", "--runs-dir", tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "r" / "swap8_modern.json").read_text())
    assert list(record["arms"]) == ["vanilla", "modern"] and "modern - vanilla" in record["table"][-1]
    for label in record["arms"]:
        model, _ = load_model(tmp_path / "runs" / "swap8_modern" / label / "seed0")
        assert model.config.architecture == label
    assert record["arms"]["vanilla"]["params"] != record["arms"]["modern"]["params"]


def test_the_recipe_search_records_one_row_per_step_against_its_budget(tmp_path, small_text, monkeypatch):
    from conftest import load_script
    recipe = load_script(ROOT / "experiments" / "recipe_search.py")
    tiny = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_steps=10_000, eval_interval=5,
                eval_iters=1, lr=1e-3, dtype="fp32")
    monkeypatch.setitem(recipe.STEPS, "tiny", ("a tiny model", tiny))
    monkeypatch.setitem(recipe.STEPS, "tiny-muon", ("+ Muon", {**tiny, "optimizer": "muon"}))
    args = ["--budget", "1.5", "--seeds", "1", "--data", str(small_text), "--results-dir", str(tmp_path), "--runs-dir",
            str(tmp_path / "runs")]
    first = recipe.main([*args, "--steps", "tiny"])
    elsewhere = {**first["rows"][0], "hardware": "another CPU (avx2), 2 threads"}  # the step, run on another machine
    (tmp_path / "recipe_1.5s.json").write_text(json.dumps({**first, "rows": [elsewhere, *first["rows"]]}))
    record = recipe.main([*args, "--steps", "tiny-muon", "tiny"])  # a rerun replaces this machine's row, in run order
    assert [(row["step"], row["hardware"] == elsewhere["hardware"]) for row in record["rows"]] == [
        ("tiny", True), ("tiny-muon", False), ("tiny", False)]
    row = record["rows"][-1]
    assert row["budget_s"] == 1.5 and 0 < row["steps_done"][0] < 10_000  # stopped by the budget
    assert row["elapsed_s"][0] >= 1.5 and row["val"][0] == row["vals"][0] and "threads" in row["hardware"]
    assert json.loads((tmp_path / "recipe_1.5s.json").read_text()) == record
    # a 1.5 s budget is not spent on the compiler's warm-up (--compile auto)
    assert not json.loads((tmp_path / "runs" / "tiny" / "seed0" / "summary.json").read_text())["compiled"]


def test_the_cpu_presets_are_the_recipe_rows_they_cite():
    """`--preset cpu` and `demo` must train exactly what the recipe search measured (its rows are their evidence),
    with their fp32 values too."""
    from conftest import load_script
    from presets import preset_values
    recipe = load_script(ROOT / "experiments" / "recipe_search.py")
    for preset, fp32, step, budget in (("cpu", False, "cpu-wd0.3", 600.0), ("cpu", True, "cpu-4layers", 600.0),
                                       ("demo", False, "demo-margin", 120.0), ("demo", True, "demo-3layers", 120.0)):
        values = preset_values(preset, fp32)
        assert values.pop("max_time") == budget
        assert values == {k: v for k, v in recipe.STEPS[step][1].items() if k != "dtype" or v != "auto"}, step


CRASHES_WITH_EXTRA_BUFFER_TYPES = """
import json, os, signal, sys
job = json.loads(sys.stdin.read())
if job["extra_buffer_types"]:
    os.kill(os.getpid(), signal.SIGSEGV)
print(json.dumps({"path": job["path"]}))
"""


def test_a_llama_cpp_crash_is_reported_and_measured_again_without_extra_buffer_types(monkeypatch):
    """llama.cpp runs in a child (it died of SIGSEGV on an AMX CPU): a child killed by a signal is run again with
    llama.cpp's extra buffer types off, and the row says why; a second death is one error line, not a crash."""
    from common import UserError
    check = load_script(ROOT / "experiments" / "llama_cpp_check.py")
    monkeypatch.setattr(check, "LLAMA_CHILD", CRASHES_WITH_EXTRA_BUFFER_TYPES)
    outputs, how = check.run_llama_cpp({"path": "m.gguf"})
    assert outputs == {"path": "m.gguf"} and how == "off: with them on, llama.cpp died of SIGSEGV"
    monkeypatch.setattr(check, "LLAMA_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(UserError, match="died of SIGSEGV on m.gguf even with its extra buffer types off"):
        check.run_llama_cpp({"path": "m.gguf"})


def test_an_experiment_at_a_gpus_sizes_on_a_cpu_says_so_once_its_arms_are_checked(tmp_path, small_text, monkeypatch,
                                                                                   capsys):
    """A *-reference preset on a CPU takes hours: the line naming the preset sized for a CPU comes once the arms are
    checked (a bad arm prints nothing at all), before the first run trains."""
    import abtest
    from presets import PRESETS

    monkeypatch.setitem(PRESETS, "ab-reference", PRESETS["ab-cpu"])  # the reference's name, a tiny size
    args = abtest.swap_parser("t").parse_args(["--device", "cpu", "--seeds", "1", "--eval-iters", "1", "--data",
                                               str(small_text), "--runs-dir", str(tmp_path)])
    model, tc, seeds = abtest.configs_from_args(args)
    tc = replace(tc, max_steps=2, eval_interval=2)
    with pytest.raises(UserError):
        abtest.run_arms("t", {"a": {}, "b": {"n_head": 5}}, model, tc, seeds, tmp_path, note=abtest.hours_on_cpu_note(args))
    assert capsys.readouterr().out == ""
    abtest.run_arms("t", {"a": {}, "b": {"lr": 2e-3}}, model, tc, seeds, tmp_path, note=abtest.hours_on_cpu_note(args))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("note: --preset ab-reference's sizes, meant for a GPU, take hours on a CPU; --preset ab-cpu is "
                      "sized for one") and out[1].startswith("--- t: a, seed 0 ---")
    args.max_steps = 100  # a shortened run at that size is the user's choice
    assert abtest.hours_on_cpu_note(args) is None


def test_one_seed_shows_no_spread_instead_of_a_zero_one():
    """With one seed there is no spread to show: "1.5454 ± 0.0000" claimed a certainty no single run has (the
    recipe search's one-seed rows said so in DEVLOG). The mean stands alone; over several seeds the ± stays, even
    where it is 0 (a paired difference that is exactly 0 in every seed)."""
    from abtest import format_table, plus_minus
    assert plus_minus((1.5454, 0.0), 1) == "1.5454" and plus_minus((0.0213, 0.0055), 3, "+.4f") == "+0.0213 ± 0.0055"
    assert plus_minus((21002.4, 669.2), 3, ",.0f") == "21,002 ± 669" and plus_minus((0.0, 0.0), 3, "+.4f") == "+0.0000 ± 0.0000"
    table = format_table([{"step": 100, "a": (2.0, 0.0), "b": (1.9, 0.0), "b - a": (-0.1, 0.0)}], seeds=1)
    assert table.splitlines()[-1] == "| 100 | 2.0000 | 1.9000 | -0.1000 |"
