"""DistributedDataParallel on the CPU (gloo): 2 ranks x batch 4 must train exactly like 1 rank x batch 8 in fp32,
with Muon (each rank orthogonalises the same averaged gradient) and the warmup-stable-decay schedule."""
import json
import shutil

import pytest
import torch

import trainer
from common import UserError
from conftest import ROOT, TINY_FLAGS, run_script

TRAIN = ROOT / "training" / "train.py"
FLAGS = [*TINY_FLAGS, "--max-steps", "10", "--eval-interval", "5", "--seed", "5", "--optimizer", "muon", "--schedule", "wsd"]


# A rank of a 2-process gloo run on a CPU has, rarely, died of SIGABRT with this one line from C++ and nothing else
# (std::terminate inside torch's gloo/c10d; twice in about fifteen CI runs, never in a dozen runs in a row by hand).
GLOO_ABORT = "terminate called without an active exception"


def torchrun(nproc, *args, scratch, clear_on_abort=None):
    """training/train.py under torchrun, with `scratch` as the temporary folder of every process (torch's launcher
    and its ranks leave folders of their own in it, which would pile up in /tmp). After that upstream abort (only
    that one) it runs once more, from a cleared --out-dir if `clear_on_abort` names it (a fresh run) or resuming as
    asked: the test is of our training, and a second abort still fails it."""
    for attempt in range(2):
        result = run_script("-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", TRAIN, *args,
                            timeout=180, env={"TMPDIR": str(scratch)})
        if result.returncode == 0 or GLOO_ABORT not in result.stderr or attempt:
            return result
        if clear_on_abort is not None:
            shutil.rmtree(clear_on_abort, ignore_errors=True)


def test_two_ranks_match_one_rank_with_the_same_total_batch_and_resume_under_either(tmp_path, small_text):
    one = run_script(TRAIN, *FLAGS, "--batch-size", "8", "--data", small_text, "--out-dir", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = torchrun(2, *FLAGS, "--batch-size", "4", "--data", small_text, "--out-dir", tmp_path / "two",
                   scratch=tmp_path, clear_on_abort=tmp_path / "two")
    assert two.returncode == 0, two.stderr
    assert "effective batch 8 = 4 x 2 ranks x 1 accum" in two.stdout
    assert two.stdout.count("best val loss") == 1  # only rank 0 logs
    a = json.loads((tmp_path / "one" / "history.json").read_text())
    b = json.loads((tmp_path / "two" / "history.json").read_text())
    assert len(a["train_loss"]) == len(b["train_loss"]) == 10
    assert max(abs(x - y) for x, y in zip(a["train_loss"], b["train_loss"])) < 1e-5
    assert max(abs(x["val_loss"] - y["val_loss"]) for x, y in zip(a["evals"], b["evals"])) < 1e-5
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["best", "history.json", "last", "summary.json"]
    # the 2-rank checkpoint resumes under 1 rank, and under 2 ranks again
    more = ["--max-steps", "15", "--eval-interval", "5"]
    r1 = run_script(TRAIN, *FLAGS, *more, "--batch-size", "4", "--data", small_text, "--out-dir", tmp_path / "two", "--resume")
    assert r1.returncode == 0, r1.stderr
    r2 = torchrun(2, *FLAGS, "--max-steps", "20", "--eval-interval", "5", "--batch-size", "4", "--data", small_text,
                  "--out-dir", tmp_path / "two", "--resume", scratch=tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.count("resumed from") == 1 and r2.stdout.count("changed since the checkpoint") == 1  # rank 0's
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["steps"] == 20


def test_more_ranks_than_gpus_is_one_clear_error_before_the_process_group(monkeypatch):
    """torchrun --nproc_per_node=4 on a 2-GPU machine: rank 3 would fail in torch.cuda.set_device with a CUDA
    traceback (and leave the other ranks waiting for it); it says what to change instead."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(trainer.dist, "init_process_group", lambda *a, **k: pytest.fail("reached the process group"))
    with pytest.raises(UserError, match="local rank 3 on a machine with 2 CUDA GPU\\(s\\).*--nproc_per_node=2"):
        trainer.setup_distributed("auto")
