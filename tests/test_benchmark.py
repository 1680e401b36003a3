"""training/benchmark.py at a tiny size: every figure is present and consistent with the machine's ceilings."""
import argparse
import ctypes
import json
import subprocess
import sys

import pytest
import torch

import docs
from conftest import (ROOT, assert_user_error, load_script, run_main, run_script, tiny_model_config, tiny_sizes,
                      tiny_train_config)
from bench import layer_components, peak_resident_mb
from device import ProcessMemoryCounters, cpp_compiler, hardware_tag, same_threads_env
from measure import too_slow_to_train
from model_modern import modern_config
from peers import NanoGPTProcess, llama_cpp_rows
from trainer import train


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, shakespeare):
    root = tmp_path_factory.mktemp("bench")
    data = root / "small.txt"
    data.write_text(shakespeare[:30_000])
    sizes = tiny_sizes()
    train(modern_config(**sizes), tiny_train_config(root / "checkpoints" / "modern", data, max_steps=4, eval_interval=2),
          log=lambda *_: None)
    return root


def test_benchmark_reports_speed_against_measured_ceilings(checkpoints, tmp_path):
    result = run_script(ROOT / "training" / "benchmark.py", "--size", "checkpoint", "--checkpoints",
                        checkpoints / "checkpoints", "--models", "modern", "--dtypes", "fp32", "--batches", "1", "2",
                        "--gen-tokens", "6", "--batched-gen-tokens", "4", "--repeats", "2", "--train-batch", "2",
                        "--decode", "bf16", "int8", "fp32+c", "int8+c", "--no-components", "--memory-batch", "0",
                        "--sample-tokens", "5", "--device", "cpu", "--data", checkpoints / "small.txt",
                        "--results-dir", tmp_path / "r", "--images-dir", tmp_path / "i")
    assert result.returncode == 0, result.stderr
    (written,) = (tmp_path / "r").glob("benchmark_*.json")  # named by this machine's class
    assert written.stem == f"benchmark_{hardware_tag(torch.device('cpu'))}"
    record = json.loads(written.read_text())
    image = tmp_path / "i" / f"{written.stem}.png"
    ceilings = record["ceilings"]
    assert ceilings["matmul_gflops_fp32"] > 0 and ceilings["copy_gbps"] > 0 and ceilings["matmul_size_fp32"] in (1024, 2048)
    (model,) = record["models"]
    assert [t["dtype"] for t in model["training"]] == ["fp32"]
    for t in model["training"]:
        assert t["tokens_per_sec"] > 0 and 0 < t["mfu"]
        assert t["model_gflops"] / t["mfu"] == pytest.approx(ceilings[f"matmul_gflops_{t['dtype']}"], rel=2e-3)
        assert t["fraction_of_kernel_ceiling"] == pytest.approx(
            t["tokens_per_sec"] / t["kernel_ceiling_tokens_per_sec"], rel=2e-3)
    rows = model["generation"]
    assert [(g["batch"], g["new_tokens"], g["cached"], g["weights_dtype"], g["engine"]) for g in rows] == [
        (1, 6, True, "fp32", "eager"), (1, 6, False, "fp32", "eager"), (1, 6, True, "bf16", "eager"),
        (1, 6, True, "int8", "eager"), (1, 6, True, "fp32", "c"), (1, 6, True, "int8", "c"), (2, 4, True, "fp32", "eager"),
        (2, 4, False, "fp32", "eager")]
    for cached, uncached in ((rows[0], rows[1]), (rows[2], rows[1]), (rows[3], rows[1]), (rows[4], rows[1]), (rows[6], rows[7])):
        assert cached["speedup"] == pytest.approx(cached["tokens_per_sec"] / uncached["tokens_per_sec"], rel=2e-3)
    assert model["default_engine"] == "c"  # what src/generate.py runs without flags
    assert "memory" not in model  # --memory-batch 0; measured below
    assert rows[2]["weights_mb"] == pytest.approx(rows[0]["weights_mb"] / 2, rel=1e-3), "bf16 halves the bytes read"
    assert rows[3]["weights_mb"] < rows[2]["weights_mb"], "int8 reads fewer bytes than bf16"
    assert "matvec_ceiling_tokens_per_sec" not in rows[4], "the C step's products are its own, not PyTorch's"
    assert rows[4]["weights_mb"] == pytest.approx(rows[0]["weights_mb"], rel=1e-3), "the C step reads the fp32 weights"
    for g in rows[:4]:
        if g["cached"]:
            # stored figures keep 4 significant digits, so a ratio of them matches the stored ratio to 0.2%
            assert g["fraction_of_matvec_ceiling"] == pytest.approx(
                1e3 / g["ms_per_token"] / g["matvec_ceiling_tokens_per_sec"], rel=2e-3)
    # the trained checkpoint's val loss barely moves with 16- or 8-bit weights; fp32 agrees with itself
    quality = {q["weights"]: q for q in model["quality"]}
    assert quality["fp32"]["greedy_tokens_identical"] == quality["fp32"]["greedy_tokens"]
    assert abs(quality["int8"]["val_loss"] - quality["fp32"]["val_loss"]) < 0.05
    assert abs(quality["int8+c"]["val_loss"] - quality["fp32"]["val_loss"]) < 0.05
    assert "components" not in record
    h = record["head_to_head"]  # no --nanogpt: our default step (and eager, if that compiles), its kernels
    assert set(h["tokens_per_sec"]) == {"modern", "modern_kernels_alone"} | ({"modern_eager"} if h["compiled"] else set())
    assert h["rounds"] == 6 and h["compile_reason"].startswith("auto: ")
    assert h["mfu"] / h["kernels_alone_mfu"] == pytest.approx(
        h["tokens_per_sec"]["modern"] / h["tokens_per_sec"]["modern_kernels_alone"], rel=2e-3)
    assert h["matmul_gflops"] > 0 and h["dtype"] in ("fp32", "bf16")
    # three temperatures per prompt (a prompt with characters outside this small vocabulary is skipped)
    prompts = [s["prompt"] for s in model["samples"]]
    assert prompts[:6] == ["ROMEO:"] * 3 + ["To be"] * 3 and all(s["text"].startswith(s["prompt"]) for s in model["samples"])
    assert image.stat().st_size > 10_000
    tables = docs.benchmark_tables(record)  # the renderer of the tables
    assert "| modern | fp32 |" in tables and "| cached, int8 weights, C step |" in tables
    image.unlink()  # --replot redraws it from the results file alone
    replot = run_main(ROOT / "training" / "benchmark.py", "--replot", "--results-dir", tmp_path / "r",
                      "--images-dir", tmp_path / "i")
    assert replot.returncode == 0 and image.stat().st_size > 10_000, replot.stderr


