"""Shared fixtures: a small corpus, tiny configs, and helpers to run scripts (pytest.ini puts src/ on the path)."""
import contextlib
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common import run_cli
from model import GPTConfig
from trainer import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "input.txt"


def pytest_xdist_auto_num_workers(config) -> int:
    """Workers for `-n auto` (pytest.ini): one per core this process may run on, at most four. Each worker holds
    its own torch, and many tests start processes of their own."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


def pytest_configure(config):
    """One torch thread per worker when pytest-xdist runs tests in parallel: two workers of two threads each on two
    cores spun against each other (in-process training tests ran ten to thirty times slower). Two threads in one
    process (-n 0). Scripts the tests start get one thread too (run_script)."""
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def torch_threads(request):
    """Two threads for a test marked `multithreaded`, whose code splits work across threads (the C step's OpenMP
    loops, the inductor's parallel loops and atomic adds): what a race would break must run on more than one."""
    if request.node.get_closest_marker("multithreaded") is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shakespeare() -> str:
    assert DATA.exists(), "data/input.txt is missing: .ci/run copies it from ../shared/data"
    return DATA.read_text(encoding="utf-8")


@pytest.fixture
def small_text(tmp_path, shakespeare) -> Path:
    """The first 30,000 characters of Tiny Shakespeare as its own data file."""
    path = tmp_path / "small.txt"
    path.write_text(shakespeare[:30_000], encoding="utf-8")
    return path


def tiny_model_config(**overrides) -> GPTConfig:
    base = dict(vocab_size=65, block_size=16, n_layer=2, n_head=4, n_embd=32, dropout=0.0)
    return GPTConfig(**{**base, **overrides})


def tiny_sizes() -> dict:
    """tiny_model_config's sizes without its architecture switches: for GPTConfig.named / modern_config."""
    return {k: v for k, v in vars(tiny_model_config()).items() if k not in ("norm", "ffn", "pos", "attn_proj_bias")}


def tiny_train_config(out_dir, data, **overrides) -> TrainConfig:
    """fp32 pinned (here and in TINY_FLAGS): `auto` picks bf16 on CPUs with native bf16, and tests compare runs
    to 1e-5. The precision policy has tests of its own (test_precision.py)."""
    base = dict(max_steps=20, batch_size=8, eval_interval=10, eval_iters=2, lr=1e-3, seed=0, device="cpu", dtype="fp32",
                out_dir=str(out_dir), data=str(data), sample_tokens=0)
    return TrainConfig(**{**base, **overrides})


TINY_FLAGS = ["--dropout", "0", "--n-layer", "2", "--n-head", "4", "--n-embd", "32", "--block-size", "16", "--batch-size", "8",
              "--eval-iters", "2", "--device", "cpu", "--dtype", "fp32", "--sample-tokens", "0"]


def run_script(*args, timeout=300, env=None, cwd=ROOT) -> subprocess.CompletedProcess:
    """Run a repo script the way a user would (python path/to/script.py ...)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def load_script(script: Path):
    """A script (training/benchmark.py, experiments/visualize.py...) as a module, to test its functions; scripts
    are not on the import path, since no script imports another."""
    spec = importlib.util.spec_from_file_location(f"script_{script.parent.name}_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(script: Path, *args) -> subprocess.CompletedProcess:
    """Run a script's main(argv) in this process through common.run_cli, as its `__main__` does, capturing the
    exit status and output: the same checks as run_script for bad-input cases, which stop before any work,
    without paying ~3 s of interpreter and torch start-up each. A few tests still start real processes."""
    module = load_script(script)
    out, err, status = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_cli(lambda: module.main([str(a) for a in args]))
        except SystemExit as exit_:
            status = exit_.code
    return subprocess.CompletedProcess([str(script), *map(str, args)], status, out.getvalue(), err.getvalue())


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Non-zero exit, no traceback, and a one-line message naming the problem."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    for needle in needles:
        assert needle.lower() in error_lines[0].lower(), error_lines[0]
