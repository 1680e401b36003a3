"""The shared training loop: learning, checkpoints, exact resume, NaN stop, accumulation, schedules."""
import hashlib
import json
import math
import sys

import pytest
import torch

import docs
from checkpoint import load_model
from common import UserError, run_cli
from conftest import run_script, tiny_model_config, tiny_train_config
from model import GPT
from trainer import TrainConfig, Trainer, lr_at, train


def test_tiny_model_learns_far_below_uniform_loss(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("to be or not to be, that is the question. " * 12)  # a few hundred characters
    summary = train(tiny_model_config(block_size=8), tiny_train_config(tmp_path / "run", text, max_steps=150,
                                                                        eval_interval=50, batch_size=8), log=lambda *_: None)
    vocab = summary["vocab_size"]
    assert summary["best_val_loss"] < 0.5 * math.log(vocab), summary["best_val_loss"]


def test_checkpoint_layout_summary_and_round_trip(tmp_path, small_text):
    out = tmp_path / "run"
    summary = train(tiny_model_config(pos="rope"), tiny_train_config(out, small_text), log=lambda *_: None)
    for path in ("best/model.safetensors", "best/config.json", "last/model.safetensors", "last/config.json",
                 "last/train_state.pt", "history.json", "summary.json"):
        assert (out / path).exists(), path
    for key in ("params", "steps", "best_val_loss", "best_step", "final_train_loss", "elapsed_s", "device", "dtype",
                "tokens_per_sec"):
        assert key in summary
    assert summary["steps"] == 20 and summary["tokens_per_sec"] > 0
    model, record = load_model(out / "last")
    assert record["step"] == 20 and record["tokenizer"]["type"] == "char"
    text = small_text.read_text(encoding="utf-8")  # which text, by content: a path says only where a file was
    assert record["data_text"] == summary["data_text"] == {"sha256": hashlib.sha256(text.encode()).hexdigest(),
                                                           "chars": len(text)}
    assert model.tokenizer.decode(model.tokenizer.encode("ROMEO:")) == "ROMEO:"
    # reloading the saved weights gives the same function
    model2, _ = load_model(out / "last")
    idx = torch.randint(0, model.config.vocab_size, (2, 16))
    assert torch.equal(model(idx)[0], model2(idx)[0])
    assert model2.lm_head.weight is model2.tok_emb.weight
    history = json.loads((out / "history.json").read_text())
    assert [e["step"] for e in history["evals"]] == [0, 10, 20] and len(history["train_loss"]) == 20


def test_resume_is_exact(tmp_path, small_text):
    quiet = lambda *_: None  # noqa: E731
    straight = train(tiny_model_config(dropout=0.1), tiny_train_config(tmp_path / "a", small_text), log=quiet)
    train(tiny_model_config(dropout=0.1), tiny_train_config(tmp_path / "b", small_text, max_steps=10), log=quiet)
    resumed = train(tiny_model_config(dropout=0.1), tiny_train_config(tmp_path / "b", small_text, resume=True), log=quiet)
    a = json.loads((tmp_path / "a" / "history.json").read_text())
    b = json.loads((tmp_path / "b" / "history.json").read_text())
    assert a["train_loss"] == b["train_loss"]
    assert [e["val_loss"] for e in a["evals"]] == [e["val_loss"] for e in b["evals"]]
    assert straight["final_train_loss"] == resumed["final_train_loss"]


def test_resume_with_changed_flags_says_so_and_trains_with_them(tmp_path, small_text):
    out = tmp_path / "run"
    train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=10, weight_decay=0.01), log=lambda *_: None)
    lines = []
    trainer = Trainer(tiny_model_config(), tiny_train_config(out, small_text, max_steps=12, weight_decay=0.3,
                                                             resume=True), log=lines.append)
    # the optimizer state saved at step 10 carried decay 0.01; the flag of this run is the one used
    assert {group["weight_decay"] for o in trainer.optimizers for group in o.param_groups} == {0.3}
    assert "changed since the checkpoint: max_steps: 10 -> 12, weight_decay: 0.01 -> 0.3" in lines
    # a run that decays the matrices only keeps its norms and biases undecayed when it resumes
    scoped = tmp_path / "scoped"
    train(tiny_model_config(), tiny_train_config(scoped, small_text, max_steps=10, weight_decay=0.3,
                                                 weight_decay_on="matrices"), log=lambda *_: None)
    trainer = Trainer(tiny_model_config(), tiny_train_config(scoped, small_text, max_steps=12, weight_decay=0.3,
                                                             weight_decay_on="matrices", resume=True), log=lambda *_: None)
    assert [group["weight_decay"] for group in trainer.optimizers[0].param_groups] == [0.3, 0.0]
    # and Muon's products take the precision of the resumed run, not the one its state was saved in
    muon_run = tmp_path / "muon"
    train(tiny_model_config(), tiny_train_config(muon_run, small_text, max_steps=10, optimizer="muon"),
          log=lambda *_: None)
    trainer = Trainer(tiny_model_config(), tiny_train_config(muon_run, small_text, max_steps=12, optimizer="muon",
                                                             dtype="bf16", resume=True), log=lambda *_: None)
    assert trainer.optimizers[0].param_groups[0]["ns_dtype"] == "bf16"
    same = []
    Trainer(tiny_model_config(), tiny_train_config(out, small_text, max_steps=10, resume=True), log=same.append)
    assert not any(line.startswith("changed since") for line in same)
    # a resumed run continues the checkpoint's random streams: another --seed is said to be unused, and not recorded
    reseeded = []
    trainer = Trainer(tiny_model_config(), tiny_train_config(out, small_text, max_steps=10, seed=7, resume=True),
                      log=reseeded.append)
    assert trainer.tc.seed == 0 and any(line.startswith("--seed 7 is not used") for line in reseeded)
    # and it keeps its tokenizer: another --tokenizer is said to be unused, not claimed as changed nor recorded
    retokenized = []
    trainer = Trainer(tiny_model_config(), tiny_train_config(out, small_text, max_steps=10, tokenizer="bpe:300",
                                                             resume=True), log=retokenized.append)
    assert trainer.tc.tokenizer == "char" and trainer.tokenizer.name == "char"
    assert any(line.startswith("--tokenizer bpe:300 is not used") for line in retokenized)
    assert not any(line.startswith("changed since") for line in retokenized)


