"""The one training loop every script uses (vanilla, modern, BPE, the swap experiments, Colab, the benchmark).

Read it top to bottom:
1. `TrainConfig`: every optimisation and bookkeeping setting, checked in one place.
2. Setup, as small functions that return what they build and change none of their inputs: the run folder is
   claimed (`claim_run_folder`: a lock, no overwrite without --resume or --overwrite), then the data
   (`prepare_data`), the model (`build_model`) and the optimizers (`build_optimizers`), and the progress so far
   (`Progress`: fresh, or restored from `last/` by `restore`).
3. `Trainer`: `train_step()` (one optimizer step: forward/backward over `grad_accum` micro-batches, clip, step),
   `evaluate()` (fixed batches of both splits), `save()` (`last/`, and `best/` on improvement), and `fit()`,
   the loop: step, evaluate every `eval_interval` steps, stop early after `patience` evaluations without
   improvement or at `max_time`, write `summary.json`.
4. `train()`: the public entry point, which holds the run folder's lock while it trains.

Everything random flows from `--seed` through generators whose states are checkpointed, so a run that is
killed and resumed with `--resume` reproduces the uninterrupted run bit for bit on the CPU. Under `torchrun`
the same loop runs DistributedDataParallel: each rank takes its slice of one global batch.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from checkpoint import (CONFIG, RunLock, check_machines, clear_run, existing_run, load_state_into,
                        load_train_state, load_weights, parameter_bytes, read_config, recover, save_checkpoint)
from checks import check_bool, check_choice, check_fits_in_memory, check_float, check_int, check_seed
from common import UserError, atomic_write_json, check_writable, read_json, repo_relative
from data import describe_text, encode_corpus, get_batch, load_text, sample_starts, train_val_split
from device import (Compile, Precision, autocast, describe_hardware, keep_freed_memory, pick_device, resolve_compile,
                    resolve_dtype, synchronize, torch_compile)
from model import GPT, GPTConfig
from muon import Muon
from tokenizer import build_tokenizer, tokenizer_from_dict

WARMUP_STEPS_UNTIMED = 3  # first steps (allocation, autotuning, compilation) left out of tokens/s
# The evaluation batches of the train and val splits: fixed, whatever --seed trains, so runs of different seeds (and
# every arm of an A/B test) are scored on the same text and their spread is the models', not the samples'.
EVAL_SEEDS = (1, 2)
SCHEDULES = ("constant", "cosine", "wsd")
OPTIMIZERS = ("adamw", "muon")
DECAY_SCOPES = ("all", "matrices")
MAX_WEIGHT = 1e4  # weights start at std 0.02; beyond this a run has diverged even if its loss still looks finite


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings; the defaults are the reference vanilla run."""

    max_steps: int = 5000
    batch_size: int = 64          # per rank, per micro-step
    grad_accum: int = 1           # micro-steps per optimizer step
    lr: float = 3e-4
    schedule: str = "constant"    # constant | cosine | wsd, each after a linear warmup
    warmup_steps: int = 0
    min_lr: float = 3e-5          # floor of the cosine schedule
    decay_fraction: float = 0.2   # wsd: the last fraction of max_steps (or of max_time), where lr falls linearly to 0
    optimizer: str = "adamw"      # adamw | muon (Muon for the blocks' matrices, AdamW for the rest)
    weight_decay: float = 0.01    # torch's AdamW default
    weight_decay_on: str = "all"  # all | matrices (the 2-D weights only: norms and biases undecayed)
    grad_clip: float = 0.0        # 0 = off
    eval_interval: int = 500
    eval_iters: int = 200
    eval_batch_size: int = 0      # windows per evaluation batch; 0 = batch_size (an A/B of batch sizes fixes one)
    patience: int = 0             # evaluations without improvement before stopping; 0 = never stop early
    max_time: float = 0.0         # seconds of wall clock, the last evaluation included, before stopping; 0 = no limit
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    compile: str = "auto"         # auto | on | off: torch.compile the training step (auto: see device.resolve_compile)
    tokenizer: str = "char"
    data: str | None = None
    out_dir: str = "checkpoints/vanilla"
    resume: bool = False
    overwrite: bool = False       # start over in an out_dir that holds a run (its checkpoints are deleted)
    sample_tokens: int = 300      # sample printed by the scripts at the end

    def validate(self) -> None:
        """Every field's type and range, named as its flag: a UserError on the first bad one."""
        flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
        for name, low, high in (("max_steps", 1, 10**9), ("batch_size", 1, 2**20), ("grad_accum", 1, 2**16),
                                ("eval_interval", 1, 10**9), ("eval_iters", 1, 10**6), ("eval_batch_size", 0, 2**20),
                                ("warmup_steps", 0, 10**9), ("patience", 0, 10**6), ("sample_tokens", 0, 10**6)):
            check_int(getattr(self, name), flag(name), low, high)
        check_float(self.lr, "--lr", above=0.0)
        check_float(self.min_lr, "--min-lr", minimum=0.0)
        if self.schedule == "cosine" and self.min_lr > self.lr:
            raise UserError(f"--min-lr ({self.min_lr:g}) must not exceed --lr ({self.lr:g})")
        check_float(self.decay_fraction, "--decay-fraction", above=0.0, maximum=1.0)
        check_choice(self.optimizer, "--optimizer", OPTIMIZERS)
        check_choice(self.weight_decay_on, "--weight-decay-on", DECAY_SCOPES)
        for name in ("weight_decay", "grad_clip", "max_time"):
            check_float(getattr(self, name), flag(name), minimum=0.0)
        check_choice(self.schedule, "--schedule", SCHEDULES)
        check_seed(self.seed)
        check_choice(self.compile, "--compile", ("auto", "on", "off"))
        for name in ("resume", "overwrite"):
            check_bool(getattr(self, name), flag(name))
        if self.resume and self.overwrite:
            raise UserError("--resume continues a run and --overwrite starts it over: choose one")
        if not str(self.out_dir).strip():  # Path("") is the working folder: the run would land among its files
            raise UserError("--out-dir is empty; name the run's folder, e.g. --out-dir checkpoints/my-run")

    def record(self) -> dict:
        """The config as checkpoints and results record it: paths relative to the repo, never a machine's folders."""
        return {**asdict(self), "out_dir": repo_relative(self.out_dir),
                "data": repo_relative(self.data) if self.data else None}


