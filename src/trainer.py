"""The one training loop every script uses (vanilla, modern, BPE, the swap experiments, Colab).

What it does, in order: pick device and precision, load and split the data, build the model, then loop
over steps (sample a batch, forward/backward over `grad_accum` micro-batches, clip, AdamW step), evaluate
every `eval_interval` steps on fixed batches of both splits, save `last/` (and `best/` on improvement),
stop early after `patience` evaluations without improvement, and write `summary.json`.

Everything random flows from `--seed` through generators whose states are checkpointed, so a run that is
killed and resumed with `--resume` reproduces the uninterrupted run bit for bit on the CPU. Under
`torchrun` the same loop runs DistributedDataParallel: each rank takes its slice of one global batch.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from checkpoint import (CONFIG, architecture_name, load_state_into, load_train_state, load_weights, read_config,
                        recover, save_checkpoint)
from common import UserError, atomic_write_json, check_writable
from device import autocast, describe_hardware, pick_device, resolve_dtype, synchronize
from model import GPT, GPTConfig
from tokenizer import build_tokenizer, encode_corpus, get_batch, load_text, sample_starts, tokenizer_from_dict, \
    train_val_split

WARMUP_STEPS_UNTIMED = 3  # first steps (allocation, autotuning, compilation) left out of tokens/s


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings; the defaults are the reference vanilla run."""

    max_steps: int = 5000
    batch_size: int = 64          # per rank, per micro-step
    grad_accum: int = 1           # micro-steps per optimizer step
    lr: float = 3e-4
    schedule: str = "constant"    # constant | cosine (with linear warmup)
    warmup_steps: int = 0
    min_lr: float = 3e-5          # floor of the cosine schedule
    weight_decay: float = 0.01    # torch's AdamW default
    grad_clip: float = 0.0        # 0 = off
    eval_interval: int = 500
    eval_iters: int = 200
    patience: int = 0             # evaluations without improvement before stopping; 0 = never stop early
    max_time: float = 0.0         # seconds of wall clock (evaluations included) before stopping; 0 = no limit
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    tokenizer: str = "char"
    data: str | None = None
    out_dir: str = "checkpoints/vanilla"
    resume: bool = False
    sample_tokens: int = 300      # sample printed by the scripts at the end

    def validate(self) -> None:
        positive = ("max_steps", "batch_size", "grad_accum", "eval_interval", "eval_iters")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "patience", "sample_tokens"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise UserError(f"--lr must be a positive number, got {self.lr}")
        if self.grad_clip < 0 or self.weight_decay < 0 or self.max_time < 0:
            raise UserError("--grad-clip, --weight-decay and --max-time must be >= 0")
        if self.schedule not in ("constant", "cosine"):
            raise UserError(f"--schedule must be constant or cosine, got {self.schedule!r}")


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warmup, then constant or cosine decay to min_lr at max_steps."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.schedule == "constant":
        return tc.lr
    progress = (step - tc.warmup_steps) / max(1, tc.max_steps - tc.warmup_steps)
    return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- distributed

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed(device_flag: str) -> Dist:
    """Single process unless launched by torchrun (RANK/WORLD_SIZE set): then one device per rank,
    NCCL on CUDA and gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=pick_device(device_flag))
    device = pick_device(device_flag)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), device=device)


def mean_over_ranks(value: torch.Tensor, d: Dist) -> float:
    if d.world > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= d.world
    return value.item()


def out_of_time(elapsed_s: float, tc: TrainConfig, d: Dist) -> bool:
    """Has the run used up --max-time? Under DDP rank 0's clock decides for all, so every rank stops at the
    same step (a rank leaving the loop alone would hang the others' collectives)."""
    if tc.max_time <= 0 or d.world == 1:
        return 0 < tc.max_time <= elapsed_s
    flag = torch.tensor([float(elapsed_s >= tc.max_time)], device=d.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def estimate_loss(model, data: torch.Tensor, block_size: int, batch_size: int, iters: int, seed: int,
                  device, dtype: str, d: Dist) -> float:
    """Mean loss over `iters` batches drawn from a fixed seed: the same batches at every evaluation, so
    successive evaluations (and A/B arms) differ only by the model."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros((), device=device)
    for _ in range(iters):
        starts = sample_starts(len(data), block_size, batch_size * d.world, generator)
        x, y = get_batch(data, starts[d.rank * batch_size:(d.rank + 1) * batch_size], block_size)
        with autocast(device, dtype):
            total += model(x, y)[1].float()
    model.train(was_training)
    return mean_over_ranks(total / iters, d)


# ----------------------------------------------------------------------------- the loop

class Run:
    """State of one training run; `train()` below is the public entry point."""

    def __init__(self, model_config: GPTConfig, tc: TrainConfig, log=print):
        tc.validate()
        self.tc, self.log = tc, log
        self.d = setup_distributed(tc.device)
        self.device = self.d.device
        self.precision = resolve_dtype(tc.dtype, self.device)
        self.dtype = self.precision.dtype
        self.out_dir = Path(tc.out_dir)
        if self.d.master:
            check_writable(self.out_dir)
            recover(self.out_dir)
        self._prepare_data_and_model(model_config)

    # -- setup

    def _prepare_data_and_model(self, model_config: GPTConfig) -> None:
        tc = self.tc
        record = None
        if tc.resume:
            if not (self.out_dir / "last" / CONFIG).exists():
                raise UserError(f"--resume: no checkpoint in {self.out_dir / 'last'}; run once without --resume first")
            record = read_config(self.out_dir / "last")
        text = load_text(tc.data)
        self.tokenizer = tokenizer_from_dict(record["tokenizer"]) if record else build_tokenizer(tc.tokenizer, text)
        try:
            ids = encode_corpus(self.tokenizer, text)
        except ValueError as err:  # a resumed char vocab that lacks characters of this text
            raise UserError(f"the data does not fit the checkpoint's tokenizer: {err}") from None
        train_ids, val_ids = train_val_split(ids, model_config.block_size)
        self.chars_per_val_token = len(self.tokenizer.decode(val_ids.tolist())) / len(val_ids)
        self.train_data, self.val_data = train_ids.to(self.device), val_ids.to(self.device)

        model_config.vocab_size = self.tokenizer.vocab_size
        if record:
            saved = GPTConfig.from_dict(record["model"])
            diff = {k: (v, getattr(model_config, k)) for k, v in saved.to_dict().items()
                    if getattr(model_config, k) != v}
            if diff:
                shown = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in diff.items())
                raise UserError(f"--resume: the checkpoint's model config does not match this run ({shown}); "
                                "use the same flags or another --out-dir")
        torch.manual_seed(tc.seed)
        self.model = self._model_class(model_config)(model_config).to(self.device)
        self.model.tokenizer = self.tokenizer
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                                           fused=self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == "fp16")
        self.data_generator = torch.Generator().manual_seed(tc.seed)
        self.step, self.best_val, self.best_step, self.bad_evals = 0, float("inf"), 0, 0
        self.history = {"evals": [], "train_loss": []}
        self.elapsed_before, self.saved_step = 0.0, 0
        if record:
            self._restore(record)
        else:
            torch.manual_seed(tc.seed + self.d.rank)  # dropout stream per rank
        self.train_model = self.model
        if tc.compile:
            self.train_model = torch.compile(self.model)
        if self.d.world > 1:
            ddp_device = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.train_model, device_ids=ddp_device)

    @staticmethod
    def _model_class(config: GPTConfig):
        from model_modern import ModernGPT
        return ModernGPT if architecture_name(config) == "modern" else GPT

    def _restore(self, record: dict) -> None:
        folder = self.out_dir / "last"
        load_state_into(self.model, load_weights(folder), folder)
        state = load_train_state(folder)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.best_val, self.best_step = state["step"], state["best_val"], state["best_step"]
        self.bad_evals, self.history, self.elapsed_before = state["bad_evals"], state["history"], state["elapsed_s"]
        self.saved_step = self.step
        self.data_generator.set_state(state["data_rng"])
        rng = state["torch_rng"]
        torch.set_rng_state(rng[self.d.rank] if self.d.rank < len(rng) else rng[0])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        self.log(f"resumed from {folder} at step {self.step}")

    # -- saving

    def _record(self, evaluation: dict) -> dict:
        return {"step": self.step, "train_loss": evaluation["train_loss"], "val_loss": evaluation["val_loss"],
                "val_bpc": evaluation["val_bpc"], "device": str(self.device), "dtype": self.dtype,
                "dtype_reason": self.precision.reason,
                "hardware": describe_hardware(self.device), "train_config": asdict(self.tc),
                "elapsed_s": round(self.elapsed(), 1), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def _train_state(self) -> dict:
        rng = [torch.get_rng_state()]
        if self.d.world > 1:
            gathered = [None] * self.d.world
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                "best_val": self.best_val, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "history": self.history, "elapsed_s": self.elapsed(), "data_rng": self.data_generator.get_state(),
                "torch_rng": rng, "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None}

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    # -- one step

    def _train_step(self) -> float:
        tc, d = self.tc, self.d
        lr = lr_at(self.step, tc)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        block = self.model.config.block_size
        starts = sample_starts(len(self.train_data), block, tc.batch_size * d.world * tc.grad_accum,
                               self.data_generator)
        total = torch.zeros((), device=self.device)
        for micro in range(tc.grad_accum):
            first = (micro * d.world + d.rank) * tc.batch_size
            x, y = get_batch(self.train_data, starts[first:first + tc.batch_size], block)
            last_micro = micro == tc.grad_accum - 1
            sync = contextlib.nullcontext() if d.world == 1 or last_micro else self.train_model.no_sync()
            with sync:
                with autocast(self.device, self.dtype):
                    loss = self.train_model(x, y)[1] / tc.grad_accum
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if tc.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return mean_over_ranks(total, d)

    def _evaluate(self) -> dict:
        tc, block = self.tc, self.model.config.block_size
        args = (block, tc.batch_size, tc.eval_iters)
        train_loss = estimate_loss(self.model, self.train_data, *args, tc.seed + 1, self.device, self.dtype, self.d)
        val_loss = estimate_loss(self.model, self.val_data, *args, tc.seed + 2, self.device, self.dtype, self.d)
        return {"step": self.step, "train_loss": train_loss, "val_loss": val_loss,
                "val_bpc": val_loss / self.chars_per_val_token / math.log(2), "lr": lr_at(max(self.step - 1, 0), tc),
                "elapsed_s": round(self.elapsed(), 1)}

    def _after_eval(self, evaluation: dict) -> bool:
        """Record, save, and decide on early stopping. Returns True to stop."""
        self.history["evals"].append(evaluation)
        improved = evaluation["val_loss"] < self.best_val
        if self.step > 0:
            if improved:
                self.best_val, self.best_step, self.bad_evals = evaluation["val_loss"], self.step, 0
            else:
                self.bad_evals += 1
            state = self._train_state()  # collective under DDP: every rank takes part
            if self.d.master:
                self._save(evaluation, improved, state)
            self.saved_step = self.step
        return self.tc.patience > 0 and self.bad_evals >= self.tc.patience

    def _save(self, evaluation: dict, improved: bool, state: dict) -> None:
        record = self._record(evaluation)
        try:
            if improved:
                save_checkpoint(self.out_dir / "best", self.model, self.tokenizer, record)
            save_checkpoint(self.out_dir / "last", self.model, self.tokenizer, record, state)
            atomic_write_json(self.out_dir / "history.json", self.history)
        except OSError as err:
            kept = f"step {self.saved_step}" if self.saved_step else "none yet"
            raise UserError(f"could not save the checkpoint at step {self.step} in {self.out_dir} "
                            f"({err.strerror or err}); the previous checkpoint ({kept}) is intact; free disk "
                            "space or choose another --out-dir, then --resume") from None

    def _log_eval(self, e: dict, tokens_per_sec: float, bar) -> None:
        done = self.step - self.first_step
        seconds = time.perf_counter() - self.t_start
        eta = seconds / done * (self.tc.max_steps - self.step) if done else float("nan")
        msg = (f"step {e['step']:>5}/{self.tc.max_steps} | train {e['train_loss']:.4f} | val {e['val_loss']:.4f} | "
               f"val bpc {e['val_bpc']:.3f} | lr {e['lr']:.2e} | {tokens_per_sec:,.0f} tok/s | "
               f"{e['elapsed_s']:.0f}s elapsed, ETA {eta:.0f}s")
        if self.d.master:
            (bar.write if not bar.disable else self.log)(msg)

    # -- the loop

    def run(self) -> dict:
        tc, d = self.tc, self.d
        self.t_start = time.perf_counter()
        eff = tc.batch_size * d.world * tc.grad_accum
        if d.master:
            self.log(f"{architecture_name(self.model.config)} model, {self.model.num_params():,} params | "
                     f"{self.device} ({describe_hardware(self.device)}) | {self.dtype} ({self.precision.reason}) | tokenizer {self.tokenizer.name} "
                     f"({self.tokenizer.vocab_size}) | effective batch {eff} = {tc.batch_size} x {d.world} ranks x "
                     f"{tc.grad_accum} accum | {len(self.train_data):,}/{len(self.val_data):,} train/val tokens")
        tokens_per_step = eff * self.model.config.block_size
        timed_steps, timed_seconds, stopped_early, time_up = 0, 0.0, False, False
        # a live bar on a terminal; in a log file (nohup, CI, Colab cells) the eval lines carry the ETA instead
        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not (d.master and sys.stderr.isatty()),
                   dynamic_ncols=True, file=sys.stderr, unit="step")
        self.first_step = self.step
        if self.step == 0 and not self.history["evals"]:
            evaluation = self._evaluate()  # the untrained loss, ~ln(vocab): the start of every curve
            self._log_eval(evaluation, 0.0, bar)
            self._after_eval(evaluation)
        steps_this_process = 0
        while self.step < tc.max_steps:
            synchronize(self.device)
            t0 = time.perf_counter()
            try:
                loss = self._train_step()
            except torch.OutOfMemoryError:
                raise UserError(f"out of memory on {self.device} at --batch-size {tc.batch_size}; try --batch-size "
                                f"{max(1, tc.batch_size // 2)} --grad-accum {tc.grad_accum * 2} (same effective batch)") from None
            synchronize(self.device)
            steps_this_process += 1
            if steps_this_process > WARMUP_STEPS_UNTIMED:
                timed_steps, timed_seconds = timed_steps + 1, timed_seconds + time.perf_counter() - t0
            if not math.isfinite(loss):
                last = self.out_dir / "last"
                kept = f"the last good checkpoint {last} (step {self.saved_step}) is intact" \
                    if self.saved_step else "no checkpoint had been written yet"
                raise UserError(f"training diverged: loss is {loss} at step {self.step + 1}; {kept}; "
                                "lower --lr or set --grad-clip 1.0")
            self.step += 1
            self.history["train_loss"].append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if self.device.type == "mps" and self.step % 100 == 0:
                torch.mps.empty_cache()  # the original project's workaround for silent MPS memory growth
            time_up = out_of_time(self.elapsed(), tc, d)
            if self.step % tc.eval_interval == 0 or self.step == tc.max_steps or time_up:
                tps = tokens_per_step * timed_steps / timed_seconds if timed_seconds else 0.0
                evaluation = self._evaluate()
                self._log_eval(evaluation, tps, bar)
                if self._after_eval(evaluation):
                    stopped_early = True
                    if d.master:
                        bar.write(f"early stop: no improvement in {tc.patience} evaluations; best val "
                                  f"{self.best_val:.4f} at step {self.best_step}")
                    break
                if time_up:
                    if d.master:
                        bar.write(f"time limit: --max-time {tc.max_time:g} s used up at step {self.step}")
                    break
        bar.close()
        summary = self._summary(tokens_per_step * timed_steps / timed_seconds if timed_seconds else 0.0,
                                stopped_early, time_up)
        if d.master:
            atomic_write_json(self.out_dir / "summary.json", summary)
        return summary

    def _summary(self, tokens_per_sec: float, stopped_early: bool, time_up: bool) -> dict:
        last = self.history["evals"][-1]
        best = next((e for e in self.history["evals"] if e["step"] == self.best_step), last)
        return {"run": self.out_dir.name, "architecture": architecture_name(self.model.config),
                "params": self.model.num_params(), "steps": self.step, "best_val_loss": self.best_val,
                "best_val_bpc": best["val_bpc"], "best_step": self.best_step,
                "final_train_loss": self.history["train_loss"][-1] if self.history["train_loss"] else None,
                "final_val_loss": last["val_loss"], "stopped_early": stopped_early, "time_limit_reached": time_up,
                "elapsed_s": round(self.elapsed(), 1), "device": str(self.device), "dtype": self.dtype,
                "dtype_reason": self.precision.reason, "hardware": describe_hardware(self.device), "tokens_per_sec": round(tokens_per_sec, 1),
                "world_size": self.d.world, "effective_batch": self.tc.batch_size * self.d.world * self.tc.grad_accum,
                "tokenizer": self.tokenizer.name, "vocab_size": self.tokenizer.vocab_size,
                "chars_per_val_token": round(self.chars_per_val_token, 4),
                "model_config": self.model.config.to_dict(), "train_config": asdict(self.tc),
                "torch": torch.__version__, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def train(model_config: GPTConfig, tc: TrainConfig, log=print) -> dict:
    """Train a model; returns the summary (also written to <out_dir>/summary.json)."""
    try:
        return Run(model_config, tc, log).run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