def test_a_resumed_run_reports_the_speed_of_the_whole_run(tmp_path, small_text):
    """Resuming a finished run (nothing left to train) says so and keeps its summary; it wrote one with 0 tokens/s
    and this process's machine and date. A checkpoint saved before the timing and the machines were kept still resumes."""
    out = tmp_path / "run"
    first = train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=10), log=lambda *_: None)
    assert first["tokens_per_sec"] > 0
    lines = []
    again = train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=10, resume=True), log=lines.append)
    assert again == first  # the finished run's record as it was (machine, speed, date), not this process's
    assert "nothing to train: the checkpoint is at step 10 and --max-steps is 10 (a larger --max-steps trains on)" in lines
    state = torch.load(out / "last" / "train_state.pt", weights_only=True)
    for key in ("timed_tokens", "timed_s"):
        del state[key]
    torch.save(state, out / "last" / "train_state.pt")
    record = json.loads((out / "last" / "config.json").read_text())
    del record["machines"]
    (out / "last" / "config.json").write_text(json.dumps(record))
    longer = train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=20, resume=True),
                   log=lambda *_: None)
    assert longer["steps"] == 20 and longer["tokens_per_sec"] > 0
    assert longer["machines"] == first["machines"]  # its checkpoint's machine, from step 0


def test_a_run_resumed_on_another_machine_names_each_machine_and_its_steps(tmp_path, small_text, monkeypatch):
    """A run --resume moves to another machine (a Colab session on another GPU) says so, and its record and the docs'
    'measured on' name every machine with the steps it took, not the last one alone. Resuming on the same machine
    adds none. A damaged list of machines in last/'s config.json is refused in one line."""
    import trainer
    out = tmp_path / "run"
    first = train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=10), log=lambda *_: None)
    here = first["machines"][0]
    assert first["machines"] == [{"hardware": first["hardware"], "device": "cpu", "dtype": first["dtype"],
                                  "compiled": first["compiled"], "from_step": 0}]
    monkeypatch.setattr(trainer, "describe_hardware", lambda device: "Another CPU (avx2), 2 threads")
    lines = []
    moved = train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=20, resume=True), log=lines.append)
    assert any(line.startswith(f"this run trained on another machine until step 10 ({first['hardware']}") for line in lines)
    again = train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=30, resume=True), log=lines.append)
    other = {**here, "hardware": "Another CPU (avx2), 2 threads", "from_step": 10}
    assert moved["machines"] == again["machines"] == [here, other]  # the same machine again added none
    shown = docs.measured_on(again)
    assert shown.startswith(f"steps 0–10: {first['hardware']}, {first['dtype']}; steps 10–30: Another CPU (avx2), "
                            f"2 threads, {first['dtype']}, ")
    record = json.loads((out / "last" / "config.json").read_text())
    record["machines"][1]["from_step"] = 40  # after the checkpoint's own step
    (out / "last" / "config.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="damaged.*from_step"):
        train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=40, resume=True), log=lambda *_: None)