def lr_at(step: int, tc: TrainConfig, time_left: float = 1.0) -> float:
    """The learning rate of optimizer step `step` (0-based): a linear warmup, then
    - constant: lr;
    - cosine: from lr down to min_lr at max_steps, along half a cosine;
    - wsd (warmup-stable-decay): lr until the last `decay_fraction` of the run, then linearly to zero at its
      end. The long stable phase explores at full speed; the short decay settles into a minimum, and most of
      what the schedule gives comes from it. Unlike cosine, the stable phase does not depend on where the run
      will end, so the end can be set by the clock: with --max-time, the run ends at max_steps or when the
      time is up, whichever comes first, and the decay takes the last `decay_fraction` of whichever that is.
      `time_left` is the fraction of --max-time still left (1.0 without one). On a machine fast enough to
      finish its steps in time, the schedule is the step-counted one, bit for bit; on a slower one the decay
      still finishes, instead of being cut off in the middle when the time runs out."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.schedule == "constant":
        return tc.lr
    if tc.schedule == "wsd":
        decay_steps = max(1, round(tc.decay_fraction * tc.max_steps))
        return tc.lr * max(0.0, min(1.0, (tc.max_steps - step) / decay_steps, time_left / tc.decay_fraction))
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
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            raise UserError(f"torchrun started local rank {local_rank} on a machine with {gpus} CUDA GPU(s): one "
                            f"rank per GPU, so use --nproc_per_node={gpus} or fewer")
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


def fraction_of_time_left(elapsed_s: float, reserve_s: float, tc: TrainConfig, d: Dist) -> float:
    """The fraction of --max-time left once `reserve_s` (what the last evaluation took: the run ends with one) is
    set aside; 1.0 without --max-time, <= 0 when the run must stop. Under DDP rank 0's clock decides for all, so
    every rank uses the same learning rate and stops at the same step (a rank leaving the loop alone would hang
    the others' collectives)."""
    if tc.max_time <= 0:
        return 1.0
    left = 1.0 - (elapsed_s + reserve_s) / tc.max_time
    if d.world == 1:
        return left
    shared = torch.tensor([left], dtype=torch.float64, device=d.device)
    dist.broadcast(shared, src=0)
    return shared.item()


# ----------------------------------------------------------------------------- setup

@contextlib.contextmanager
def claim_run_folder(tc: TrainConfig, d: Dist):
    """Hold the run folder for the whole run (rank 0 writes; other ranks only read): a lock against a second
    run, leftovers of a crash recovered, and a refusal to replace an earlier run without --resume or --overwrite.
    A run that fails before writing anything leaves no folder behind."""
    if not d.master:
        yield
        return
    out_dir = Path(tc.out_dir)
    check_writable(out_dir)
    created = not out_dir.exists()
    try:
        with RunLock(out_dir):
            recover(out_dir)
            earlier = existing_run(out_dir)
            if tc.resume and not (out_dir / "last" / CONFIG).exists():
                raise UserError(f"--resume: no checkpoint in {out_dir / 'last'}; run once without --resume first")
            if earlier and not (tc.resume or tc.overwrite):
                raise UserError(f"{out_dir} already holds a run ({', '.join(earlier)}); continue it with --resume, "
                                "start it over with --overwrite, or choose another --out-dir")
            yield
    finally:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()


@dataclass
class Data:
    tokenizer: object
    train: torch.Tensor
    val: torch.Tensor
    chars_per_val_token: float  # converts a loss per token into bits per character
    text: dict  # which text this is ({"sha256", "chars"}): the records name it, a model card says what it learnt


def prepare_data(tc: TrainConfig, block_size: int, device, tokenizer_spec: dict | None = None) -> Data:
    """Read and encode the text (with the checkpoint's tokenizer when resuming), split it 90/10."""
    text = load_text(tc.data)
    tokenizer = tokenizer_from_dict(tokenizer_spec) if tokenizer_spec else build_tokenizer(tc.tokenizer, text)
    try:
        ids = encode_corpus(tokenizer, text)
    except ValueError as err:  # a resumed char vocab that lacks characters of this text
        raise UserError(f"the data does not fit the checkpoint's tokenizer: {err}") from None
    train_ids, val_ids = train_val_split(ids, block_size)
    chars_per_val_token = len(tokenizer.decode(val_ids.tolist())) / len(val_ids)
    return Data(tokenizer, train_ids.to(device), val_ids.to(device), chars_per_val_token, describe_text(text))


def model_differences(saved: dict, model_config: GPTConfig) -> dict:
    """{field: (saved value, this run's value)} for every model config field where a saved config differs."""
    return {k: (v, getattr(model_config, k)) for k, v in GPTConfig.from_dict(saved).to_dict().items()
            if getattr(model_config, k) != v}


def check_resume_matches(record: dict, model_config: GPTConfig) -> None:
    diff = model_differences(record["model"], model_config)
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in diff.items())
        raise UserError(f"--resume: the checkpoint's model config does not match this run ({shown}); "
                        "use the same flags or another --out-dir")


