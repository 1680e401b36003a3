"""The command line shared by every training script: the same flags, presets and error handling.

A script only states its defaults (a GPTConfig, a TrainConfig) and which presets of presets.py it offers;
precedence is script defaults < `--preset` values (with its fp32 values, where the run trains in fp32 on a CPU)
< flags given explicitly.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import fields, replace
from pathlib import Path

from checkpoint import load_model, read_config
from common import REPO_ROOT, ArgumentParser, UserError, atomic_write_json, repo_path, repo_relative
from device import COMPILE_MIN_STEPS, pick_device, resolve_dtype
from engine import generate_text, sample_prompt
from model import GPTConfig
from presets import PRESETS, apply_preset, cpu_preset_note, describe, takes_fp32_values
from trainer import TrainConfig, train

# field -> (type, help); the flag is --field-with-dashes. MODEL_FLAGS set GPTConfig fields, TRAIN_FLAGS TrainConfig's.
MODEL_FLAGS = {
    "block_size": (int, "context length in tokens"),
    "n_layer": (int, "transformer blocks"),
    "n_head": (int, "attention heads"),
    "n_embd": (int, "embedding width"),
    "dropout": (float, "dropout rate"),
    "norm": (str, "layernorm | rmsnorm"),
    "ffn": (str, "relu | swiglu | relu2"),
    "pos": (str, "learned | rope"),
}
TRAIN_FLAGS = {
    "max_steps": (int, "optimizer steps"),
    "batch_size": (int, "sequences per micro-batch (per rank)"),
    "grad_accum": (int, "micro-batches per optimizer step"),
    "lr": (float, "peak learning rate"),
    "optimizer": (str, "adamw | muon (Muon for the blocks' matrices, AdamW for embeddings, norms, biases)"),
    "schedule": (str, "constant | cosine | wsd (warmup-stable-decay)"),
    "warmup_steps": (int, "linear warmup steps"),
    "min_lr": (float, "final learning rate of the cosine schedule"),
    "decay_fraction": (float, "wsd: the last fraction of the run (of --max-steps, or of --max-time when the time "
                              "runs out first), where lr falls linearly to zero"),
    "weight_decay": (float, "weight decay (decoupled, both optimizers)"),
    "weight_decay_on": (str, "all | matrices: which parameters decay (matrices: the 2-D weights; norms and biases "
                             "undecayed, as nanoGPT)"),
    "grad_clip": (float, "clip the gradient norm to this (0 = off)"),
    "eval_interval": (int, "evaluate every N steps"),
    "eval_iters": (int, "batches per split in each evaluation"),
    "eval_batch_size": (int, "windows per evaluation batch (0 = --batch-size)"),
    "patience": (int, "stop after N evaluations without improvement (0 = off)"),
    "max_time": (float, "stop after this many seconds of wall clock, a last evaluation included (0 = no limit)"),
    "seed": (int, "random seed (init, data order, dropout)"),
    "device": (str, "auto | cpu | cuda | cuda:N | mps"),
    "dtype": (str, "auto | fp32 | bf16 | fp16 (auto: bf16 where this device runs it natively, and why is printed)"),
    "tokenizer": (str, "char | gpt2 | bpe:<vocab_size>"),
    "data": (str, "training text (default: data/input.txt, downloaded if missing)"),
    "out_dir": (str, "run folder for checkpoints and logs (the default is under the repo)"),
    "sample_tokens": (int, "tokens of the sample printed at the end"),
}
SAMPLE = dict(prompt="ROMEO:", tokens=400, temperature=0.8, seed=0)
# each training script's defaults: (model config, training config) before presets and flags
RUN_DEFAULTS = {
    "vanilla": (GPTConfig.named("vanilla"), TrainConfig(out_dir="checkpoints/vanilla")),
    "modern": (GPTConfig.named("modern", dropout=0.3), TrainConfig(out_dir="checkpoints/modern")),
    "bpe": (GPTConfig.named("modern", dropout=0.3),
            TrainConfig(tokenizer="gpt2", batch_size=16, grad_accum=4, lr=1e-4, grad_clip=1.0, max_steps=3000,
                        eval_interval=500, eval_iters=100, out_dir="checkpoints/bpe")),
}
# the script under training/ whose defaults each of them is
TRAINING_SCRIPTS = {"vanilla": "train.py", "modern": "train_modern.py", "bpe": "train_bpe.py"}


def build_parser(description: str, model_defaults: GPTConfig, train_defaults: TrainConfig,
                 presets: tuple[str, ...]) -> ArgumentParser:
    parser = ArgumentParser(description=description,
                            epilog=describe(presets) if presets else None)
    parser.add_argument("--preset", choices=presets, help="a named set of defaults (flags still override)")
    for flags, defaults in ((MODEL_FLAGS, model_defaults), (TRAIN_FLAGS, train_defaults)):
        for name, (typ, text) in flags.items():
            shown = repo_relative(repo_path(defaults.out_dir)) if name == "out_dir" else getattr(defaults, name)
            help_text = text if shown is None else f"{text} (default: {shown})"  # None: the text says what happens
            parser.add_argument(f"--{name.replace('_', '-')}", type=typ, default=None, help=help_text)
    parser.add_argument("--compile", nargs="?", const="on", choices=("auto", "on", "off"), default=None,
                        help="torch.compile the training step; --compile alone is 'on' (default: auto: compiled for "
                             f"single-process CPU runs of {COMPILE_MIN_STEPS}+ steps of a model with RMSNorm, RoPE or "
                             "SwiGLU where a C++ compiler is found, else eager)")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue from <out-dir>/last exactly where it stopped")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="start over in an --out-dir that holds a run, deleting its checkpoints (default: refuse)")
    return parser


def first_rank() -> bool:
    """torchrun starts one process per rank, each running the script: only the first prints what all would."""
    return os.environ.get("RANK", "0") == "0"


def parse_training_args(argv, description: str, model_defaults: GPTConfig, train_defaults: TrainConfig,
                        presets: tuple[str, ...] = (), announce=print):
    """-> (GPTConfig, TrainConfig) after defaults < preset < explicit flags, all validated. Announces (on the first
    rank, by calling `announce` with the line) a preset's fp32 values where it takes them, and a run at a GPU's sizes
    on a CPU; announce=None: says nothing (a caller that only asks what a run would train, and trains nothing)."""
    args = vars(build_parser(description, model_defaults, train_defaults, presets).parse_args(argv))
    preset = args.pop("preset")
    given = {k: v for k, v in args.items() if v is not None}
    model_config, train_config = apply_preset(preset, model_defaults, train_defaults,
                                              fp32=uses_fp32_values(preset, given, train_defaults, announce))
    model_names = {f.name for f in fields(GPTConfig)}
    try:
        model_config = replace(model_config, **{k: v for k, v in given.items() if k in model_names})
    except ValueError as err:  # name the flag, not the field
        raise UserError(re.sub(rf"\b({'|'.join(MODEL_FLAGS)})\b", lambda m: "--" + m.group(1).replace("_", "-"),
                               str(err))) from None
    train_config = replace(train_config, **{k: v for k, v in given.items() if k not in model_names})
    if "out_dir" not in given:  # the default run folder lives in the repo, wherever the script is started from
        train_config = replace(train_config, out_dir=str(repo_path(train_config.out_dir)))
    train_config.validate()
    # flags by which the user sized this run (or continues one): then the note would tell nothing new
    chosen = {"n_layer", "n_head", "n_embd", "block_size", "max_steps", "max_time", "resume"} & given.keys()
    note = None if chosen or not announce else cpu_preset_note(preset, pick_device(train_config.device).type, presets)
    if note and first_rank():
        announce(note)
    return model_config, train_config


def uses_fp32_values(preset: str | None, given: dict, train_defaults: TrainConfig, announce) -> bool:
    """Whether `preset` comes with its fp32 values: it has some, and the run will train in fp32 (what --dtype
    auto picks for the device, or what --dtype asks for) on a CPU. Says so (announce), with the reason, on rank 0.
    A resumed run takes them where it began with them, so the same flags resume it on another machine or --dtype."""
    if preset is None or not PRESETS[preset].fp32_values:
        return False
    began = resumed_run_record(given, train_defaults)
    if began is not None:  # a resumed run continues as it began, on whatever machine and --dtype it goes on
        if not takes_fp32_values(str(began.get("device", "")).split(":")[0], began.get("dtype")):
            return False
        why = "the run being resumed began in fp32 on a CPU"
    else:
        device = pick_device(given.get("device", train_defaults.device))
        precision = resolve_dtype(given.get("dtype", train_defaults.dtype), device)
        if not takes_fp32_values(device.type, precision.dtype):
            return False
        why = f"it trains in fp32 here ({precision.reason})"
    values = " ".join(f"{k}={v}" for k, v in PRESETS[preset].fp32_values.items() if k not in given)
    if announce and values and first_rank():  # a value a flag overrides goes unmentioned
        announce(f"--preset {preset}: {why}, so with its fp32 values: {values}")
    return True


def resumed_run_record(given: dict, train_defaults: TrainConfig) -> dict | None:
    """With --resume, the config.json of the checkpoint it continues (None without one: the trainer says so)."""
    if not given.get("resume"):
        return None
    folder = Path(given.get("out_dir") or repo_path(train_defaults.out_dir)) / "last"
    try:
        return read_config(folder) if (folder / "config.json").exists() else None
    except UserError:  # damaged: the trainer's own check reports it
        return None


def print_sample(out_dir, tokens: int, device: str) -> None:
    """Generate a sample from the run's best checkpoint (what the run is for, after all)."""
    if tokens == 0:
        return
    model, _ = load_model(out_dir, device=pick_device(device))
    prompt = sample_prompt(model.tokenizer)
    print(f"\n--- sample from {out_dir} (prompt {prompt!r}, temperature {SAMPLE['temperature']}) ---")
    print(generate_text(model, prompt, tokens, temperature=SAMPLE["temperature"], seed=SAMPLE["seed"]))