def test_ctrl_c_says_which_step_last_holds_and_resume_continues_from_it(tmp_path, small_text, monkeypatch, capsys):
    out = tmp_path / "run"
    steps = []
    real_step = Trainer.train_step

    def step_then_ctrl_c(self):
        steps.append(self.progress.step)
        if len(steps) == 15:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: train(tiny_model_config(), tiny_train_config(out, small_text), log=lambda *_: None))
    assert exit_.value.code == 130
    assert capsys.readouterr().err == f"interrupted at step 14; {out / 'last'} holds step 10: continue with --resume\n"
    monkeypatch.setattr(Trainer, "train_step", real_step)
    lines = []
    train(tiny_model_config(), tiny_train_config(out, small_text, resume=True), log=lines.append)
    assert "resumed from " + str(out / "last") + " at step 10" in lines


def test_sigterm_stops_like_ctrl_c_saying_what_was_kept(tmp_path, small_text, monkeypatch, capsys):
    """A cluster's preemption, `timeout` or `docker stop` sends SIGTERM: it died mid-step without a word. Now it
    says which step last/ holds, with status 143 (128 + SIGTERM), and the handler before it comes back after."""
    import os
    import signal
    out, real_step = tmp_path / "run", Trainer.train_step

    def step_then_sigterm(self):
        if self.progress.step == 14:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to the handler run_cli installed, as from outside
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: train(tiny_model_config(), tiny_train_config(out, small_text), log=lambda *_: None))
    assert exit_.value.code == 143 and signal.getsignal(signal.SIGTERM) is before
    assert capsys.readouterr().err == f"terminated at step 14; {out / 'last'} holds step 10: continue with --resume\n"


def test_best_checkpoint_is_never_overwritten_by_a_worse_last(tmp_path, small_text):
    # a learning rate that first helps, then blows the model up, keeps best/ at the good step
    summary = train(tiny_model_config(), tiny_train_config(tmp_path / "run", small_text, max_steps=30, eval_interval=10),
                    log=lambda *_: None)
    best_record = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert best_record["step"] == summary["best_step"]
    assert best_record["val_loss"] == summary["best_val_loss"]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, small_text):
    out = tmp_path / "run"
    train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=10), log=lambda *_: None)
    before = (out / "last" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match=r"diverged: loss is (nan|inf) at step \d+.*step 10\) is intact"):
        train(tiny_model_config(), tiny_train_config(out, small_text, max_steps=40, lr=1e12, resume=True),
              log=lambda *_: None)
    assert (out / "last" / "model.safetensors").read_bytes() == before
    load_model(out / "last")


