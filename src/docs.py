"""Every table and caption block of README.md and DEVLOG.md, rendered from results/*.json: no number in the docs is
typed by hand.

A block in a doc looks like `<!-- report:NAME -->` ... `<!-- /report:NAME -->`; NAME is a key of BLOCKS, and
`render` replaces what is between the markers with what that function returns from the results files now. A results
file not written yet renders as the command that writes it. experiments/report.py is the command line over this
(--write, --check, --show).
"""
from __future__ import annotations

import functools
import json
import re
import statistics
from dataclasses import asdict
from pathlib import Path

from abtest import axis_cell, end_of_run, plus_minus, rerun_command
from cli import RUN_DEFAULTS, TRAINING_SCRIPTS
from common import REPO_ROOT, UserError, read_json, repo_relative
from presets import preset_values, takes_fp32_values
from trainer import describe_machines

RESULTS = REPO_ROOT / "results"
DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "DEVLOG.md"]
OLD_KERNELS_ALONE = "products and attention kernels"  # what "kernels alone" timed in records before the update joined
# The original project's reference runs (params, best val loss, its step), as our issues quote them: shown only
# as that labelled reference, beside runs of ours at the same config.
ORIGINAL = {"vanilla": (10_763_904, 1.4804, 3000), "modern": (10_646_784, 1.4754, 2500)}
# settings a reference run may choose freely: they change how it runs or stops, not what it trains
NOT_THE_RECIPE = {"vocab_size", "seed", "patience", "device", "dtype", "compile", "data", "out_dir", "resume",
                  "overwrite", "sample_tokens"}
SWAPS = [("swap1_rmsnorm", "rmsnorm"), ("swap2_swiglu", "swiglu"), ("swap2_swiglu", "relu2"), ("swap3_rope", "rope")]


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return read_json(path) if path.exists() else None


def missing(name: str, command: str) -> str:
    return f"_No results yet: run `{command}` to produce `results/{name}.json`._"


# ----------------------------------------------------------------------------- blocks

def describe_config(mc: dict, tc: dict, effective_batch: int) -> str:
    """A run's model and training settings in one table cell (the runs and reference tables)."""
    return (f"{mc['n_layer']}L×{mc['n_embd']}, block {mc['block_size']}, batch {effective_batch}, "
            f"{tc['max_steps']} steps, {tc.get('optimizer', 'adamw')} lr {tc['lr']:g} {tc['schedule']}, "
            f"weight decay {tc.get('weight_decay', 0.01):g}"
            f"{' (matrices only)' if tc.get('weight_decay_on') == 'matrices' else ''}, dropout {mc['dropout']}")


