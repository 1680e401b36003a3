"""Crash safety: kill -9 and resume, kill during a checkpoint write, full disk, OOM, unsafe pickles."""
import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoint as ck
from common import UserError
from conftest import ROOT, TINY_FLAGS, assert_user_error, run_main, run_script, tiny_model_config, tiny_train_config
import device
from device import cpp_compiler, cpu_flags
from trainer import Trainer, train

TRAIN = ROOT / "training" / "train.py"
RUN_FLAGS = [*TINY_FLAGS, "--max-steps", "300", "--eval-interval", "20", "--dropout", "0.1", "--seed", "3"]


def history(out):
    h = json.loads((out / "history.json").read_text())
    return h["train_loss"], [(e["step"], e["train_loss"], e["val_loss"]) for e in h["evals"]]


def test_kill_minus_9_at_a_random_step_then_resume_equals_an_uninterrupted_run(tmp_path, small_text):
    straight = run_script(TRAIN, *RUN_FLAGS, "--data", small_text, "--out-dir", tmp_path / "a")
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "b"
    kill_after = random.Random().choice(range(40, 260, 20))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(TRAIN), *RUN_FLAGS, "--data", str(small_text), "--out-dir", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # a guard against a hang only: a busy machine may take its time
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((out / "last" / "config.json").read_text())["step"] >= kill_after:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_script(TRAIN, *RUN_FLAGS, "--data", small_text, "--out-dir", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert history(tmp_path / "a") == history(out)
    a, b = (json.loads((p / "summary.json").read_text()) for p in (tmp_path / "a", out))
    assert a["final_train_loss"] == b["final_train_loss"] and a["best_val_loss"] == b["best_val_loss"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


CRASH_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
import checkpoint, torch
from conftest import tiny_model_config, tiny_train_config
from trainer import train
mode = {mode!r}
calls = {{"n": 0}}
if mode == "mid-write":
    real = checkpoint.atomic_write_bytes
    def dying_write(path, data):
        if path.name == "train_state.pt":
            calls["n"] += 1
            if calls["n"] == 2:  # the second checkpoint: write half of its training state, then die
                with open(path, "wb") as f:
                    f.write(data[:len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return real(path, data)
    checkpoint.atomic_write_bytes = dying_write
else:  # between the two renames of the folder swap
    real = os.replace
    def dying_replace(src, dst):
        if str(dst).endswith(".last.tinyllm-old"):
            calls["n"] += 1
            if calls["n"] == 2:
                real(src, dst)
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    checkpoint.os.replace = dying_replace
train(tiny_model_config(), tiny_train_config({out!r}, {data!r}, max_steps=30), log=lambda *a: None)
"""


@pytest.mark.parametrize("mode", ["mid-write", "between-renames"])
def test_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, small_text, mode):
    out = tmp_path / "run"
    script = CRASH_SCRIPT.format(src=str(ROOT / "src"), tests=str(ROOT / "tests"), mode=mode, out=str(out),
                                 data=str(small_text))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    before = sorted(p.name for p in out.iterdir())
    model, record = ck.load_model(out / "last")  # reads the interrupted swap's old side where it is...
    assert record["step"] in (10, 20)
    assert ck.load_train_state(ck.resolve_folder(out / "last"))["step"] == record["step"]
    assert sorted(p.name for p in out.iterdir()) == before  # ...and writes nothing
    # the next run (a resume) cleans up every temp folder and finishes
    train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=30, resume=True), log=lambda *a: None)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert json.loads((out / "last" / "config.json").read_text())["step"] == 30


def test_full_disk_during_a_save_leaves_the_previous_checkpoint(tmp_path, small_text, monkeypatch):
    out = tmp_path / "run"
    train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=10), log=lambda *a: None)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full_disk)
    with pytest.raises(UserError, match="No space left on device.*step 10"):
        train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=20, resume=True), log=lambda *a: None)
    monkeypatch.undo()
    assert ck.load_model(out / "last")[1]["step"] == 10
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cuda_out_of_memory_gives_advice(tmp_path, small_text, monkeypatch):
    run = Trainer(tiny_model_config(), tiny_train_config(tmp_path / "run", small_text), log=lambda *a: None)

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(run, "train_step", oom)
    with pytest.raises(UserError, match=r"out of memory.*--batch-size 4 --grad-accum 2"):
        run.fit()


class Exploit:
    """Unpickling this calls open(marker, 'w'): code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the payload's protocol, then refuses it
def test_a_malicious_pickle_is_refused_by_every_loader(tmp_path, small_text):
    out = tmp_path / "run"
    train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=10), log=lambda *a: None)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"step": Exploit(str(marker))})
    torch.save({"x": 1}, tmp_path / "probe.pt")  # sanity: a benign file loads
    (out / "last" / "train_state.pt").write_bytes(payload)
    with pytest.raises(UserError, match="refusing"):
        ck.load_train_state(out / "last")
    result = run_main(TRAIN, *TINY_FLAGS, "--max-steps", "20", "--eval-interval", "10", "--data", small_text,
                      "--out-dir", out, "--resume")
    assert_user_error(result, "refusing")
    # a pickle disguised as weights is not loadable either
    (out / "best" / "model.safetensors").write_bytes(payload)
    with pytest.raises(UserError, match="corrupt"):
        ck.load_model(out / "best")
    assert_user_error(run_main(ROOT / "src" / "generate.py", "--checkpoint", out / "best"), "corrupt")
    assert not marker.exists()