TORCH_ALONE_PEAK = """
import sys
sys.path.insert(0, sys.argv[1])
from device import peak_resident_bytes  # imports torch
print(peak_resident_bytes())
"""


def test_windows_memory_counters_have_the_layout_kernel32_writes():
    """Windows has no `resource` module: there the peak comes from K32GetProcessMemoryInfo, which fills
    PROCESS_MEMORY_COUNTERS and checks its declared size, 72 bytes on 64-bit Windows and 40 on 32-bit. Ten fields,
    the peak working set third, after two 32-bit counts."""
    pointer = ctypes.sizeof(ctypes.c_void_p)
    assert ctypes.sizeof(ProcessMemoryCounters) == {8: 72, 4: 40}[pointer]
    assert ProcessMemoryCounters.PeakWorkingSetSize.offset == 8
    assert len(ProcessMemoryCounters._fields_) == 10


def test_peak_memory_is_the_task_alone_not_the_benchmark_process_that_starts_it():
    """A forked child's ru_maxrss starts at its parent's resident size: with 1 GiB held here, it read the same
    figure for generation and training. The fresh process's own high-water mark does not. The bounds are relative
    to a fresh process that only imports torch: a CUDA build of torch holds ~1 GB from its import alone."""
    torch_alone = subprocess.run([sys.executable, "-c", TORCH_ALONE_PEAK, str(ROOT / "src")], capture_output=True,
                                 text=True, check=True)
    torch_alone_mb = int(torch_alone.stdout) / 2**20
    ballast = torch.ones(2**28)  # 1 GiB resident in this process
    config, args = tiny_model_config(), argparse.Namespace(data=None)  # vanilla: trained eager, no compile to wait for
    rows = [peak_resident_mb("generation", config, 8, args), peak_resident_mb("training", config, 2, args)]
    assert [(r["task"], r["size"]) for r in rows] == [("generation", 8), ("training", 2)]
    assert all(torch_alone_mb < r["peak_resident_mb"] < torch_alone_mb + 700 for r in rows), (torch_alone_mb, rows)
    assert ballast.sum() == 2**28