def test_gradient_accumulation_gives_the_same_gradients_as_one_big_batch():
    torch.manual_seed(0)
    model = GPT(tiny_model_config())
    x, y = torch.randint(0, 65, (16, 16)), torch.randint(0, 65, (16, 16))
    model(x, y)[1].backward()
    big = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for i in range(4):
        (model(x[4 * i:4 * i + 4], y[4 * i:4 * i + 4])[1] / 4).backward()
    for g_big, p in zip(big, model.parameters()):
        assert torch.allclose(g_big, p.grad, atol=1e-5)


def test_grad_accum_run_matches_one_big_batch_run(tmp_path, small_text):
    quiet = lambda *_: None  # noqa: E731
    big = train(tiny_model_config(), tiny_train_config(tmp_path / "a", small_text, batch_size=16, max_steps=5,
                                                       eval_interval=5), log=quiet)
    acc = train(tiny_model_config(), tiny_train_config(tmp_path / "b", small_text, batch_size=4, grad_accum=4,
                                                       max_steps=5, eval_interval=5), log=quiet)
    assert abs(big["final_train_loss"] - acc["final_train_loss"]) < 1e-5
    a = json.loads((tmp_path / "a" / "history.json").read_text())["train_loss"]
    b = json.loads((tmp_path / "b" / "history.json").read_text())["train_loss"]
    assert max(abs(u - v) for u, v in zip(a, b)) < 1e-5


def test_bits_per_char_of_a_char_run_is_loss_over_ln2(tmp_path, small_text):
    train(tiny_model_config(), tiny_train_config(tmp_path / "run", small_text, max_steps=10), log=lambda *_: None)
    for e in json.loads((tmp_path / "run" / "history.json").read_text())["evals"]:
        assert e["val_bpc"] == e["val_loss"] / math.log(2)


def test_lr_schedule_warmup_and_cosine():
    tc = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, schedule="cosine", max_steps=110)
    assert lr_at(0, tc) == pytest.approx(1e-4) and lr_at(9, tc) == pytest.approx(1e-3)
    assert lr_at(60, tc) == pytest.approx(5.5e-4) and lr_at(110, tc) == pytest.approx(1e-4)
    assert lr_at(50, TrainConfig(lr=3e-4)) == 3e-4


def test_warmup_stable_decay_holds_the_peak_then_falls_linearly_to_zero():
    tc = TrainConfig(lr=1e-3, warmup_steps=10, schedule="wsd", decay_fraction=0.25, max_steps=100)
    assert lr_at(0, tc) == pytest.approx(1e-4) and lr_at(9, tc) == pytest.approx(1e-3)
    assert [lr_at(s, tc) for s in (10, 50, 75)] == [1e-3] * 3  # stable until the last quarter
    assert lr_at(80, tc) == pytest.approx(0.8e-3) and lr_at(99, tc) == pytest.approx(0.04e-3)
    assert lr_at(100, tc) == 0.0  # zero at the end
    decay = [lr_at(s, tc) for s in range(75, 101)]
    assert all(b < a for a, b in zip(decay, decay[1:])) and max(abs((a - b) - 0.04e-3) for a, b in zip(decay, decay[1:])) < 1e-12