def test_grad_scaler_skipped_steps_are_not_nan_stops(tmp_path, small_text):
    """fp16 training on CUDA: an overflowing loss scale makes the GradScaler skip steps (inf gradients)
    while the loss itself stays finite; the run must go on, not stop as diverged. Emulated on the CPU
    with an enabled scaler whose initial scale overflows the gradients."""
    run = Trainer(tiny_model_config(), tiny_train_config(tmp_path / "run", small_text, max_steps=12), log=lambda *a: None)
    run.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1000)
    summary = run.fit()
    assert summary["steps"] == 12 and math.isfinite(summary["final_train_loss"])
    assert run.scaler.get_scale() < 2.0 ** 127  # steps were skipped and the scale backed off


VECTOR_WIDTH_CHILD = """
import os
import sys
sys.path.insert(0, sys.argv[1])
import torch
import torch._dynamo  # as building a model on the meta device does: it sets TORCHINDUCTOR_CACHE_DIR to the default
from device import torch_compile
def f(x):
    return torch.softmax(x * 2 + 1, dim=-1)
x = torch.randn(64, 1000)
print((torch_compile(f)(x) - f(x)).abs().max().item())
print(os.environ["TORCHINDUCTOR_CACHE_DIR"])
"""


@pytest.mark.skipif(cpp_compiler() is None or "avx512f" not in cpu_flags(),
                    reason="needs a C++ compiler, and AVX-512 to compile for two vector widths")
def test_code_generated_for_one_vector_width_is_never_built_for_another():
    """torch's cache of generated C++ is not keyed on the CPU: in one cache folder, a softmax compiled on this
    AVX-512 CPU, then where torch picks AVX2 (ATEN_CPU_CAPABILITY=avx2, as on a CPU without AVX-512), came out
    off by tenths. `device.torch_compile` keeps a folder per CPU, here two under torch's default folder (warm
    after the first run: both children then take seconds)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "ATEN_CPU_CAPABILITY")}
    errors, folders = [], []
    for capability in ({}, {"ATEN_CPU_CAPABILITY": "avx2"}):
        result = subprocess.run([sys.executable, "-c", VECTOR_WIDTH_CHILD, str(ROOT / "src")], env=env | capability,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        error, folder = result.stdout.split("\n")[-3:-1]
        errors.append(float(error))
        folders.append(folder)
    assert max(errors) < 1e-5, errors
    assert folders[0] != folders[1]


def test_the_compile_cache_is_the_users_folder_or_one_per_cpu(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    folders = []
    for flags in ({"avx2", "fma"}, {"avx2", "fma", "avx512f"}, {"fma", "avx2"}):
        monkeypatch.setattr(device, "cpu_flags", lambda flags=flags: flags)
        device.compile_cache_for_this_cpu()
        folders.append(os.environ.pop("TORCHINDUCTOR_CACHE_DIR"))
    assert folders[0] == folders[2] != folders[1] and all(os.path.basename(f).startswith("cpu-") for f in folders)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what importing torch._dynamo sets
    device.compile_cache_for_this_cpu()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == folders[2]
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    device.compile_cache_for_this_cpu()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)