def changed_settings(saved: dict, tc: TrainConfig) -> str:
    """The training settings of this run that differ from those `saved` with the checkpoint, as "name: old -> new"
    (folder and resume flags left out). Changing them on --resume is allowed (longer runs extend --max-steps), but
    the run then is no longer the one its seed and first flags give, so it is said, not silent."""
    now = tc.record()
    return ", ".join(f"{name}: {saved[name]} -> {now[name]}" for name in now
                     if name not in ("out_dir", "resume", "overwrite") and name in saved and saved[name] != now[name])


def run_differences(saved_model: dict, saved_train: dict, model_config: GPTConfig, tc: TrainConfig,
                    saved_text: dict | None = None) -> str:
    """What a saved run (the model and training configs of its summary.json or config.json) trained differently from
    these configs, as "name: old -> new" ("" where nothing differs): whether a finished run is the one asked for
    (the Colab script skips its phase, an A/B experiment with --resume reuses it). Not vocab_size: the tokenizer
    sets it when a run starts. `saved_text`, the run's data_text where its record has one: a data file edited or
    replaced since, at the same path, is a difference too."""
    model = model_differences(saved_model, model_config)
    model.pop("vocab_size", None)
    shown = [f"{name}: {saved} -> {now}" for name, (saved, now) in model.items()]
    return ", ".join(filter(None, [*shown, text_difference(saved_text, tc), changed_settings(saved_train, tc)]))


def text_difference(saved_text: dict | None, tc: TrainConfig) -> str:
    """"training text: ..." where the text a run recorded (its data_text) is not the one `tc` reads now; "" where it
    is, or where the record has none (runs older than the field)."""
    if saved_text is None:
        return ""
    text = describe_text(load_text(tc.data))
    return "" if text == saved_text else (f"training text: other content at "
                                          f"{repo_relative(tc.data) if tc.data else 'the default path'} "
                                          f"(sha256 now {text['sha256'][:12]}...)")


def build_model(model_config: GPTConfig, tc: TrainConfig, device) -> GPT:
    """The model, initialised from --seed, after checking that training it fits in memory (weights, gradients and
    AdamW's two moments: 16 bytes per parameter, plus activations)."""
    c = model_config
    activations = 4 * 16 * tc.batch_size * c.block_size * c.n_layer * c.n_embd
    check_fits_in_memory(4 * parameter_bytes(c) + activations, f"training this model at --batch-size {tc.batch_size}",
                         "use a smaller model or --batch-size")
    torch.manual_seed(tc.seed)
    return GPT(c).to(device)


def fusible_components(config: GPTConfig) -> tuple[str, ...]:
    """The components eager PyTorch runs on a CPU as chains of element-wise ops, which torch.compile fuses."""
    return tuple(name for name, used in (("RMSNorm", config.norm == "rmsnorm"), ("RoPE", config.pos == "rope"),
                                         ("SwiGLU", config.ffn == "swiglu")) if used)


