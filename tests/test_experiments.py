"""Smoke tests of the experiment scripts at a tiny size: they run end to end and write their JSON and PNG."""
import json
import math

import pytest

from conftest import ROOT, run_main, run_script

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


def test_swap4_kvcache_times_both_modes_and_checks_greedy_identity(tmp_path):
    result = run_script(ROOT / "experiments" / "swap4_kvcache.py", "--checkpoint", tmp_path / "none", "--lengths", "8",
                        "--batches", "1", "2", "--repeats", "1", "--device", "cpu", "--results-dir", tmp_path / "r",
                        "--images-dir", tmp_path / "i")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "r" / "swap4_kvcache.json").read_text())
    assert "random weights" in record["model"]
    assert len(record["rows"]) == 2 and all(r["greedy_identical"] for r in record["rows"])
    assert (tmp_path / "i" / "swap4_kvcache.png").exists()


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


def test_tokenizer_experiment_rejects_a_bad_name_before_training(tmp_path, small_text):
    result = run_main(ROOT / "experiments" / "compare_tokenizers.py", "--preset", "tokenizers-cpu", "--tokenizers", "char", "bpe:12",
                        "--data", small_text, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2 and "at least 256" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()