def test_wsd_decay_follows_the_clock_when_max_time_comes_first():
    tc = TrainConfig(lr=1e-3, warmup_steps=10, schedule="wsd", decay_fraction=0.25, max_steps=100, max_time=60.0)
    # plenty of time left: exactly the step-counted schedule
    assert [lr_at(s, tc, time_left=1.0 - s / 200) for s in range(101)] == [lr_at(s, tc) for s in range(101)]
    # the clock comes first: stable until a quarter of the time is left, then linearly to zero with the time
    assert lr_at(40, tc, time_left=0.3) == 1e-3 and lr_at(40, tc, time_left=0.125) == pytest.approx(0.5e-3)
    assert lr_at(40, tc, time_left=0.0) == 0.0 and lr_at(40, tc, time_left=-0.01) == 0.0
    assert lr_at(5, tc, time_left=0.1) == pytest.approx(0.6e-3)  # warmup is counted in steps, never cut


def fake_clock(monkeypatch, seconds_per_step: float):
    """The trainer's clock made a function of its step count: time-budget tests that no busy machine can change."""
    from trainer import Trainer
    monkeypatch.setattr(Trainer, "elapsed", lambda self: self.progress.step * seconds_per_step)


def test_max_time_stops_the_run_with_its_decay_finished(tmp_path, small_text, monkeypatch):
    fake_clock(monkeypatch, 0.01)  # 100 steps fill the 1 s budget, long before max_steps
    summary = train(tiny_model_config(), tiny_train_config(tmp_path / "run", small_text, max_steps=1000,
                                                           eval_interval=50, schedule="wsd", decay_fraction=0.2,
                                                           lr=1e-3, max_time=1.0), log=lambda *_: None)
    assert summary["steps"] == 100
    lrs = {e["step"]: e["lr"] for e in json.loads((tmp_path / "run" / "history.json").read_text())["evals"]}
    assert lrs[50] == 1e-3  # stable until the last 20% of the time
    assert lrs[100] == pytest.approx(0.05e-3)  # the last step ran at 1/20 of the peak: the decay is complete


def test_a_time_budget_that_never_binds_changes_nothing(tmp_path, small_text, monkeypatch):
    quiet = lambda *_: None  # noqa: E731
    config = dict(max_steps=40, eval_interval=20, schedule="wsd", decay_fraction=0.5, lr=1e-3)
    train(tiny_model_config(), tiny_train_config(tmp_path / "a", small_text, **config), log=quiet)
    fake_clock(monkeypatch, 0.001)  # 40 steps use 4% of the budget
    train(tiny_model_config(), tiny_train_config(tmp_path / "b", small_text, **config, max_time=1.0), log=quiet)
    a, b = (json.loads((tmp_path / run / "history.json").read_text()) for run in "ab")
    assert a["train_loss"] == b["train_loss"] and a["evals"][-1]["val_loss"] == b["evals"][-1]["val_loss"]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_weight_decay_on_matrices_leaves_norms_and_biases_alone(optimizer):
    """One step on zero gradients is decay alone: with --weight-decay-on matrices every 2-D weight shrinks by
    lr x decay and every norm gain and bias stays as it was; with all (the default) they shrink too."""
    from trainer import build_optimizers
    for scope in ("matrices", "all"):
        torch.manual_seed(0)
        model = GPT(tiny_model_config())  # vanilla: LayerNorm gains and biases, learned positions
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        tc = TrainConfig(optimizer=optimizer, lr=0.1, weight_decay=0.5, weight_decay_on=scope)
        optimizers = build_optimizers(model, tc, torch.device("cpu"))
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        for o in optimizers:
            o.step()
        for name, p in model.named_parameters():
            decayed = p.ndim >= 2 or scope == "all"
            expected = before[name] * (1 - 0.1 * 0.5) if decayed else before[name]
            assert torch.allclose(p.detach(), expected, atol=1e-7), (scope, name)
        assert any(p.ndim < 2 and p.abs().sum() > 0 for p in model.parameters())  # the 1-D case was really tested