def build_optimizers(model: GPT, tc: TrainConfig, device) -> list[torch.optim.Optimizer]:
    """AdamW for every parameter, or with --optimizer muon: Muon (src/muon.py: momentum orthogonalised by
    Newton-Schulz) for the blocks' 2-D weight matrices and AdamW for the rest (the embedding, which is also the
    output layer, the position table, norms and biases). Muon's products run in bf16 when the run trains in bf16
    (torch.optim.Muon always uses bf16, which a CPU without AVX512_BF16 or AMX emulates a hundred times slower, and
    which `--dtype fp32` asks not to use: its rounding can turn the last bit of a gradient into a visible
    change of the update); its update scaling gives AdamW's RMS, so one --lr and --weight-decay serve both.
    --weight-decay-on says which parameters decay (decay_groups)."""
    fused = device.type in ("cpu", "cuda")  # one kernel for all tensors instead of several per tensor
    if tc.optimizer == "adamw":
        return [torch.optim.AdamW(decay_groups(list(model.parameters()), tc), lr=tc.lr, fused=fused)]
    hidden = [p for name, p in model.named_parameters() if p.ndim == 2 and name.startswith("blocks.")]
    hidden_ids = {id(p) for p in hidden}
    rest = [p for p in model.parameters() if id(p) not in hidden_ids]
    ns_dtype = "bf16" if resolve_dtype(tc.dtype, device).dtype == "bf16" else "fp32"
    return [Muon(hidden, lr=tc.lr, weight_decay=tc.weight_decay, ns_dtype=ns_dtype),
            torch.optim.AdamW(decay_groups(rest, tc), lr=tc.lr, fused=fused)]


def decay_groups(params: list[torch.Tensor], tc: TrainConfig) -> list[dict]:
    """AdamW's parameter groups: `all` decays every parameter (one group, torch's default); `matrices` only the
    2-D ones (linear layers and the embedding), as nanoGPT and most LLM code do: decay pulls a norm's gains and
    the biases toward zero, where a gain of zero switches its features off, while what decay is for, keeping the
    weight matrices small, concerns only the matrices. At the CPU recipe it made no difference beyond the seed
    spread (experiments/swap9_decay.py), so `all` stays the default."""
    if tc.weight_decay_on == "all":
        return [{"params": params, "weight_decay": tc.weight_decay}]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": tc.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


@dataclass
class Progress:
    """Where a run stands: what a checkpoint's train_state.pt saves and --resume restores (with the RNGs)."""

    step: int = 0
    best_val: float = math.inf
    best_step: int = 0
    bad_evals: int = 0  # evaluations since the last improvement
    history: dict = field(default_factory=lambda: {"evals": [], "train_loss": []})
    elapsed_before: float = 0.0  # seconds spent by earlier processes of this run
    saved_step: int = 0  # step of the last checkpoint on disk (0: none yet)
    # the tokens of the steps timed for tokens/s and their seconds, over every process of the run: a resumed run
    # reports the speed of the whole run, and one resumed with no step left to take keeps the speed it had
    timed_tokens: int = 0
    timed_s: float = 0.0
    # the machines the run trained on, each from the step where it took over: one, unless --resume moved the run
    # (a Colab session reconnected to another GPU, a laptop run finished on a server), so its record names them all;
    # saved in each checkpoint's config.json (where the model card reads it), not in train_state.pt
    machines: list = field(default_factory=list)


# ----------------------------------------------------------------------------- the trainer

def machine_of(record: dict, from_step: int) -> dict:
    """One entry of Progress.machines, from a checkpoint's record (or Trainer.record_of_setup)."""
    return {"hardware": record["hardware"], "device": record["device"], "dtype": record["dtype"],
            "compiled": record["compiled"], "from_step": from_step}


def same_machine(a: dict, b: dict) -> bool:
    return all(a[key] == b[key] for key in ("hardware", "device", "dtype", "compiled"))


def describe_machine(machine: dict) -> str:
    return f"{machine['hardware']}, {machine['dtype']}{', compiled' if machine['compiled'] else ''}"


def describe_machines(machines: list[dict], last_step: int) -> str:
    """A run's machines with the steps each took ('steps 0–2500: ...; steps 2500–5000: ...'); '' for one machine,
    which the record's own hardware, dtype and compiled fields describe."""
    if len(machines) < 2:
        return ""
    ends = [m["from_step"] for m in machines[1:]] + [last_step]
    return "; ".join(f"steps {m['from_step']}–{end}: {describe_machine(m)}" for m, end in zip(machines, ends))


# settings a resumed run takes from its checkpoint whatever the flags say, and why
KEPT_ON_RESUME = {"seed": "continues its checkpoint's random streams",
                  "tokenizer": "encodes the data with its checkpoint's tokenizer, the vocabulary its model was built on"}