def runs() -> str:
    rows = []
    for name in ("train_vanilla", "train_modern", "train_demo", "train_bpe"):
        r = load(name)
        if r is None:
            continue
        tc, mc = r["train_config"], r["model_config"]
        config = describe_config(mc, tc, r["effective_batch"])
        rows.append(f"| {r['architecture']} | {r['tokenizer']} | {r['params']:,} | {config} | {r['best_val_loss']:.4f} | "
                    f"{r['best_val_bpc']:.3f} | {r['best_step']} | {r['tokens_per_sec']:,.0f} | {r['elapsed_s'] / 60:.1f} min | "
                    f"{measured_on(r)} |")
    if not rows:
        return missing("train_modern", "python -u training/train_modern.py --preset cpu")
    head = ("| model | tokenizer | params | config | best val loss | val bits/char | best step | train tokens/s | "
            "time | measured on |\n|---|---|---|---|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(rows)


def swaps() -> str:
    """The "all swaps compared" table: val loss per step per variant, mean ± std over seeds."""
    records = {name: load(name) for name, _ in SWAPS}
    present = [(name, arm) for name, arm in SWAPS if records[name]]
    if not present:
        return missing("swap1_rmsnorm", "python -u experiments/swap1_rmsnorm.py --preset ab-cpu")
    base = records[present[0][0]]
    steps = [row["step"] for row in base["table"]]
    lines = ["| step | vanilla | " + " | ".join(arm for _, arm in present) + " |", "|---" * (len(present) + 2) + "|"]
    for i, step in enumerate(steps):
        cells = [plus_minus(base["table"][i]["vanilla"], base["seeds"])]
        for name, arm in present:
            table = records[name]["table"]
            cells.append(f"{plus_minus(table[i][arm], records[name]['seeds'])} ({table[i][f'{arm} - vanilla'][0]:+.4f})" if i < len(table) else "–")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| variant | params | training tokens/s | best val loss | seeds | preset | measured on |")
    lines.append("|---|---|---|---|---|---|---|")
    arms = [(present[0][0], "vanilla")] + present
    for name, arm in arms:
        r, a = records[name], records[name]["arms"][arm]
        lines.append(f"| {arm} ({name}) | {a['params']:,} | {plus_minus(a['tokens_per_sec'], r['seeds'], ',.0f')} | "
                     f"{plus_minus(a['best_val'], r['seeds'])} | {r['seeds']} | {r['preset']} | {r['hardware']}, {r['date']} |")
    return "\n".join(lines)


def last_step_change(r: dict, arm: str, base: str) -> str:
    """An A/B record's paired difference at its last evaluation, with how it was measured."""
    last = r["table"][-1]
    d = last[f"{arm} - {base}"]
    return f"{d[0]:+.4f} ± {d[1]:.4f} ({r['seeds']} seeds, {r['preset']} preset, step {last['step']})"


def modern_table() -> str:
    """The README's "what makes it modern" table: each swap's measured effect on val loss at the last step."""
    lines = ["| component | GPT-2 (vanilla) | LLaMA / Qwen (modern) | our measurement: val loss change at the last step |",
             "|---|---|---|---|"]
    what = {"rmsnorm": ("LayerNorm", "RMSNorm", "swap1_rmsnorm"), "swiglu": ("ReLU FFN", "SwiGLU FFN", "swap2_swiglu"),
            "rope": ("learned position table", "RoPE (rotary)", "swap3_rope")}
    for arm, (old, new, name) in what.items():
        r = load(name)
        cell = last_step_change(r, arm, "vanilla") if r else "not measured yet"
        lines.append(f"| {new} instead of {old} | {old} | {new} | {cell} |")
    r = load(WHOLE_SWAP[0])
    cell = last_step_change(r, "modern", "vanilla") if r else "not measured yet"
    lines.append(f"| all three at once, at the size of the trained models | LayerNorm, ReLU FFN, learned positions | "
                 f"RMSNorm, SwiGLU, RoPE | {cell} |")
    kv = load("swap4_kvcache")
    if kv:
        best = max((row for row in kv["rows"] if row["batch"] == 1), key=lambda row: row["new_tokens"])
        lines.append(f"| kvcache | recompute the context each token | KV cache | generation {best['speedup']:.1f}× faster "
                     f"({best['new_tokens']} tokens, batch {best['batch']}, {kv['hardware']}) |")
    lines += ["", "| training | GPT-2 / the original project | nanoGPT, nanochat, modded-nanogpt | our measurement: val loss change "
                  "at the last step |", "|---|---|---|---|"]
    for name, base, arm, old, new, _ in TRAINING_SWAPS:
        r = load(name)
        if not r:
            lines.append(f"| {new} instead of {old} | {old} | {new} | not measured yet |")
            continue
        cell = last_step_change(r, arm, base)
        if name == "swap5_muon" and "equal_wall_clock" in r:
            e = r["equal_wall_clock"]
            cell += (f"; at AdamW's wall clock ({statistics.fmean(e['steps']):.0f} steps): "
                     f"{e['best_val'][0] - e['adamw_best_val'][0]:+.4f} in best val")
        lines.append(f"| {new} instead of {old} | {old} | {new} | {cell} |")
    return "\n".join(lines)


TRAINING_SWAPS = [  # (results file, base arm, arm, old, new, the command that writes it)
    ("swap5_muon", "adamw", "muon", "AdamW for every weight", "Muon for the hidden matrices",
     "python -u experiments/swap5_muon.py --preset ab-cpu"),
    ("swap6_schedule", "cosine", "wsd", "cosine decay", "warmup-stable-decay",
     "python -u experiments/swap6_schedule.py --preset ab-cpu"),
    ("swap7_bf16", "fp32", "bf16", "fp32", "bf16 autocast (a CPU with native bf16)",
     "python -u experiments/swap7_bf16.py --preset cpu"),
    ("swap9_decay", "all", "matrices", "weight decay on every weight", "weight decay on the matrices only",
     "python -u experiments/swap9_decay.py --preset cpu"),
]


WHOLE_SWAP = ("swap8_modern", "vanilla", "modern", "vanilla GPT", "ModernGPT",
              "python -u experiments/swap8_modern.py --preset cpu")


def swap_detail(name: str, base: str, arm: str, old: str, new: str, command: str, model: str = "ModernGPT") -> str:
    """One A/B experiment of two arms in full (`ab_detail`), titled "new vs old"."""
    r = load(name)
    if r is None:
        return missing(name, command)
    return ab_detail(name, r, [base, arm], f"{new} vs {old}", model)


def ab_detail(name: str, r: dict, arms: list[str], title: str, model: str = "ModernGPT") -> str:
    """An A/B experiment in full: val loss per step per arm, mean ± std over seeds, and each arm's paired difference
    to the first. `model`: what every arm is ("": the arms are different models); its size is named only where no
    arm changes it, and its steps where every arm runs them (otherwise each arm's line says its steps and tokens).
    Where the clock stopped some run between evaluations, a last row pairs each run's final one."""
    base, variants = arms[0], arms[1:]
    dtypes = " vs ".join(dict.fromkeys(r["arms"][a]["precision"]["dtype"] for a in arms))
    resized = any(k in r["arms"][a].get("overrides", {}) for a in arms for k in ("n_layer", "n_embd"))
    size = "" if resized else f"{r['model_config']['n_layer']}L×{r['model_config']['n_embd']}"
    restepped = any("max_steps" in r["arms"][a].get("overrides", {}) for a in arms)
    what = ", ".join(part for part in (" ".join(part for part in (model, size) if part),
                                       "" if restepped else f"{r['train_config']['max_steps']} steps") if part)
    axis = next(iter(r["table"][0])) if r["table"] else "step"  # or "tokens", where arms differ in tokens per step
    lines = [f"**{title}** (`{rerun_command(r)}`, {r['seeds']} seeds, {r['preset']} preset, "
             f"{f'{what}, ' if what else ''}{r['hardware']}, "
             f"{r['date']}, {dtypes}):", "",
             f"| {axis} | {' | '.join(arms)} | {' | '.join(f'{a} − {base}' for a in variants)} |",
             "|---" * (1 + len(arms) + len(variants)) + "|"]
    for row in r["table"] + list(filter(None, [end_of_run({a: r["arms"][a] for a in arms})])):
        diffs = (row[f"{a} - {base}"] for a in variants)
        lines.append(f"| {axis_cell(row[axis])} | {' | '.join(plus_minus(row[a], r['seeds']) for a in arms)} | "
                     f"{' | '.join(plus_minus(d, r['seeds'], '+.4f') for d in diffs)} |")
    lines.append("")
    for label in arms:
        a = r["arms"][label]
        mode = {True: ", compiled", False: ", eager"}.get(a.get("compiled", {}).get("enabled"), "")
        steps = a.get("overrides", {}).get("max_steps", r["train_config"]["max_steps"])
        run = f"{steps} steps of {a['tokens_per_step']:,} tokens, " if axis == "tokens" or restepped else ""
        clock = f", {plus_minus(a['elapsed_s'], r['seeds'], ',.0f')} s a run" if "elapsed_s" in a else ""
        lines.append(f"- {label}: {run}{a['params']:,} params, {plus_minus(a['tokens_per_sec'], r['seeds'], ',.0f')} "
                     f"training tokens/s{mode}{clock}, best val {plus_minus(a['best_val'], r['seeds'])}")
    if "equal_wall_clock" in r:
        e, arm = r["equal_wall_clock"], variants[0]
        lines.append(f"- {arm} at {base}'s wall clock (per seed {', '.join(f'{t:.0f}' for t in e['adamw_elapsed_s'])} s, "
                     f"so {', '.join(map(str, e['steps']))} steps): best val {plus_minus(e['best_val'], r['seeds'])}, "
                     f"against {plus_minus(e['adamw_best_val'], r['seeds'])} for {base}")
    return "\n".join(lines)


def training_swaps() -> str:
    """Swaps 5-7 and 9 in full (`swap_detail`)."""
    return "\n\n".join(swap_detail(*swap) for swap in TRAINING_SWAPS)


RECIPE_AB_TESTS = {  # report block: (results file of experiments/ab.py, title, the command that wrote it)
    "recipe_lr": ("cpu_lr", "lr 2e-3 vs the preset's lr 1e-3",
                  'python -u experiments/ab.py cpu_lr --preset cpu --arm "lr 1e-3:" --arm "lr 2e-3:lr=2e-3"'),
    "recipe_width": ("cpu_width", "Wider rather than deeper, at about the same parameter count",
                     'python -u experiments/ab.py cpu_width --preset cpu --arm "6 layers x 128:" '
                     '--arm "4 layers x 160:n_layer=4,n_embd=160" --arm "3 layers x 184:n_layer=3,n_embd=184"'),
    "recipe_dropout": ("cpu_dropout", "Dropout 0.1 vs none, in the recipe's ten minutes",
                       'python -u experiments/ab.py cpu_dropout --preset cpu --arm "dropout 0:" '
                       '--arm "dropout 0.1:dropout=0.1"'),
    "recipe_muon": ("cpu_muon", "Muon vs AdamW, in the recipe's ten minutes",
                    'python -u experiments/ab.py cpu_muon --preset cpu --arm "adamw:" --arm "muon:optimizer=muon"'),
    "recipe_batch": ("cpu_batch", "Batch 16 for twice the steps vs the preset's batch 32, at equal training tokens",
                     'python -u experiments/ab.py cpu_batch --preset cpu --arm "batch 32:" '
                     '--arm "batch 16:batch_size=16,max_steps=9600,eval_interval=2400"'),
    "recipe_decay": ("cpu_decay", "A decay over the last 40% of the run vs the preset's last 20%",
                     'python -u experiments/ab.py cpu_decay --preset cpu --arm "decay 20%:" '
                     '--arm "decay 40%:decay_fraction=0.4"'),
    "recipe_heads": ("cpu_heads", "2 attention heads of 64 dimensions vs the preset's 4 of 32",
                     'python -u experiments/ab.py cpu_heads --preset cpu --arm "4 heads of 32:" '
                     '--arm "2 heads of 64:n_head=2"'),
    "recipe_heads8": ("cpu_heads8", "8 attention heads of 16 dimensions vs the preset's 4 of 32",
                      'python -u experiments/ab.py cpu_heads8 --preset cpu --arm "4 heads of 32:" '
                      '--arm "8 heads of 16:n_head=8"'),
    "recipe_warmup": ("cpu_warmup", "No warmup and 400 warmup steps vs the preset's 100",
                      'python -u experiments/ab.py cpu_warmup --preset cpu --arm "warmup 100:" '
                      '--arm "no warmup:warmup_steps=0" --arm "warmup 400:warmup_steps=400"'),
    "recipe_clip": ("cpu_clip", "Gradient clipping at norm 1.0 vs the preset's none",
                    'python -u experiments/ab.py cpu_clip --preset cpu --arm "no clipping:" '
                    '--arm "clip 1.0:grad_clip=1.0"'),
    "recipe_relu2": ("cpu_relu2", "ReLU² (modded-nanogpt's feed-forward) vs the preset's SwiGLU",
                     'python -u experiments/ab.py cpu_relu2 --preset cpu --arm "SwiGLU:" '
                     '--arm "ReLU squared:ffn=relu2"'),
    "vanilla_compile": ("cpu_vanilla_compile", "The vanilla GPT's training step compiled vs eager (what auto picks)",
                        'python -u experiments/ab.py cpu_vanilla_compile --base vanilla --preset cpu '
                        '--arm "eager:" --arm "compiled:compile=on"'),
}


def recipe_ab_test(block: str) -> str:
    """One A/B test of the CPU recipe run with experiments/ab.py, every arm against the first (`ab_detail`)."""
    name, title, command = RECIPE_AB_TESTS[block]
    r = load(name)
    if r is None:
        return missing(name, command)
    return ab_detail(name, r, list(r["arms"]), title, {"vanilla": "vanilla GPT"}.get(r.get("base"), "ModernGPT"))


def whole_swap() -> str:
    """Swap 8 in full: vanilla GPT against ModernGPT at the CPU recipe's size."""
    return swap_detail(*WHOLE_SWAP, model="")


def extras() -> str:
    lines = []
    s1, s3 = load("swap1_rmsnorm"), load("swap3_rope")
    if s1 and "norm_timing_ms" in s1:
        t = s1["norm_timing_ms"]
        lines.append(f"- Norm alone, forward + backward on a {t['shape'][0]}×{t['shape'][1]} activation (median of "
                     f"{t['repeats']}, {s1['hardware']}): LayerNorm {t['layernorm']:.3f} ms, RMSNorm {t['rmsnorm']:.3f} ms.")
    if s3 and "length_generalisation" in s3:
        g = s3["length_generalisation"]
        lines.append(f"- RoPE past its training length (block_size {g['block_size']}, {s3['seeds']} seeds, {s3['preset']} "
                     f"preset): val loss {plus_minus(g['at_block_size'], s3['seeds'])} at block_size; at 2× "
                     f"block_size {plus_minus(g['2x_sliding_window'], s3['seeds'])} with sliding-window attention and "
                     f"{plus_minus(g['2x_full_attention'], s3['seeds'])} "
                     "with full attention.")
    return "\n".join(lines) or missing("swap3_rope", "python -u experiments/swap3_rope.py --preset ab-cpu")


def kvcache() -> str:
    kv = load("swap4_kvcache")
    if kv is None:
        return missing("swap4_kvcache", "python -u experiments/swap4_kvcache.py")
    lines = [f"Model: {kv['model']}; {kv['hardware']}, {kv['date']}, median of {kv['repeats']} runs after a warm-up.", "",
             "| batch | new tokens | cached tok/s | uncached tok/s | speedup | greedy output identical |",
             "|---|---|---|---|---|---|"]
    for r in kv["rows"]:
        lines.append(f"| {r['batch']} | {r['new_tokens']} | {r['cached_tok_s']:,.0f} | {r['uncached_tok_s']:,.0f} | "
                     f"{r['speedup']:.2f}× | {'yes' if r['greedy_identical'] else 'NO'} |")
    return "\n".join(lines)


def sample() -> str:
    r = load("train_modern")
    if r is None or "sample" not in r:
        return missing("train_modern", "python -u training/train_modern.py --preset cpu")
    s = r["sample"]
    return (f"From `{r['run_dir']}` (best val loss {r['best_val_loss']:.4f}), prompt {s['prompt']!r}, temperature "
            f"{s['temperature']}, seed {s['seed']}:\n\n```\n{s['text']}\n```")


def tokenizers() -> str:
    r = load("tokenizers")
    if r is None:
        return missing("tokenizers", "python -u experiments/compare_tokenizers.py --preset tokenizers-cpu")
    tc, mc = r["train_config"], r["model_config"]
    lines = [f"ModernGPT {mc['n_layer']}L×{mc['n_embd']}, block {mc['block_size']} tokens, {tc['max_steps']} steps × batch "
             f"{tc['batch_size']} (the same token budget for every tokenizer), lr {tc['lr']:g} {tc['schedule']}; "
             f"{r['seeds']} seed(s), {r['preset']} preset, {r['hardware']}, {r['date']}.", "",
             "| tokenizer | vocab | params (of which embedding) | chars per token | train tokens/s | train chars/s | "
             "text seen | best val bits/char |", "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['tokenizer']} | {row['vocab_size']:,} | {row['params']:,} ({row['embedding_params']:,}) | "
                     f"{row['chars_per_token']:.2f} | {row['tokens_per_sec']:,.0f} | {row['chars_per_sec']:,.0f} | "
                     f"{row['train_chars_seen'] / 1e6:.1f}M chars | {plus_minus(row['best_val_bpc'], r['seeds'], '.3f')} |")
    return "\n".join(lines)


def benchmark_records(quick: bool = False) -> list[dict]:
    """Every machine's benchmark record (results/benchmark_<machine>.json, one per class of machine: see
    device.hardware_tag), sorted by file name; the quick runs' records where asked, or where there is no full one."""
    full = [p for p in sorted(RESULTS.glob("benchmark_*.json")) if not p.name.startswith("benchmark_quick_")]
    paths = sorted(RESULTS.glob("benchmark_quick_*.json")) if quick or not full else full
    return [{**json.loads(p.read_text()), "file": f"results/{p.name}"} for p in paths]


def benchmark(quick: bool = False) -> str:
    """The benchmark's tables, machine by machine."""
    records = benchmark_records(quick)
    if not records:
        return missing("benchmark_<machine>", "python training/benchmark.py")
    return "\n\n".join(f"#### {r['hardware']} (`{r['file']}`)\n\n{benchmark_tables(r)}" for r in records)


def describe_ceilings(c: dict) -> str:
    """'bf16 matmul 2,450.0 GFLOP/s (2048³), fp32 matmul ..., copy 49.0 GB/s'; records before the ceiling tried
    two sizes have no matmul_size_<dtype> and timed 1024³."""
    dtypes = [key[len("matmul_gflops_"):] for key in c if key.startswith("matmul_gflops_")]
    parts = [f"{d} matmul {c['matmul_gflops_' + d]:,} GFLOP/s ({c.get('matmul_size_' + d, 1024)}³)" for d in dtypes]
    return ", ".join([*parts, f"copy {c['copy_gbps']:,} GB/s"])


def benchmark_command(r: dict) -> str:
    """The command of a benchmark record. Records written before the command named --nanogpt hold nanoGPT's rows
    all the same: the flag is named for them, so that the command shown is the one that measures those rows."""
    command = r["command"]
    if "nanogpt" in r and "--nanogpt" not in command:
        command += " --nanogpt .../nanoGPT"
    return f"python {command}"


def benchmark_tables(r: dict) -> str:
    """The tables of one benchmark record."""
    c = r["ceilings"]
    lines = [f"`{benchmark_command(r)}` on {r['hardware']}, torch {r['torch']}, "
             f"{r['date']}; median of {r['config']['repeats']} after a warm-up. Machine ceilings measured in the same run "
             "(the fastest of several runs): " + describe_ceilings(c) + ".", "",
             "| model | dtype | train tokens/s (batch " + str(r["config"]["train_batch"]) + ") | ms/step | MFU | "
             "tokens/s at the matmul ceiling | "
             f"tokens/s of the step's {r.get('kernels_alone', OLD_KERNELS_ALONE)} alone (MFU) | "
             "share of that |", "|---|---|---|---|---|---|---|---|"]
    for m in r["models"]:
        for t in m["training"]:
            kernels = (f"{t['kernel_ceiling_tokens_per_sec']:,.0f} ({t['kernel_ceiling_mfu']:.0%}) | "
                       f"{t['fraction_of_kernel_ceiling']:.0%}" if "kernel_ceiling_tokens_per_sec" in t else " | ")
            lines.append(f"| {m['name']} | {t['dtype']}{' compiled' if t['compiled'] else ''} | {t['tokens_per_sec']:,.0f} | "
                         f"{t['ms_per_step']:,.0f} | {t['mfu']:.0%} | {t['ceiling_tokens_per_sec']:,.0f} | {kernels} |")
    nano = r.get("nanogpt")
    for t in nano["training"] if nano else []:
        lines.append(f"| nanoGPT (its model.py, same run) | {t['dtype']} | {t['tokens_per_sec']:,.0f} | {t['ms_per_step']:,.0f} | "
                     f"{t['mfu']:.0%} | | | |")
    skipped = sorted({reason for m in r["models"] for reason in m.get("skipped", [])})
    lines += [f"\nNot timed: {reason}." for reason in skipped]
    lines += ["", "| model | batch | new tokens | mode | first token (ms) | ms/token | tokens/s | cached speedup | "
              "share of the bandwidth ceiling | share of the matvec ceiling |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m in r["models"]:
        for g in m["generation"]:
            kernel = format(g["fraction_of_matvec_ceiling"], ".0%") if "fraction_of_matvec_ceiling" in g else ""
            lines.append(f"| {m['name']} | {g['batch']} | {g['new_tokens']} | {g['mode']} | "
                         f"{g['ttft_ms']:,.1f} | {g['ms_per_token']:,.2f} | {g['tokens_per_sec']:,.0f} | "
                         f"{str(g['speedup']) + '×' if g['cached'] else ''} | "
                         f"{format(g['fraction_of_bandwidth_ceiling'], '.0%') if g['cached'] else ''} | {kernel} |")
    peers = [("nanoGPT (same run)", nano["generation"])] if nano else []
    peers += [("modern (same weights)", row) for m in r["models"] for row in m.get("llama_cpp", [])]
    for who, g in peers:
        lines.append(f"| {who} | {g['batch']} | {g['new_tokens']} | {g['mode']} | | | {g['tokens_per_sec']:,.0f} | | | |")
    memory = [(m["name"], row) for m in r["models"] for row in m.get("memory", [])]
    if memory:
        lines += ["", "| model | peak resident memory of a fresh process | MB |", "|---|---|---|"]
        for name, row in memory:
            task = (f"training, batch {row['size']}, {row['dtype']}" if row["task"] == "training"
                    else f"generating {row['size']} tokens, default path")
            lines.append(f"| {name} | {task} | {row['peak_resident_mb']:,.0f} |")
    lines += ["", *benchmark_quality(r), "", *benchmark_components(r), "", *benchmark_head_to_head(r), "",
              *benchmark_targets(r)]
    return "\n".join(lines)


def speed() -> str:
    """The README's speed summary, a paragraph per machine: batch-1 decoding of the modern model step by step,
    and its training rate."""
    lines = [speed_of(r) for r in benchmark_records() if modern_entry(r)]
    return "\n\n".join(lines) or missing("benchmark_<machine>", "python training/benchmark.py")


def speed_of(r: dict) -> str:
    m = modern_entry(r)
    rows = [g for g in m["generation"] if g["batch"] == 1]
    uncached = next(g for g in rows if not g["cached"])
    default = default_decoding(m)
    steps = [uncached, next(g for g in rows if g["cached"]), default, fastest_decoding(m)]
    steps = [g for i, g in enumerate(steps) if g is not None and g not in steps[:i]]  # each row once
    path = " → ".join(f"{g['tokens_per_sec']:,.0f} ({g['mode']}{': the default path' if g is default else ''})"
                      for g in steps)
    fastest, h = steps[-1], r.get("head_to_head")
    training = "" if h is None else (
        f" With default flags it trains at {h['tokens_per_sec']['modern']:,.0f} tokens/s ({h['dtype']}, "
        f"{'compiled' if h['compiled'] else 'eager'}, batch {h['batch']}), {h['mfu']:.0%} of the matmul ceiling timed "
        f"in the same rounds.")
    return (f"On {r['hardware']} (`{benchmark_command(r)}`, {r['date']}), ModernGPT at the reference size "
            f"decodes {uncached['new_tokens']} tokens at batch 1 at {path} tokens/s: "
            f"{fastest['speedup']:.0f}× the uncached path and {fastest['fraction_of_bandwidth_ceiling']:.0%} of the "
            f"ceiling set by reading every weight once per token at the measured copy bandwidth.{training}")


def modern_entry(r: dict) -> dict | None:
    return next((m for m in r["models"] if m["name"] == "modern"), None)


def default_decoding(m: dict) -> dict | None:
    """The cached batch-1 row of what `src/generate.py` runs without flags (the C step where the record says so)."""
    mode = "cached, C step" if m.get("default_engine") == "c" else "cached"
    return next((g for g in m["generation"] if g["batch"] == 1 and g["cached"] and g["mode"] == mode), None)


def fastest_decoding(m: dict) -> dict:
    """The fastest cached batch-1 row of a model: what the decoding target is judged on."""
    return max((g for g in m["generation"] if g["cached"] and g["batch"] == 1), key=lambda g: g["tokens_per_sec"])


def benchmark_quality(r: dict) -> list[str]:
    """What 16- and 8-bit weights cost a trained checkpoint: val loss and greedy agreement with fp32."""
    rows = [(m, q) for m in r["models"] for q in m.get("quality", [])]
    if not rows:
        return []
    lines = ["| checkpoint | weights | MB | val loss (8 fixed batches) | greedy tokens identical to fp32 |",
             "|---|---|---|---|---|"]
    for m, q in rows:
        lines.append(f"| {m['name']} | {q['label']} | {q['weights_mb']:.2f} | {q['val_loss']:.4f} | "
                     f"{q['greedy_tokens_identical']} of {q['greedy_tokens']} |")
    return lines


def benchmark_components(r: dict) -> list[str]:
    """Before/after of the speed changes inside one layer (reference width)."""
    if not r.get("components"):
        return []
    lines = ["| one layer, reference width | before | after | before → after | after / before |",
             "|---|---|---|---|---|"]
    for c in r["components"]:
        lines.append(f"| {c['component']} | {c['before']} | {c['after']} | {c['before_value']:,.0f} → "
                     f"{c['after_value']:,.0f} {c['unit']} | {c['speedup']}× |")
    return lines


def benchmark_head_to_head(r: dict) -> list[str]:
    """The table of the figures the training targets are judged by, timed in the same alternating rounds."""
    h = r.get("head_to_head")
    if h is None:
        return []
    tps = h["tokens_per_sec"]
    default = f"{h['dtype']}, {'compiled' if h.get('compiled') else 'eager'}"
    names = {"modern": f"modern, the real training step with default flags ({default})",
             "modern_eager": "... the same step eager (--compile off)",
             "modern_kernels_alone": f"... its {h.get('kernels_alone', OLD_KERNELS_ALONE)} alone",
             "nanogpt_fp32": "nanoGPT's step (its model.py, in a process of its own), fp32",
             "nanogpt_bf16": "nanoGPT's step, bf16 autocast",
             "nanogpt_fp32_memory_kept": "nanoGPT's step, fp32, given our allocator setting (freed memory kept)",
             "nanogpt_bf16_memory_kept": "nanoGPT's step, bf16 autocast, given our allocator setting"}
    lines = [f"Head to head, the figures of the training targets below: batch {h['batch']}, each step timed in turn "
             f"in {h['rounds']} alternating rounds (the median), with a {h['dtype']} {h.get('matmul_size', 1024)}³ matmul "
             + ("(the size that set the ceiling) " if "matmul_size" in h else "") + "in the same rounds at "
             f"{h['matmul_gflops']:,} GFLOP/s, the ceiling of the MFU column. Default flags: {h['compile_reason']}.", "",
             "| training step | tokens/s | MFU |", "|---|---|---|"]
    mfu = {"modern": h["mfu"], "modern_kernels_alone": h["kernels_alone_mfu"]}
    for key, value in tps.items():
        lines.append(f"| {names.get(key, key)} | {value:,.0f} | {format(mfu[key], '.0%') if key in mfu else ''} |")
    given = [(key[len("nanogpt_"):-len("_memory_kept")], value) for key, value in tps.items()
             if key.startswith("nanogpt_") and key.endswith("_memory_kept")]
    if given:
        lines += ["", "Given the allocator setting our Trainer makes (device.keep_freed_memory), nanoGPT's step runs at "
                  + "; ".join(f"{value / tps[f'nanogpt_{dtype}']:.2f}× its {dtype} speed in a process of its own, and "
                              f"ours at {tps['modern'] / value:.2f}× that" for dtype, value in given) + "."]
    return lines


def benchmark_targets(r: dict) -> list[str]:
    """Issue #22's targets for the modern model at the reference size, each next to what the run measured and,
    for training, what the step's kernels alone would score (the head-to-head rounds time them with the step): a
    target beyond that is beyond this machine with PyTorch's kernels, whatever runs around them."""
    m, nano, h = modern_entry(r), r.get("nanogpt"), r.get("head_to_head")
    if m is None:
        return []
    checks = []
    if h:
        tps = h["tokens_per_sec"]

        def versus(dtype):  # (ours / nanoGPT's, the kernels alone / nanoGPT's) for nanoGPT's step in `dtype`
            theirs = tps.get(f"nanogpt_{dtype}")
            return (None, None) if theirs is None else (tps["modern"] / theirs, tps["modern_kernels_alone"] / theirs)
        native_bf16 = h["dtype"] == "bf16"  # the targets differ for an AVX2-only CPU
        checks.append((f"training tokens/s (default flags: {h['dtype']}) / nanoGPT fp32", 2.0 if native_bf16 else 1.1,
                       *versus("fp32")))
        if native_bf16:
            checks.append(("... / nanoGPT bf16 autocast", 1.3, *versus("bf16")))
        checks.append((f"training MFU against the {h['dtype']} matmul ceiling of the same rounds",
                       0.70 if native_bf16 else 0.80, h["mfu"], h["kernels_alone_mfu"]))
    rows = {g["mode"]: g for g in m["generation"] if g["batch"] == 1 and g["cached"]}
    default = default_decoding(m)
    llama = {row["weights"]: row for row in m.get("llama_cpp", [])}
    fastest = rows.get("cached, int8 weights, C step")
    if default:
        checks.append((f"generation, default path ({default['mode']}) / nanoGPT's GPT.generate, batch 1, "
                       f"{default['new_tokens']} tokens", 20.0,
                       default["tokens_per_sec"] / nano["generation"]["tokens_per_sec"] if nano else None, None))
        checks.append(("... / llama.cpp f32 on the same weights", 0.8,
                       default["tokens_per_sec"] / llama["f32"]["tokens_per_sec"] if "f32" in llama else None, None))
    if fastest:
        checks.append(("fastest opt-in path (int8 weights, C step) / llama.cpp q8_0", 1.0,
                       fastest["tokens_per_sec"] / llama["q8_0"]["tokens_per_sec"] if "q8_0" in llama else None, None))
    lines = ["| target (modern, reference size) | wanted | measured | the step's kernels alone | met |",
             "|---|---|---|---|---|"]
    for what, wanted, got, ceiling in checks:
        shown = "not measured (see above)" if got is None else f"{got:.2f}"
        met = "–" if got is None else "yes" if got >= wanted else "no"
        if met == "no" and ceiling is not None and ceiling < wanted:
            met = "no: beyond the kernels alone"
        lines.append(f"| {what} | ≥ {wanted:g} | {shown} | {'' if ceiling is None else f'{ceiling:.2f}'} | {met} |")
    memory = {row["task"]: row for row in m.get("memory", [])}
    if "training" in memory:
        t = memory["training"]
        lines.append(f"| peak resident memory, training at batch {t['size']} ({t['dtype']}) | ≤ 4,096 MB | "
                     f"{t['peak_resident_mb']:,.0f} MB | | {'yes' if t['peak_resident_mb'] <= 4096 else 'no'} |")
    return lines + (bf16_loss_target() if h and h["dtype"] == "bf16" else [])  # bf16 training: where auto picks it


def bf16_loss_target() -> list[str]:
    """The precision target's row, from swap 7: bf16 training's best val loss against fp32's at equal steps, no
    worse than fp32 by more than twice the larger seed-to-seed std of the two arms."""
    r = load("swap7_bf16")
    if r is None:
        return []
    fp32, bf16 = r["arms"]["fp32"]["best_val"], r["arms"]["bf16"]["best_val"]
    noise = 2 * max(fp32[1], bf16[1])
    return [f"| best val loss, bf16 − fp32 (`experiments/swap7_bf16.py`, {r['preset']} preset, "
            f"{r['train_config']['max_steps']} steps, {r['seeds']} seeds each, {r['hardware']}) | ≤ {noise:.4f} "
            f"(2× the larger seed std) | {bf16[0] - fp32[0]:+.4f} | | {'yes' if bf16[0] - fp32[0] <= noise else 'no'} |"]


def inside() -> str:
    attention, embeddings, rope = load("attention"), load("embeddings"), load("rope")
    if not (attention and embeddings and rope):
        return missing("attention", "python experiments/visualize.py all")
    lines = []
    for name, data in attention["data"].items():
        heads = sorted(data["heads"], key=lambda h: h["mean_distance"])
        near, far = heads[0], heads[-1]
        lines.append(f"- `{name}`: the most local head is layer {near['layer']} head {near['head']} (looks back "
                     f"{near['mean_distance']:.1f} tokens on average, entropy {near['entropy']:.2f} nats); the longest-range "
                     f"is layer {far['layer']} head {far['head']} ({far['mean_distance']:.1f} tokens, entropy {far['entropy']:.2f}).")
    for name, data in embeddings["data"].items():
        lines.append(f"- `{name}` embeddings: the first two principal components hold "
                     f"{sum(data['explained_variance']):.0%} of the variance; for {data['case_pair_nearest']:.0%} of letters "
                     "the nearest embedding is the same letter in the other case.")
    periods = rope["data"]["period_in_positions"]
    lines.append(f"- RoPE in `{rope['data']['run']}` (head size {rope['data']['head_dim']}): the fastest pair turns once every "
                 f"{periods[0]:.1f} positions, the slowest once every {periods[-1]:,.0f}.")
    return "\n".join(lines)


def recipe() -> str:
    """The CPU recipe search, one row per change, per wall-clock budget (experiments/recipe_search.py)."""
    blocks = []
    for budget, purpose in ((120, "the demo's budget"), (600, "--preset cpu's budget")):
        r = load(f"recipe_{budget}s")
        if r is None:
            blocks.append(missing(f"recipe_{budget}s", f"python -u experiments/recipe_search.py --budget {budget} --steps ..."))
            continue
        lines = [f"**{budget} s of wall clock** ({purpose}; evaluations included, `--max-time {budget}`):", "",
                 "| step | what changed | val loss at the budget | seeds | steps done | wall clock (s) | train tokens/s | "
                 "params | dtype | measured on |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['step']} | {row['change']} | {plus_minus(row['val'], row['seeds'])} | {row['seeds']} | "
                         f"{', '.join(map(str, row['steps_done']))} | {', '.join(f'{t:.0f}' for t in row['elapsed_s'])} | "
                         f"{statistics.fmean(row['tokens_per_sec']):,.0f} | {row['params']:,} | {row['dtype']} | "
                         f"{row['hardware']}, {row['date']} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def measured_on(r: dict) -> str:
    """Where and how a training run ran, for a table's last column: every machine of a run that --resume moved,
    with the steps each took (its time and tokens/s are of them all)."""
    machines = describe_machines(r.get("machines", []), r["steps"])
    if machines:
        return f"{machines}, {r['time'][:10]}"
    return f"{r['hardware']}, {run_precision(r)}{', compiled' if r.get('compiled') else ''}, {r['time'][:10]}"


def run_precision(r: dict) -> str:
    """A training run's precision, and the flag that forced it where --dtype auto did not pick it."""
    return r["dtype"] if r["dtype_reason"].startswith("auto") else f"{r['dtype']} (--dtype {r['dtype']})"


def runs_with(architecture: str, values_for, results: Path | None = None) -> list[dict]:
    """Every run of `architecture` in results/train_*.json (or `results`/train_*.json) whose settings include all of
    `values_for(record)`, oldest first. A run's file is named after its --out-dir (train_<run>.json), so a run on
    another class of machine, given a folder of its own (checkpoints/modern-cpu-avx2), sits beside the others
    instead of replacing them."""
    found = []
    for path in sorted((results or RESULTS).glob("train_*.json")):
        r = read_json(path)
        try:
            config = {**r["model_config"], **r["train_config"]}
            if r["architecture"] == architecture and all(config.get(k) == v for k, v in values_for(r).items()):
                found.append(r)
        except (KeyError, TypeError, AttributeError) as err:
            what = f"it has no {err}" if isinstance(err, KeyError) else "it holds no record of a run"
            raise UserError(f"{repo_relative(path)} is not a training run's results file ({what}): the training "
                            "scripts write those; restore it or remove it") from None
    return sorted(found, key=lambda r: r["time"])


def preset_runs(preset: str) -> list[dict]:
    """Every char-level modern run trained with `preset`'s settings (with its fp32 values where the run trained in
    fp32 on a CPU, as the training scripts lay them)."""
    return runs_with("modern", lambda r: {"tokenizer": "char", **preset_values(
        preset, fp32=takes_fp32_values(r["device"].split(":")[0], r["dtype"]))})


def reference_runs(architecture: str, results: Path | None = None) -> list[dict]:
    """Our runs of `architecture` at its reference config: the training script's own defaults, no preset
    (cli.RUN_DEFAULTS), whatever their seed, --patience, device, precision or --out-dir."""
    model, train = RUN_DEFAULTS[architecture]
    recipe = {k: v for k, v in {**asdict(model), **asdict(train)}.items() if k not in NOT_THE_RECIPE}
    return runs_with(architecture, lambda r: recipe, results)


def reference() -> str:
    """Our runs at the reference configs beside the original project's best val losses (quoted, and labelled so);
    below the table, the command that makes each run of ours it still lacks."""
    rows, missing_runs = [], []
    for architecture, (params, loss, step) in ORIGINAL.items():
        model, train = RUN_DEFAULTS[architecture]
        config = describe_config(asdict(model), asdict(train), train.batch_size * train.grad_accum)
        rows.append(f"| {architecture} | {config} | the original project (quoted from our issues; not our run) | "
                    f"{params:,} | {loss:.4f} | {step} | | T4 |")
        ours = reference_runs(architecture)
        if not ours:
            missing_runs.append(f"`python -u training/{TRAINING_SCRIPTS[architecture]} --out-dir "
                                f"checkpoints/{architecture}-reference --patience 3` writes "
                                f"`results/train_{architecture}-reference.json`")
        for r in ours:
            patience = r["train_config"]["patience"]
            run = f"ours, seed {r['train_config']['seed']}" + (f", --patience {patience}" if patience else "")
            rows.append(f"| {architecture} | {config} | {run} | {r['params']:,} | {r['best_val_loss']:.4f} "
                        f"({r['best_val_loss'] - loss:+.4f}) | {r['best_step']} of {r['steps']} | "
                        f"{r['elapsed_s'] / 60:.1f} min | {measured_on(r)} |")
    table = "\n".join(["| model | config | run | params | best val loss (ours − original) | best step | time | "
                       "measured on |", "|---|---|---|---|---|---|---|---|", *rows])
    if not missing_runs:
        return table
    lacking = ("None of our runs is at these configs yet" if len(missing_runs) == len(ORIGINAL)
               else "No run of ours is at the other config yet")
    return (f"{table}\n\n{lacking}. A GPU does each in minutes, a CPU in hours: "
            + " and ".join(missing_runs) + ", which this table then shows.")


def cpu_recipes() -> str:
    """The README's table of the two CPU presets: how long each run of them trained, on which machine, and the val
    loss it reached against the preset's target."""
    rows = []
    for preset, target in (("demo", 1.58), ("cpu", 1.50)):
        for r in preset_runs(preset):
            budget = r["train_config"]["max_time"]
            met = r["best_val_loss"] <= target and r["elapsed_s"] <= budget
            rows.append(f"| `--preset {preset}` | {r['params']:,} | {r['steps']:,} | {r['elapsed_s']:.0f} s "
                        f"(budget {budget:g} s) | {r['best_val_loss']:.4f} | ≤ {target} | {'yes' if met else 'no'} | "
                        f"{measured_on(r)} |")
    if not rows:
        return missing("train_demo", "python -u training/train_modern.py --preset demo --out-dir checkpoints/demo")
    return "\n".join(["| preset | params | steps | wall clock, evaluations included | val loss | target | met | "
                       "measured on |", "|---|---|---|---|---|---|---|---|", *rows])


def llama_cpp() -> str:
    """An exported checkpoint in real llama.cpp against ours (experiments/llama_cpp_check.py)."""
    r = load("llama_cpp")
    if r is None:
        return missing("llama_cpp", "python -u experiments/llama_cpp_check.py")
    exports = " and ".join(f"`{command}`" for command in r["export_commands"].values())
    lines = [f"`{r['command']}` on {r['hardware']}, llama-cpp-python {r['llama_cpp_python']}, {r['date']}: "
             f"{r['checkpoint']}, exported by {exports}.", "",
             "| GGUF | prompt tokenized to our ids | largest logit difference over a block_size window | greedy tokens "
             "identical within block_size | first greedy difference | most probability on a special token |",
             "|---|---|---|---|---|---|"]
    for gguf_type, g in r["gguf"].items():
        lines.append(f"| {gguf_type} | {'yes' if g['tokenizes_prompt_to_our_ids'] else 'NO'} | "
                     f"{g['max_logit_difference']:.2g} | {g['greedy_identical_within_block']} of "
                     f"{g['greedy_tokens_within_block']} | token {g['greedy_first_difference']} of {g['greedy_tokens']} | "
                     f"{g['max_special_token_probability']:.1g} |")
    lines += [f"\n{gguf_type}: llama.cpp's extra buffer types {g['extra_buffer_types']} (see the script's docstring)."
              for gguf_type, g in r["gguf"].items()
              if not g.get("extra_buffer_types", "on").startswith("on")]
    f32 = r["gguf"]["f32"]
    return "\n".join(lines + ["", f"llama.cpp's greedy continuation of {r['prompt']!r} (f32), as far as block_size:",
                               "", "```", f32["llama_cpp_text"], "```"])


FIGURE_CAPTIONS = {
    "losses.png": "train and validation loss of every run in checkpoints/, and val bits/char — `experiments/visualize.py losses`",
    "reference.png": "our runs at the original project's configs: train and validation loss at each evaluation, beside "
                     "the original's quoted best — `experiments/visualize.py reference`",
    "swap1_rmsnorm.png": "LayerNorm vs RMSNorm, val loss (band: min–max over seeds) — `experiments/swap1_rmsnorm.py`",
    "swap2_swiglu.png": "ReLU vs SwiGLU vs ReLU² — `experiments/swap2_swiglu.py`",
    "swap3_rope.png": "learned positions vs RoPE — `experiments/swap3_rope.py`",
    "swap4_kvcache.png": "generation speed with and without the KV cache — `experiments/swap4_kvcache.py`",
    "swap5_muon.png": "AdamW vs Muon on ModernGPT, val loss (band: min–max over seeds) — `experiments/swap5_muon.py`",
    "swap6_schedule.png": "cosine vs warmup-stable-decay on ModernGPT — `experiments/swap6_schedule.py`",
    "swap7_bf16.png": "fp32 vs bf16 autocast training on the CPU recipe — `experiments/swap7_bf16.py`",
    "swap8_modern.png": "vanilla GPT vs ModernGPT at the CPU recipe's size — `experiments/swap8_modern.py`",
    "cpu_lr.png": "the CPU recipe at its learning rate of 1e-3 vs 2e-3 — `experiments/ab.py cpu_lr`",
    "cpu_dropout.png": "the CPU recipe without dropout vs with dropout 0.1 — `experiments/ab.py cpu_dropout`",
    "cpu_muon.png": "the CPU recipe with AdamW vs Muon for the hidden matrices — `experiments/ab.py cpu_muon`",
    "cpu_batch.png": "the CPU recipe at batch 32 vs batch 16 for twice the steps, against training tokens — "
                     "`experiments/ab.py cpu_batch`",
    "cpu_decay.png": "the CPU recipe with its learning rate decayed over the last 20% vs the last 40% of the run — "
                     "`experiments/ab.py cpu_decay`",
    "cpu_heads.png": "the CPU recipe's 4 attention heads of 32 dimensions vs 2 heads of 64 — "
                     "`experiments/ab.py cpu_heads`",
    "cpu_heads8.png": "the CPU recipe's 4 attention heads of 32 dimensions vs 8 heads of 16 — "
                      "`experiments/ab.py cpu_heads8`",
    "cpu_warmup.png": "the CPU recipe's 100 warmup steps vs none and vs 400 — `experiments/ab.py cpu_warmup`",
    "cpu_clip.png": "the CPU recipe without gradient clipping vs clipped at norm 1.0 — `experiments/ab.py cpu_clip`",
    "cpu_relu2.png": "the CPU recipe with SwiGLU vs ReLU² feed-forward layers — `experiments/ab.py cpu_relu2`",
    "cpu_vanilla_compile.png": "the vanilla GPT on the CPU recipe, eager (what `--compile auto` picks) vs compiled — "
                               "`experiments/ab.py cpu_vanilla_compile`",
    "cpu_width.png": "the CPU recipe's 6 layers × 128 vs 4 × 160 and 3 × 184, about the same parameters — "
                     "`experiments/ab.py cpu_width`",
    "swap9_decay.png": "weight decay on every weight vs on the matrices only, on the CPU recipe — `experiments/swap9_decay.py`",
    "tokenizers.png": "val bits per character for char, our BPE 512/1024/4096 and GPT-2 BPE — `experiments/compare_tokenizers.py`",
    "attention_vanilla.png": "every head of the vanilla model on a line of Romeo and Juliet — `experiments/visualize.py attention`",
    "attention_modern.png": "every head of the modern model on the same line — `experiments/visualize.py attention`",
    "attention_heads.png": "mean distance looked back vs entropy, per head: local and long-range heads — `experiments/visualize.py attention`",
    "rope.png": "RoPE's rotation per dimension pair, and the trained model's q·k score vs distance — `experiments/visualize.py rope`",
    "embeddings.png": "the 65 character embeddings projected by PCA — `experiments/visualize.py embeddings`",
}


def benchmark_captions() -> dict:
    """The benchmark's figures, one per machine record: {file name: caption}."""
    return {f"{Path(r['file']).stem}.png": f"training and generation speed against the measured ceilings of "
            f"{r['hardware']} — `training/benchmark.py{' --quick' if r['quick'] else ''}`"
            for quick in (False, True) for r in benchmark_records(quick)}


def figures() -> str:
    lines = [f"- [`images/{name}`](images/{name}): {text}" for name, text in {**FIGURE_CAPTIONS,
                                                                            **benchmark_captions()}.items()
             if (REPO_ROOT / "images" / name).exists()]
    return "\n".join(lines) or "_No figures yet._"


def gallery() -> str:
    """The README's pictures: a few figures inline, each with its caption."""
    shown = ["reference.png", "losses.png", "swap3_rope.png", "tokenizers.png", "attention_modern.png"]
    lines = [f"![{name}](images/{name})\n\n_{FIGURE_CAPTIONS[name]}_\n" for name in shown
             if (REPO_ROOT / "images" / name).exists()]
    return "\n".join(lines) or "_No figures yet._"


BLOCKS = {"runs": runs, "swaps": swaps, "modern_table": modern_table, "training_swaps": training_swaps,
          "llama_cpp": llama_cpp, "recipe": recipe, "cpu_recipes": cpu_recipes, "extras": extras, "kvcache": kvcache,
          "sample": sample, "figures": figures, "gallery": gallery, "tokenizers": tokenizers, "benchmark": benchmark, "inside": inside,
          "speed": speed, "reference": reference, "whole_swap": whole_swap,
          **{block: functools.partial(recipe_ab_test, block) for block in RECIPE_AB_TESTS}}
MARKER = re.compile(r"(<!-- report:(\w+) -->\n)(.*?)(<!-- /report:\2 -->)", re.S)


def render(text: str) -> str:
    def fill(match):
        name = match.group(2)
        if name not in BLOCKS:
            raise UserError(f"unknown report block {name!r}")
        return match.group(1) + BLOCKS[name]() + "\n" + match.group(4)
    return MARKER.sub(fill, text)