def test_a_dtype_whose_matmuls_are_emulated_is_skipped_with_the_measured_reason():
    ceilings = {"matmul_gflops_fp32": 150.0, "matmul_gflops_bf16": 1.0}
    reason = too_slow_to_train("bf16", ceilings)
    assert "bf16 matmuls run at 1.0 GFLOP/s here vs 150.0 in fp32 (150x slower)" in reason
    assert too_slow_to_train("bf16", {**ceilings, "matmul_gflops_bf16": 300.0}) is None
    assert too_slow_to_train("fp32", ceilings) is None


def test_llama_cpp_rows_of_a_vocabulary_gguf_cannot_hold_are_skipped_with_the_reason():
    """The llama.cpp rows export the timed model's vocabulary (the checkpoint's, or the data's characters): one that
    GGUF cannot hold skips the rows with the export's reason, after the rest of the benchmark, not in an error."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from model import GPT
    from tokenizer import CharTokenizer
    model = GPT(modern_config(**{**tiny_sizes(), "vocab_size": 4}))
    model.tokenizer = CharTokenizer("\n a\u2581")
    rows, skipped = llama_cpp_rows(model, argparse.Namespace(gen_tokens=4, repeats=1))
    assert rows == [] and len(skipped) == 1
    assert skipped[0].startswith("llama.cpp: ") and "cannot hold the character(s) '▁'" in skipped[0]


def test_benchmark_refuses_an_unknown_dtype(tmp_path):
    result = run_main(ROOT / "training" / "benchmark.py", "--dtypes", "fp8", "--results-dir", tmp_path)
    assert_user_error(result, "fp8")


def test_benchmark_refuses_a_checkpoints_folder_that_does_not_exist(tmp_path):
    """A typo there measured random weights and sampled noise for a quarter of an hour, said in one line of many."""
    result = run_main(ROOT / "training" / "benchmark.py", "--checkpoints", tmp_path / "chekpoints", "--results-dir",
                      tmp_path / "r")
    assert_user_error(result, "--checkpoints", "chekpoints", "no such folder")
    assert not (tmp_path / "r").exists()


def test_layer_components_time_both_sides_of_each_change():
    import torch
    rows = layer_components(torch.device("cpu"), repeats=1, batch=2, decode_tokens=8,
                                      c=tiny_model_config())
    compiled = [("fp32 kernel", "compiled block-causal bf16")] if cpp_compiler() else []
    dropouts = [("F.dropout", "16-bit draws (dropout.py)")] * (2 if cpp_compiler() else 1)  # eager, compiled
    assert [(r["before"], r["after"]) for r in rows] == [("4 teaching heads in a loop", "fused q/k/v + SDPA"),
                                                         ("torch.cat cache", "preallocated KVCache"),
                                                         ("bf16 kernel", "fp32 kernel"), *compiled,
                                                         ("F.rms_norm + autograd", "closed-form backward"), *dropouts]
    for r in rows:
        assert r["before_value"] > 0 and r["after_value"] > 0
        assert r["speedup"] == pytest.approx(r["after_value"] / r["before_value"], rel=2e-3)


def test_a_training_target_beyond_the_kernels_alone_says_so():
    """The targets table judges each training target by the head-to-head rounds, and against what the step's
    kernels alone, timed in the same rounds, would score: a target above that is marked beyond them, one below it
    is a plain miss (something around the kernels is slow). The sequential rows do not count."""
    row = {"dtype": "bf16", "compiled": False, "tokens_per_sec": 9999.0, "mfu": 0.99,
           "kernel_ceiling_tokens_per_sec": 9999.0, "kernel_ceiling_mfu": 0.99}
    record = {"training_dtype_auto": {"dtype": "bf16"},
              "models": [{"name": "modern", "training": [row], "generation": []}],
              "nanogpt": {"training": [{"dtype": "fp32", "tokens_per_sec": 1.0}, {"dtype": "bf16", "tokens_per_sec": 1.0}]},
              "head_to_head": {"dtype": "bf16", "compiled": False, "compile_reason": "--compile off asked for",
                               "batch": 8, "rounds": 15, "matmul_gflops": 400.0, "mfu": 0.50,
                               "kernels_alone_mfu": 0.75,
                               "tokens_per_sec": {"modern": 3000.0, "modern_kernels_alone": 4400.0,
                                                  "nanogpt_fp32": 1900.0, "nanogpt_bf16": 3600.0}}}
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in docs.benchmark_targets(record)}
    assert rows["training tokens/s (default flags: bf16) / nanoGPT fp32"][2:] == ["1.58", "2.32", "no |"]
    assert rows["... / nanoGPT bf16 autocast"][2:] == ["0.83", "1.22", "no: beyond the kernels alone |"]
    assert rows["training MFU against the bf16 matmul ceiling of the same rounds"][2:] == ["0.50", "0.75", "no |"]
    assert "| ... its products and attention kernels alone | 4,400 | 75% |" in docs.benchmark_head_to_head(record)


def test_the_speed_summary_names_the_default_decoding_path():
    """The README's decoding path goes uncached -> cached -> what generate.py runs without flags -> the fastest;
    the default is named as such, and a row that is two of these appears once."""
    def row(mode, tok_s, cached=True):
        return {"batch": 1, "new_tokens": 500, "cached": cached, "mode": mode, "tokens_per_sec": tok_s,
                "speedup": tok_s / 10, "fraction_of_bandwidth_ceiling": 0.5}
    generation = [row("uncached", 10, cached=False), row("cached", 100), row("cached, C step", 900),
                  row("cached, int8 weights, C step", 2000)]
    record = {"hardware": "a CPU", "command": "training/benchmark.py", "date": "2026-12-03",
              "models": [{"name": "modern", "default_engine": "c", "generation": generation}]}
    assert ("at 10 (uncached) → 100 (cached) → 900 (cached, C step: the default path) → 2,000 (cached, int8 "
            "weights, C step) tokens/s") in docs.speed_of(record)
    record["models"][0]["default_engine"] = "eager"
    assert "at 10 (uncached) → 100 (cached: the default path) → 2,000 (cached, int8" in docs.speed_of(record)


FAKE_NANOGPT = '''"""A stand-in for nanoGPT's model.py: the interface the benchmark uses, and a log of the process of each step."""
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    n_layer: int = 1
    n_head: int = 1
    n_embd: int = 8
    block_size: int = 8
    vocab_size: int = 65
    dropout: float = 0.0
    bias: bool = False


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        print("number of parameters: (as nanoGPT prints it)")
        self.embedding = nn.Embedding(config.vocab_size, 8)
        self.head = nn.Linear(8, config.vocab_size)

    def forward(self, idx, targets):
        with open(os.environ["NANOGPT_STEP_LOG"], "a") as log:
            log.write(f"{os.getpid()}\\n")
        logits = self.head(self.embedding(idx))
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        return torch.optim.AdamW(self.parameters(), lr=learning_rate, betas=betas, weight_decay=weight_decay)
'''


def test_nanogpt_steps_run_in_a_fresh_process_of_their_own(tmp_path, monkeypatch, capfd):
    """nanoGPT's training step is timed in its own process, as its users run it, not in ours, whose allocator setting
    (device.keep_freed_memory) it would share; each call runs one step there, and a failure there is raised here.
    What nanoGPT prints as it builds its model (once per process) stays out of the benchmark's output."""
    import os
    (tmp_path / "model.py").write_text(FAKE_NANOGPT)
    log = tmp_path / "steps.log"
    monkeypatch.setenv("NANOGPT_STEP_LOG", str(log))
    with NanoGPTProcess(str(tmp_path), "fp32", 2, torch.device("cpu")) as step:
        for _ in range(3):
            step()
    processes = log.read_text().split()
    assert len(processes) == 3 and len(set(processes)) == 1 and int(processes[0]) != os.getpid()
    assert "number of parameters" not in "".join(capfd.readouterr())
    with pytest.raises(RuntimeError, match="no model.py"):
        NanoGPTProcess(str(tmp_path / "missing"), "fp32", 2, torch.device("cpu"))


def test_the_head_to_head_says_what_our_allocator_setting_is_worth_to_nanogpt():
    """nanoGPT's step timed both in its own process and given our allocator setting: the table shows both, and a
    sentence the two ratios."""
    record = {"head_to_head": {"dtype": "bf16", "compiled": True, "compile_reason": "auto", "batch": 8, "rounds": 15,
                               "matmul_gflops": 400.0, "mfu": 0.7, "kernels_alone_mfu": 0.8,
                               "tokens_per_sec": {"modern": 4000.0, "modern_kernels_alone": 4400.0,
                                                  "nanogpt_bf16": 2500.0, "nanogpt_bf16_memory_kept": 3200.0}}}
    lines = docs.benchmark_head_to_head(record)
    assert "| nanoGPT's step, bf16 autocast, given our allocator setting | 3,200 |  |" in lines
    assert any("1.28× its bf16 speed in a process of its own, and ours at 1.25× that" in line for line in lines)


def test_processes_timed_beside_the_benchmark_run_its_number_of_threads():
    """nanoGPT's step and the memory measurements run in fresh processes, where torch would start a thread per core
    again: they get this process's count, which may have been fitted to a container's CPU quota."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        child = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                               env=same_threads_env(), capture_output=True, text=True, timeout=120)
    finally:
        torch.set_num_threads(before)
    assert child.stdout.strip() == "1", child.stderr


def test_a_run_says_how_long_the_last_run_of_its_command_took_on_this_kind_of_machine(tmp_path):
    benchmark = load_script(ROOT / "training" / "benchmark.py")
    path, command = tmp_path / "benchmark_cpu-x.json", "training/benchmark.py --compile"
    assert benchmark.expected_duration(path, command) is None  # no record yet
    path.write_text(json.dumps({"command": command, "elapsed_s": 929.9, "date": "2026-12-07"}))
    note = benchmark.expected_duration(path, command)
    assert note.startswith("expect about 15 minutes") and "took 930 s" in note and "2026-12-07" in note
    assert benchmark.expected_duration(path, "training/benchmark.py --quick") is None  # other flags, other duration
    path.write_text('{"command": "training/benchmark.py --compile", "elapsed_s": ')  # damaged: rewritten at the end
    assert benchmark.expected_duration(path, command) is None


def test_the_recorded_command_names_the_nanogpt_checkout_its_rows_need_and_no_folder_of_this_machine(tmp_path):
    benchmark = load_script(ROOT / "training" / "benchmark.py")
    args = benchmark.build_parser().parse_args(["--compile", "--nanogpt", str(tmp_path / "nanoGPT")])
    assert benchmark.command_line(args) == "training/benchmark.py --compile --nanogpt .../nanoGPT"
    old = {"command": "training/benchmark.py --compile", "nanogpt": {"rows": []}}  # written before the flag was named
    assert docs.benchmark_command(old) == "python training/benchmark.py --compile --nanogpt .../nanoGPT"
    assert docs.benchmark_command({"command": "training/benchmark.py --quick"}) == "python training/benchmark.py --quick"
    new = {"command": "training/benchmark.py --nanogpt .../nanoGPT", "nanogpt": {"rows": []}}
    assert docs.benchmark_command(new) == "python training/benchmark.py --nanogpt .../nanoGPT"