class Trainer:
    """Set up by __init__ (the functions above); then `fit()`, or `train_step()` alone (the benchmark)."""

    def __init__(self, model_config: GPTConfig, tc: TrainConfig, log=print, d: Dist | None = None):
        tc.validate()
        self.tc = tc
        self.d = d or setup_distributed(tc.device)
        self.log = log if self.d.master else lambda *_: None  # one rank speaks for all
        self.device = self.d.device
        if self.device.type == "cpu":
            keep_freed_memory()  # each step reuses the pages the last one freed instead of faulting in new ones
        self.precision: Precision = resolve_dtype(tc.dtype, self.device)
        self.dtype = self.precision.dtype
        self.out_dir = Path(tc.out_dir)
        record = read_config(self.out_dir / "last") if tc.resume else None
        self.data = prepare_data(tc, model_config.block_size, self.device, record and record.get("tokenizer"))
        self.tokenizer = self.data.tokenizer
        self.config = replace(model_config, vocab_size=self.tokenizer.vocab_size)
        if record:
            check_resume_matches(record, self.config)
        self.model = build_model(self.config, tc, self.device)
        self.model.tokenizer = self.tokenizer
        self.optimizers = build_optimizers(self.model, tc, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == "fp16")
        self.data_generator = torch.Generator().manual_seed(tc.seed)
        self.progress = Progress()
        if record:
            self.restore(record)
        else:
            torch.manual_seed(tc.seed + self.d.rank)  # dropout stream per rank
        self.train_model = self.model
        # decided on the whole run's length, so that a resumed run computes its steps the way it began them
        self.compiled: Compile = resolve_compile(tc.compile, self.device, tc.max_steps, self.d.world,
                                                 fusible_components(self.config), tc.max_time)
        if self.compiled.enabled:
            # The inductor sums the embedding's gradient with parallel atomic adds, in an order that changes from run
            # to run; in deterministic mode it keeps PyTorch's ordered kernel, so a seed gives one loss curve.
            torch.use_deterministic_algorithms(True, warn_only=True)
            # Static shapes: after a run of another batch shape in this process (an A/B of batch sizes), torch.compile
            # would otherwise switch to a dynamic-shape graph, whose other kernels change a seed's loss curve.
            self.train_model = torch_compile(self.model, dynamic=False)
        if self.d.world > 1:
            ddp_device = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.train_model, device_ids=ddp_device)
        self.t_start = time.perf_counter()
        self.eval_seconds = 0.0  # what the last evaluation took (--max-time keeps that much for the final one)
        self.lr = lr_at(max(self.progress.step - 1, 0), tc)  # the learning rate of the last step taken

    def restore(self, record: dict) -> None:
        """Weights, optimizer, scaler, progress and every RNG from last/ (whose config.json is `record`): the run
        continues bit for bit, unless flags changed since (said in one line)."""
        folder = self.out_dir / "last"
        load_state_into(self.model, load_weights(folder), folder)
        state = load_train_state(folder)
        try:
            saved = state["optimizer"] if isinstance(state["optimizer"], list) else [state["optimizer"]]
            if len(saved) != len(self.optimizers):
                raise ValueError(f"it holds {len(saved)} optimizer state(s), this run has {len(self.optimizers)}: "
                                 "the --optimizer differs")
            for optimizer, optimizer_state in zip(self.optimizers, saved):
                settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
                optimizer.load_state_dict(optimizer_state)
                for group, own in zip(optimizer.param_groups, settings):  # the saved groups bring the saved
                    group.update(own)  # settings (decay, Muon's precision, ...): this run's flags win
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.data_generator.set_state(state["data_rng"])
            rng = state["torch_rng"]
            torch.set_rng_state(rng[self.d.rank] if self.d.rank < len(rng) else rng[0])
            if self.device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"])
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise UserError(f"{folder / 'train_state.pt'} does not fit this run ({type(err).__name__}: "
                            f"{str(err)[:120]}); start over with --overwrite or use another --out-dir") from None
        self.progress = Progress(step=state["step"], best_val=state["best_val"], best_step=state["best_step"],
                                 bad_evals=state["bad_evals"], history=state["history"],
                                 elapsed_before=state["elapsed_s"], saved_step=state["step"],
                                 timed_tokens=state["timed_tokens"], timed_s=state["timed_s"],
                                 machines=self.machines_so_far(record, state["step"]))
        self.log(f"resumed from {folder} at step {self.progress.step}")
        saved_settings = record.get("train_config") if isinstance(record.get("train_config"), dict) else {}
        for name, why in KEPT_ON_RESUME.items():  # recorded as they are: what the run so far was drawn and encoded with
            saved, now = saved_settings.get(name), getattr(self.tc, name)
            if isinstance(saved, type(now)) and saved != now:
                self.log(f"--{name} {now} is not used: a resumed run {why} ({name} {saved})")
                self.tc = replace(self.tc, **{name: saved})
        changed = changed_settings(saved_settings, self.tc)
        if changed:
            self.log(f"changed since the checkpoint: {changed}")

    def machines_so_far(self, record: dict, step: int) -> list[dict]:
        """The machines last/'s record lists; for a checkpoint written before they were kept, its own from step 0."""
        if "machines" not in record:
            recorded = all(key in record for key in ("hardware", "device", "dtype", "compiled"))
            return [machine_of(record, from_step=0)] if recorded else []
        try:
            check_machines(record["machines"], step)
        except UserError as err:
            raise UserError(f"{self.out_dir / 'last' / CONFIG} is damaged: {err}") from None
        return list(record["machines"])

    def elapsed(self) -> float:
        return self.progress.elapsed_before + time.perf_counter() - self.t_start

    def tokens_per_sec(self) -> float:
        p = self.progress
        return p.timed_tokens / p.timed_s if p.timed_s else 0.0

    def time_left(self) -> float:
        return fraction_of_time_left(self.elapsed(), self.eval_seconds, self.tc, self.d)

    # -- one step

    def train_step(self) -> float:
        """One optimizer step over batch_size x world x grad_accum sequences; returns the mean loss."""
        tc, d = self.tc, self.d
        self.lr = lr_at(self.progress.step, tc, self.time_left())
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.lr
        block = self.config.block_size
        starts = sample_starts(len(self.data.train), block, tc.batch_size * d.world * tc.grad_accum,
                               self.data_generator)
        total = torch.zeros((), device=self.device)
        for micro in range(tc.grad_accum):
            first = (micro * d.world + d.rank) * tc.batch_size
            x, y = get_batch(self.data.train, starts[first:first + tc.batch_size], block)
            last_micro = micro == tc.grad_accum - 1
            sync = contextlib.nullcontext() if d.world == 1 or last_micro else self.train_model.no_sync()
            with sync:
                with autocast(self.device, self.dtype):
                    loss = self.train_model(x, y)[1] / tc.grad_accum
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if tc.grad_clip > 0:
            for optimizer in self.optimizers:
                self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        for optimizer in self.optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        return mean_over_ranks(total, d)

    # -- evaluation and saving

    def evaluate(self) -> dict:
        """Train and val loss on the fixed evaluation batches, and the lr of the step just taken. Its duration is
        kept: --max-time sets that much aside for the run's last evaluation."""
        tc, block, step, started = self.tc, self.config.block_size, self.progress.step, self.elapsed()
        args = (block, tc.eval_batch_size or tc.batch_size, tc.eval_iters)
        train_loss = estimate_loss(self.model, self.data.train, *args, EVAL_SEEDS[0], self.device, self.dtype, self.d)
        val_loss = estimate_loss(self.model, self.data.val, *args, EVAL_SEEDS[1], self.device, self.dtype, self.d)
        self.eval_seconds = self.elapsed() - started
        return {"step": step, "train_loss": train_loss, "val_loss": val_loss,
                "val_bpc": val_loss / self.data.chars_per_val_token / math.log(2), "lr": self.lr,
                "elapsed_s": round(self.elapsed(), 1)}

    def diverged(self, what: str) -> UserError:
        last = self.out_dir / "last"
        kept = (f"the last good checkpoint {last} (step {self.progress.saved_step}) is intact"
                if self.progress.saved_step else "no checkpoint had been written yet")
        return UserError(f"training diverged: {what} at step {self.progress.step}; {kept}; lower --lr or set "
                         "--grad-clip 1.0")

    def where_it_stopped(self) -> str:
        """For Ctrl-C: the step reached and what --resume would continue from."""
        p, last = self.progress, self.out_dir / "last"
        if not p.saved_step:
            return f"at step {p.step}, before the first checkpoint; start again with --overwrite"
        return f"at step {p.step}; {last} holds step {p.saved_step}: continue with --resume"

    def after_eval(self, evaluation: dict) -> bool:
        """Record, save, and decide on early stopping. Returns True to stop. A non-finite evaluation, or weights that
        exploded, stop the run before anything is saved, so last/ keeps the last good state."""
        p = self.progress
        for key in ("train_loss", "val_loss"):
            if not math.isfinite(evaluation[key]):
                raise self.diverged(f"the evaluated {key.replace('_', ' ')} is {evaluation[key]}")
        largest = max(t.detach().abs().max().item() for t in self.model.parameters())
        if not largest <= MAX_WEIGHT:  # NaN fails this too
            raise self.diverged(f"the weights have exploded (largest magnitude {largest:.3g})")
        p.history["evals"].append(evaluation)
        improved = evaluation["val_loss"] < p.best_val
        if p.step > 0:
            if improved:
                p.best_val, p.best_step, p.bad_evals = evaluation["val_loss"], p.step, 0
            else:
                p.bad_evals += 1
            state = self.train_state()  # collective under DDP: every rank takes part
            if self.d.master:
                self.save(evaluation, improved, state)
            p.saved_step = p.step
        return self.tc.patience > 0 and p.bad_evals >= self.tc.patience

    def record(self, evaluation: dict) -> dict:
        """What each checkpoint's config.json records next to the weights."""
        return {"step": self.progress.step, "train_loss": evaluation["train_loss"], "val_loss": evaluation["val_loss"],
                "val_bpc": evaluation["val_bpc"], **self.record_of_setup(), "machines": self.progress.machines,
                "train_config": self.tc.record(), "data_text": self.data.text, "elapsed_s": round(self.elapsed(), 1),
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def train_state(self) -> dict:
        p = self.progress
        rng = [torch.get_rng_state()]
        if self.d.world > 1:
            gathered = [None] * self.d.world
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        return {"optimizer": [o.state_dict() for o in self.optimizers], "scaler": self.scaler.state_dict(), "step": p.step,
                "best_val": p.best_val, "best_step": p.best_step, "bad_evals": p.bad_evals, "history": p.history,
                "elapsed_s": self.elapsed(), "timed_tokens": p.timed_tokens, "timed_s": p.timed_s,
                "data_rng": self.data_generator.get_state(), "torch_rng": rng,
                "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None}

    def save(self, evaluation: dict, improved: bool, state: dict) -> None:
        """last/ first (what --resume needs), then best/ on improvement, then history.json."""
        record = self.record(evaluation)
        try:
            save_checkpoint(self.out_dir / "last", self.model, self.tokenizer, record, state)
            if improved:
                save_checkpoint(self.out_dir / "best", self.model, self.tokenizer, record)
            atomic_write_json(self.out_dir / "history.json", self.progress.history)
        except OSError as err:
            saved = self.progress.saved_step
            then = (f"the previous checkpoint (step {saved}) is intact; free disk space or choose another --out-dir, "
                    "then --resume" if saved else "no checkpoint had been written yet; free disk space or choose "
                    "another --out-dir, then start again with --overwrite")
            raise UserError(f"could not save the checkpoint at step {self.progress.step} in {self.out_dir} "
                            f"({err.strerror or err}); {then}") from None

    def log_eval(self, e: dict, tokens_per_sec: float, bar) -> None:
        done = self.progress.step - self.first_step
        seconds = time.perf_counter() - self.t_start
        eta = seconds / done * (self.tc.max_steps - self.progress.step) if done else None
        if eta is not None and self.tc.max_time:  # --max-time stops the run first when it comes first
            eta = min(eta, max(0.0, self.tc.max_time - e["elapsed_s"]))
        msg = (f"step {e['step']:>5}/{self.tc.max_steps} | train {e['train_loss']:.4f} | val {e['val_loss']:.4f} | "
               f"val bpc {e['val_bpc']:.3f} | lr {e['lr']:.2e} | {tokens_per_sec:,.0f} tok/s | "
               f"{e['elapsed_s']:.0f}s elapsed, ETA {'–' if eta is None else f'{eta:.0f}s'}")
        if not bar.disable:  # a live bar: the line goes above it (the bar shows on rank 0 only)
            bar.write(msg)
        else:
            self.log(msg)

    def note_machine(self) -> None:
        """Add this process's machine to the run's list where it differs from the one the run last trained on, and
        say so: the run's tokens/s and time then mix the machines."""
        p = self.progress
        here = machine_of(self.record_of_setup(), from_step=p.step)
        if p.machines and same_machine(p.machines[-1], here):
            return
        if p.machines:
            self.log(f"this run trained on another machine until step {p.step} ({describe_machine(p.machines[-1])}); "
                     "its record names each machine, and its tokens/s and time are of them all")
        p.machines.append(here)

    def record_of_setup(self) -> dict:
        """Where and how this process trains, as checkpoints and summaries record it."""
        return {"device": str(self.device), "dtype": self.dtype, "dtype_reason": self.precision.reason,
                "compiled": self.compiled.enabled, "compile_reason": self.compiled.reason,
                "hardware": describe_hardware(self.device)}

    # -- the loop

    def fit(self) -> dict:
        tc, d, p = self.tc, self.d, self.progress
        if tc.overwrite and d.master:
            clear_run(self.out_dir)
        self.t_start = time.perf_counter()
        eff = tc.batch_size * d.world * tc.grad_accum
        self.log(f"{self.config.architecture} model, {self.model.num_params():,} params | "
                 f"{self.device} ({describe_hardware(self.device)}) | {self.dtype} ({self.precision.reason}) | "
                 f"{'compiled' if self.compiled.enabled else 'eager'} ({self.compiled.reason}) | "
                 f"tokenizer {self.tokenizer.name} ({self.tokenizer.vocab_size}) | effective batch {eff} = "
                 f"{tc.batch_size} x {d.world} ranks x {tc.grad_accum} accum | "
                 f"{len(self.data.train):,}/{len(self.data.val):,} train/val tokens")
        if p.step >= tc.max_steps:
            self.log(f"nothing to train: the checkpoint is at step {p.step} and --max-steps is {tc.max_steps} (a "
                     "larger --max-steps trains on)")
            finished = read_json(self.out_dir / "summary.json") if (self.out_dir / "summary.json").exists() else {}
            if isinstance(finished, dict) and finished.get("steps") == p.step:  # the run's record stays as it was
                return finished
        self.note_machine()
        tokens_per_step = eff * self.config.block_size
        stopped_early, time_up = False, False
        # a live bar on a terminal; in a log file (nohup, CI, Colab cells) the eval lines carry the ETA instead
        bar = tqdm(total=tc.max_steps, initial=p.step, disable=not (d.master and sys.stderr.isatty()),
                   dynamic_ncols=True, file=sys.stderr, unit="step")
        self.first_step = p.step
        if p.step == 0 and not p.history["evals"]:
            evaluation = self.evaluate()  # the untrained loss, ~ln(vocab): the start of every curve
            self.log_eval(evaluation, 0.0, bar)
            self.after_eval(evaluation)
        steps_this_process = 0
        while p.step < tc.max_steps:
            synchronize(self.device)
            t0 = time.perf_counter()
            try:
                loss = self.train_step()
            except torch.OutOfMemoryError:
                raise UserError(f"out of memory on {self.device} at --batch-size {tc.batch_size}; try --batch-size "
                                f"{max(1, tc.batch_size // 2)} --grad-accum {tc.grad_accum * 2} (same effective batch)") from None
            synchronize(self.device)
            steps_this_process += 1
            if steps_this_process > WARMUP_STEPS_UNTIMED:
                p.timed_tokens, p.timed_s = p.timed_tokens + tokens_per_step, p.timed_s + time.perf_counter() - t0
            if not math.isfinite(loss):
                p.step += 1
                raise self.diverged(f"loss is {loss}")
            p.step += 1
            p.history["train_loss"].append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if self.device.type == "mps" and p.step % 100 == 0:
                torch.mps.empty_cache()  # the original project's workaround for silent MPS memory growth
            time_up = self.time_left() <= 0
            if p.step % tc.eval_interval == 0 or p.step == tc.max_steps or time_up:
                evaluation = self.evaluate()
                self.log_eval(evaluation, self.tokens_per_sec(), bar)
                if self.after_eval(evaluation):
                    stopped_early = True
                    if d.master:
                        bar.write(f"early stop: no improvement in {tc.patience} evaluations; best val "
                                  f"{p.best_val:.4f} at step {p.best_step}")
                    break
                if time_up:
                    if d.master:
                        bar.write(f"time limit: --max-time {tc.max_time:g} s used up at step {p.step}")
                    break
        bar.close()
        summary = self.summary(stopped_early, time_up)
        if d.master:
            atomic_write_json(self.out_dir / "summary.json", summary)
        return summary

    def summary(self, stopped_early: bool, time_up: bool) -> dict:
        p = self.progress
        last = p.history["evals"][-1]
        best = next((e for e in p.history["evals"] if e["step"] == p.best_step), last)
        return {"run": self.out_dir.name, "architecture": self.config.architecture,
                "params": self.model.num_params(), "steps": p.step, "best_val_loss": p.best_val,
                "best_val_bpc": best["val_bpc"], "best_step": p.best_step,
                "final_train_loss": p.history["train_loss"][-1] if p.history["train_loss"] else None,
                "final_val_loss": last["val_loss"], "stopped_early": stopped_early, "time_limit_reached": time_up,
                "elapsed_s": round(self.elapsed(), 1), **self.record_of_setup(), "machines": p.machines,
                "tokens_per_sec": round(self.tokens_per_sec(), 1), "world_size": self.d.world,
                "effective_batch": self.tc.batch_size * self.d.world * self.tc.grad_accum,
                "tokenizer": self.tokenizer.name, "vocab_size": self.tokenizer.vocab_size,
                "chars_per_val_token": round(self.data.chars_per_val_token, 4), "data_text": self.data.text,
                "model_config": self.config.to_dict(), "train_config": self.tc.record(),
                "torch": torch.__version__, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


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


def train(model_config: GPTConfig, tc: TrainConfig, log=print) -> dict:
    """Train a model; returns the summary (also written to <out_dir>/summary.json). PyTorch's deterministic mode,
    which a compiled run turns on for its steps (Trainer), is as it was when this returns: a notebook or script
    that trains and then does something else is not left with it."""
    tc.validate()
    d = setup_distributed(tc.device)
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with claim_run_folder(tc, d):
            trainer = Trainer(model_config, tc, log, d)
            try:
                summary = trainer.fit()
            except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (common.Terminated): said the same way
                raise type(stop)(trainer.where_it_stopped()) from None
        if d.world > 1:
            dist.barrier()  # every rank done before any tears the group down (gloo aborts a rank still using it)
        return summary
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        if dist.is_initialized():
            dist.destroy_process_group()