def write_run_results(out_dir, results_dir=REPO_ROOT / "results", name: str | None = None) -> Path:
    """results/train_<run>.json (or <name>.json): the run's summary, its evaluations and a seeded sample from its
    best checkpoint, so the docs can quote a run without anyone typing its numbers."""
    out_dir = Path(out_dir).resolve()
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
        history = json.loads((out_dir / "history.json").read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{out_dir} has no readable summary.json/history.json ({err}); finish the run first") from None
    model, _ = load_model(out_dir)
    sample = {**SAMPLE, "prompt": sample_prompt(model.tokenizer)}
    text = generate_text(model, sample["prompt"], sample["tokens"], sample["temperature"], seed=sample["seed"])
    record = {**summary, "run_dir": repo_relative(out_dir), "evals": history["evals"], "sample": {**sample, "text": text}}
    path = Path(results_dir) / f"{name or f'train_{out_dir.name}'}.json"
    atomic_write_json(path, record)
    return path


def printing_first(announcements: list):
    """train()'s log, printing `announcements` before the trainer's first line, which it logs once the data and the
    run folder have passed its checks: a run refused for a bad --data or --out-dir says so in its one line alone.
    An announcement is a line, or a function called only then for its lines (work that prints, or costs time)."""
    def log(message: str) -> None:
        while announcements:
            item = announcements.pop(0)
            for line in item() if callable(item) else [item]:
                print(line, flush=True)
        print(message, flush=True)
    return log


def training_main(description: str, run: str, presets: tuple[str, ...], argv=None, before_training=None,
                  record_results: bool = True) -> dict:
    """Parse flags over RUN_DEFAULTS[run], train, print a sample from the best checkpoint (rank 0 only). Runs
    kept under checkpoints/ also get results/train_<run>.json (record_results=False: not for throwaway runs).
    before_training(model_config, train_config): lines to print before the trainer's first one."""
    announcements = []
    model_config, train_config = parse_training_args(argv, description, *RUN_DEFAULTS[run], presets,
                                                     announce=announcements.append)
    if before_training is not None:  # announced too: it runs, and prints, only once the run has passed its checks
        announcements.append(lambda: before_training(model_config, train_config))
    summary = train(model_config, train_config, log=printing_first(announcements))
    if first_rank():
        print(f"best val loss {summary['best_val_loss']:.4f} ({summary['best_val_bpc']:.3f} bits/char) at step "
              f"{summary['best_step']}; {summary['tokens_per_sec']:,.0f} tokens/s; {summary['elapsed_s']:.0f}s")
        print_sample(train_config.out_dir, train_config.sample_tokens, train_config.device)
        if record_results and Path(train_config.out_dir).resolve().is_relative_to(REPO_ROOT / "checkpoints"):
            print(f"results: {write_run_results(train_config.out_dir)}")
    return summary
