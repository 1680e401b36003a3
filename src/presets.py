"""The one registry of named presets: sizes and training settings for a purpose (`--preset NAME`).

A preset is a set of GPTConfig and TrainConfig field values laid over a script's own defaults; flags given
explicitly still win. A preset may also name `fp32_values`: the training scripts lay them over its values where
the run will train in fp32 on a CPU (one without native bf16 under `--dtype auto`, or any under `--dtype fp32`).
Each step there costs more than a bf16 step on a CPU with native bf16, so a wall-clock budget buys fewer steps,
and a smaller model then reaches a lower loss than the preset's own (the recipe search measured both on an
AVX2-only CPU). GPUs and MPS keep the preset's own values: their fp32 steps were not measured. The WSD presets'
min_lr is read only where a flag or an A/B arm switches them to `--schedule cosine`: WSD decays to zero. Every
script takes its presets from here, by name:
- training/train.py, train_modern.py: `cpu`, `demo` (what `src/generate.py --demo` trains on a fresh clone)
- training/train_bpe.py: `bpe-cpu`
- experiments/swap*.py (the A/B harness, src/abtest.py): `ab-reference` (default), `ab-cpu`
- experiments/compare_tokenizers.py: `tokenizers-reference` (default), `tokenizers-cpu`
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from common import UserError
from model import GPTConfig


@dataclass(frozen=True)
class Preset:
    purpose: str
    values: dict
    fp32_values: dict = field(default_factory=dict)  # laid over `values` by the training scripts for a CPU fp32 run


PRESETS = {
    "cpu": Preset(
        "a laptop CPU: the recipe search's cpu-wd0.3 row (DEVLOG section 3), stopped by --max-time 600 on any "
        "machine; an fp32 run on a CPU: its cpu-4layers row",
        dict(n_layer=6, n_head=4, n_embd=128, block_size=64, batch_size=32, dropout=0.0, max_steps=4800,
             eval_interval=1200, eval_iters=20, lr=1e-3, min_lr=1e-4, schedule="wsd", decay_fraction=0.2,
             warmup_steps=100, weight_decay=0.3, max_time=600.0),
        fp32_values=dict(n_layer=4)),
    "demo": Preset(
        "src/generate.py --demo on a fresh clone: the recipe search's demo-margin row, stopped by --max-time 120 "
        "on any machine (DEVLOG section 3); an fp32 run on a CPU: its demo-3layers row",
        dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=32, dropout=0.0, max_steps=1300,
             eval_interval=325, eval_iters=20, lr=1e-3, min_lr=1e-4, schedule="wsd", decay_fraction=0.2,
             warmup_steps=100, max_time=120.0),
        fp32_values=dict(n_layer=3)),
    "bpe-cpu": Preset(
        "train_bpe.py on a CPU in a few minutes: GPT-2's 50,257-way output layer is most of the compute",
        dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.1, batch_size=16, grad_accum=2, lr=1e-3,
             min_lr=1e-4, schedule="cosine", warmup_steps=15, max_steps=150, eval_interval=50, eval_iters=10)),
    "ab-reference": Preset(
        "A/B experiments at the original project's swap settings (a GPU): 2000 steps, eval every 500 on 200 batches",
        dict(max_steps=2000, eval_interval=500, eval_iters=200, batch_size=64, lr=3e-4, dropout=0.2)),
    "ab-cpu": Preset(
        "A/B experiments on a CPU: 1000 steps of 3 layers x 128 per run, three seeds of each arm",
        dict(n_layer=3, n_head=4, n_embd=128, block_size=64, batch_size=32, dropout=0.0, max_steps=1000,
             eval_interval=250, eval_iters=20, lr=1e-3)),
    "tokenizers-reference": Preset(
        "the tokenizer comparison at the modern reference size (a GPU)",
        dict(max_steps=2000, eval_interval=250, eval_iters=200, batch_size=64, lr=3e-4, dropout=0.2)),
    "tokenizers-cpu": Preset(
        "the tokenizer comparison on a CPU (the GPT-2 arm's 50,257-way output layer is the slow part)",
        dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, batch_size=16, max_steps=400,
             eval_interval=100, eval_iters=20, lr=1e-3, schedule="cosine", min_lr=1e-4, warmup_steps=40)),
}
MODEL_FIELDS = {f.name for f in fields(GPTConfig)}


def takes_fp32_values(device_type: str, dtype: str) -> bool:
    """Whether a run on this device type ("cpu", "cuda", "mps") in this precision takes a preset's fp32_values:
    the one rule for the training scripts and for the report that matches their runs to a preset."""
    return (device_type, dtype) == ("cpu", "fp32")


def preset_values(name: str, fp32: bool = False) -> dict:
    """Preset `name`'s field values; fp32=True: with its fp32_values laid over them."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return {**PRESETS[name].values, **(PRESETS[name].fp32_values if fp32 else {})}


def apply_preset(name: str | None, model_config: GPTConfig, train_config, fp32: bool = False):
    """(model config, train config) with preset `name` laid over them (None: unchanged); fp32=True: its
    fp32_values too. Neither input changes."""
    if name is None:
        return model_config, train_config
    values = preset_values(name, fp32)
    return (replace(model_config, **{k: v for k, v in values.items() if k in MODEL_FIELDS}),
            replace(train_config, **{k: v for k, v in values.items() if k not in MODEL_FIELDS}))


def cpu_preset_note(preset: str | None, device_type: str, offered: tuple[str, ...] = ()) -> str | None:
    """The one line for a run at a GPU's sizes (no preset: the training scripts' defaults, the original project's;
    or a *-reference preset) on a CPU, where it trains for hours: which preset is sized for a CPU. None elsewhere.
    `offered`: the script's presets, where the one for a CPU is found when no preset is given."""
    if device_type != "cpu":
        return None
    if preset is None:
        sizes, alternative = "the default sizes", next((name for name in offered if name.endswith("cpu")), None)
    elif preset.endswith("-reference"):
        sizes, alternative = f"--preset {preset}'s sizes", preset.removesuffix("-reference") + "-cpu"
    else:
        return None
    if alternative not in PRESETS:
        return None
    return f"note: {sizes}, meant for a GPU, take hours on a CPU; --preset {alternative} is sized for one"


def describe(names) -> str:
    """The presets' lines for a --help epilog."""
    def settings(values: dict) -> str:
        return " ".join(f"{k}={v}" for k, v in values.items())

    def lines(preset: Preset) -> str:
        fp32 = f"\n    where the run trains in fp32 on a CPU: {settings(preset.fp32_values)}" if preset.fp32_values else ""
        return f"{preset.purpose}\n    {settings(preset.values)}{fp32}"
    return "presets:\n" + "\n".join(f"  {name}: {lines(PRESETS[name])}" for name in names)