def test_muon_orthogonalises_the_update_of_the_hidden_matrices_only():
    """One Muon step on a gradient whose singular values spread over 100x: the update's are all near 1."""
    from trainer import build_optimizers
    torch.manual_seed(0)
    model = GPT(tiny_model_config())
    muon, adamw = build_optimizers(model, TrainConfig(optimizer="muon", lr=0.01, weight_decay=0.0), torch.device("cpu"))
    weight = model.blocks[0].ffn.up.weight  # (128, 32)
    assert {id(p) for g in muon.param_groups for p in g["params"]} == {
        id(p) for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2}
    assert any(p is model.tok_emb.weight for g in adamw.param_groups for p in g["params"])
    u, _, v = torch.linalg.svd(torch.randn(128, 32), full_matrices=False)
    gradient = u @ torch.diag(torch.logspace(0, -2, 32)) @ v
    before = weight.detach().clone()
    weight.grad = gradient
    muon.step()
    step = 0.2 * 0.01 * math.sqrt(128)  # 0.2 * lr * sqrt(max(rows, cols)): AdamW's update RMS
    singular = torch.linalg.svdvals((before - weight.detach()) / step)
    assert singular.min() > 0.6 and singular.max() < 1.3, singular
    assert torch.allclose(torch.linalg.svdvals(gradient)[[0, -1]], torch.tensor([1.0, 1e-2]), rtol=1e-3)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_newton_schulz_gives_near_unit_singular_values_in_either_precision(dtype):
    from muon import orthogonalize
    torch.manual_seed(0)
    for shape in ((64, 32), (32, 96)):  # tall and wide
        u, _, v = torch.linalg.svd(torch.randn(*shape), full_matrices=False)
        spread = u @ torch.diag(torch.logspace(0, -2, min(shape))) @ v
        singular = torch.linalg.svdvals(orthogonalize(spread, dtype=dtype))
        assert singular.min() > 0.6 and singular.max() < 1.3, (shape, singular)


def test_muon_multiplies_in_bf16_only_where_the_run_trains_in_bf16(monkeypatch):
    """bf16 Newton-Schulz for a bf16 run (auto on a CPU with native bf16, or asked for); fp32 where bf16 would be
    emulated, and for a run asked for in fp32 (the 2-rank test relies on it: there bf16 rounding turned the
    fp32 rounding between an all-reduced and a one-rank gradient into loss differences of 1e-5 on an AMX Xeon)."""
    import device
    from trainer import build_optimizers
    model = GPT(tiny_model_config())
    for flags, dtype, expected in (({"avx2"}, "auto", "fp32"), ({"avx2", "avx512_bf16"}, "auto", "bf16"),
                                   ({"avx2", "amx_bf16"}, "fp32", "fp32"), ({"avx2", "avx512_bf16"}, "bf16", "bf16")):
        monkeypatch.setattr(device, "cpu_flags", lambda: set(flags))
        monkeypatch.setattr(device, "bf16_matmul_speedup", lambda: 0.01)
        muon, _ = build_optimizers(model, TrainConfig(optimizer="muon", dtype=dtype), torch.device("cpu"))
        assert muon.param_groups[0]["ns_dtype"] == expected, (flags, dtype)


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_resume_is_exact_with_each_optimizer_and_the_wsd_schedule(tmp_path, small_text, monkeypatch, optimizer):
    """A run killed right after its step-10 checkpoint, then resumed, ends exactly like an uninterrupted one
    (optimizer states, Muon's momentum included, and the schedule's position survive)."""
    import trainer
    quiet = lambda *_: None  # noqa: E731
    kw = dict(optimizer=optimizer, schedule="wsd", decay_fraction=0.5)
    straight = train(tiny_model_config(dropout=0.1), tiny_train_config(tmp_path / "a", small_text, **kw), log=quiet)
    real_save = trainer.Trainer.save

    def save_then_die(self, *args):
        real_save(self, *args)
        if self.progress.step == 10:
            raise KeyboardInterrupt  # killed right after the checkpoint

    monkeypatch.setattr(trainer.Trainer, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model_config(dropout=0.1), tiny_train_config(tmp_path / "b", small_text, **kw), log=quiet)
    monkeypatch.undo()
    other = "adamw" if optimizer == "muon" else "muon"
    with pytest.raises(UserError, match="optimizer"):  # a checkpoint of the other optimizer does not resume
        train(tiny_model_config(dropout=0.1), tiny_train_config(tmp_path / "b", small_text, resume=True,
                                                                **{**kw, "optimizer": other}), log=quiet)
    resumed = train(tiny_model_config(dropout=0.1), tiny_train_config(tmp_path / "b", small_text, resume=True, **kw),
                    log=quiet)
    assert straight["final_train_loss"] == resumed["final_train_loss"]
    a, b = (json.loads((tmp_path / run / "history.json").read_text()) for run in ("a", "b"))
    assert a["train_loss"] == b["train_loss"]


def test_fused_adamw_takes_the_steps_of_the_per_tensor_adamw():
    """build_optimizers uses the fused AdamW kernel on the CPU: the same update as PyTorch's reference one."""
    torch.manual_seed(0)
    models = [GPT(tiny_model_config()) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    start = models[0].tok_emb.weight.detach().clone()
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1, fused=fused)
                  for m, fused in zip(models, (True, False))]
    x = torch.randint(0, 65, (4, 16))
    for _ in range(3):
        for model, optimizer in zip(models, optimizers):
            model(x, x)[1].backward()
            optimizer.step()
            optimizer.zero_grad()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert (models[0].tok_emb.weight - start).abs().max() > 1e-3  # the steps did move the weights


ALLOCATE_AND_FREE = """
import ctypes, sys
sys.path.insert(0, "src")
from device import keep_freed_memory
class MallInfo2(ctypes.Structure):  # glibc's mallinfo2(), in bytes
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = MallInfo2, ctypes.c_void_p, [ctypes.c_void_p]
if sys.argv[1] == "kept":
    assert keep_freed_memory()
before = libc.mallinfo2()
block = libc.malloc(16 << 20)  # an activation-sized block
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print((during.hblkhd - before.hblkhd) >> 20, (after.arena - before.arena) >> 20)  # MiB mapped apart, MiB kept
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_cpu_trainer_reuses_the_memory_a_step_frees(tmp_path, small_text, monkeypatch):
    """A CPU Trainer sets device.keep_freed_memory. By glibc's defaults an activation-sized block gets pages of its
    own from the kernel and gives them back when freed, so the next step faults them in again; with the setting it
    comes from the heap and stays there when freed, to be handed out again (glibc's own accounting, in fresh
    processes; the page faults themselves vary with the kernel's huge pages and reclaim)."""
    import trainer
    calls = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append(True))
    trainer.Trainer(tiny_model_config(), tiny_train_config(tmp_path / "run", small_text), log=lambda *_: None)
    assert calls
    mapped_apart, kept = zip(*(map(int, run_script("-c", ALLOCATE_AND_FREE, mode).stdout.split())
                               for mode in ("default", "kept")))
    assert mapped_apart == (16, 0) and kept[1] >= 8, (mapped_apart, kept)


def test_the_evaluation_batch_size_picks_the_windows_a_run_is_evaluated_on(tmp_path, small_text):
    """The evaluation draws batch_size windows per batch, so a run of another batch size is evaluated on other text;
    --eval-batch-size gives it the windows of the batch size named. Step 0 (the same initial weights for one seed)
    shows it exactly."""
    def first_val(name: str, **overrides) -> float:
        train(tiny_model_config(), tiny_train_config(tmp_path / name, small_text, max_steps=1, eval_interval=1,
                                                     **overrides), log=lambda *_: None)
        return json.loads((tmp_path / name / "history.json").read_text())["evals"][0]["val_loss"]

    eight = first_val("batch8", batch_size=8)
    assert first_val("batch4-eval8", batch_size=4, eval_batch_size=8) == eight
    assert first_val("batch4", batch_size=4) != eight
