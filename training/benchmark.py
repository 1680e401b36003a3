"""Benchmark: how fast tinyllm trains and generates on this machine, and how close that is to the machine's limits.

    python training/benchmark.py --quick      # a few minutes on a 2-core CPU
    python training/benchmark.py              # the full run: more lengths, batch 8, bf16, samples

Measured in one run, each with a warm-up, device synchronisation and the median of --repeats (the ceilings: the
best of up to 20 runs, since a ceiling is what the machine can do):
  ceilings    matmul GFLOP/s (fp32, bf16: the faster of dense 1024^3 and 2048^3 products) and memory copy GB/s
              of this machine
  training    tokens/s of a full optimizer step (the real step of src/trainer.py), per model and dtype,
              and its MFU: model FLOPs per second / the measured matmul ceiling of that dtype; and the step's
              kernel ceiling: its matrix products, attention kernels and optimizer update alone, at the model's
              own shapes
  peers       with --nanogpt DIR, nanoGPT's model.py timed the same way in the same run (its training step in a
              process of its own, as its users run it); where llama-cpp-python is installed, llama.cpp decoding
              the same weights (GGUF f32 and q8_0)
  targets     the figures issue #22's training targets are judged by, timed in alternating rounds (the median
              of 3 x --repeats) so the machine's drift falls on all alike: our step with default flags, its
              kernels alone, nanoGPT's step (with --nanogpt) and the dense matmul of the ceiling
  memory      peak resident memory of a training step at batch 64 and of generation, each in a fresh process
  generation  time to first token, ms per token and tokens/s, cached and uncached, batch 1 and 8; for
              cached decoding also the bytes of weights read per token / the measured copy bandwidth, and the
              time of the step's matrix-vector products alone (the kernel ceiling); at batch 1, RoPE models
              also with bf16 / int8 weights, a torch.compile'd step and the C step of src/cdecode.c (--decode)
  components  before / after of the speed changes inside one layer: the teaching-head loop vs the fused
              projection + SDPA (training), a torch.cat cache vs the preallocated KVCache (decoding), and on a
              CPU attention's kernel in bf16 vs fp32 (and vs compiled block-causal bf16), RMSNorm's
              autograd vs closed-form backward
  quality     val loss and greedy agreement of each checkpoint with fp32, bf16 and int8 weights, and int8
              through the C step (modern checkpoints)
  samples     "ROMEO:", "To be", "KING HENRY:" at temperatures 0.5 / 0.8 / 1.0 from each checkpoint
Speed is measured at the reference size (6 layers x 384, block 256) unless --size checkpoint: a dense
model's speed does not depend on its weights, so random weights stand in when no checkpoint has that size.
This script measures and writes results/benchmark[_quick]_<machine>.json and its figure, one per class of machine
(device.hardware_tag: cpu-avx2, cpu-avx512bf16, cuda-<gpu>, ...); experiments/report.py renders the tables
(`python experiments/report.py --show benchmark`). What each part measures: src/bench.py and src/peers.py; how it
times and what a ceiling is: src/measure.py. Where that record holds a run of the same command, the run starts by
saying how long that one took.
"""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

from bench import (C_STEP_WEIGHTS, DECODE_VARIANTS, KERNELS_ALONE, MODELS, benchmark_model, head_to_head,  # noqa: E402
                   layer_components, plot, split_variant)
from checks import check_int  # noqa: E402
from common import (REPO_ROOT, ArgumentParser, UserError, add_output_folders, atomic_write_json, read_json,  # noqa: E402
                    repo_relative, run_cli)
from device import DTYPES, benchmark_record_name, describe_hardware, hardware_tag, pick_device, resolve_dtype  # noqa: E402
from engine import ENGINES, WEIGHTS  # noqa: E402
from measure import measure_ceilings  # noqa: E402
from model import GPTConfig  # noqa: E402
from peers import load_nanogpt, nanogpt_rows  # noqa: E402


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer settings: fp32 only, batch 1, 200 new tokens")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--size", choices=["reference", "checkpoint"], default="reference",
                   help="time the reference config, or the checkpoint's own config")
    p.add_argument("--checkpoints", default=None,
                   help="folder with the vanilla/ and modern/ run folders, whose samples and quality rows the record "
                        "gets (default: checkpoints in the repo; random weights stand in for a run not there)")
    p.add_argument("--dtypes", nargs="+", default=None,
                   help="training dtypes (default: what --dtype auto picks here first, then the others of fp32 and bf16, "
                        "fp16 too on CUDA; quick: the auto pick only)")
    p.add_argument("--train-batch", type=int, default=8, help="sequences per training step")
    p.add_argument("--gen-tokens", type=int, default=None, help="new tokens per run at batch 1 (default: 500, quick 200)")
    p.add_argument("--batched-gen-tokens", type=int, default=128,
                   help="new tokens per run at batch > 1 (the uncached path costs batch x context per token)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="generation batch sizes (default: 1 8, quick 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per figure (the median is reported)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd training")
    p.add_argument("--decode", nargs="*", default=None,
                   help="extra batch-1 cached decoding variants of RoPE models: weights fp32|bf16|int8, then "
                        "'+compile' for a torch.compile'd step or '+c' for the C step (fp32 or int8 weights) "
                        f"(default: {' '.join(DECODE_VARIANTS['full'])}; quick: {' '.join(DECODE_VARIANTS['quick'])})")
    p.add_argument("--no-components", action="store_true", help="skip the one-layer before/after timings")
    p.add_argument("--nanogpt", default=None, metavar="DIR",
                   help="a checkout of karpathy/nanoGPT: its model.py is timed beside ours in the same run (training "
                        "fp32 and bf16 autocast, GPT.generate), at its Shakespeare-char size: 6 x 384, block 256")
    p.add_argument("--memory-batch", type=int, default=None,
                   help="peak resident memory of a training step at this batch and of generation, each in a fresh "
                        "process (default: 64; quick: not measured)")
    p.add_argument("--replot", action="store_true", help="measure nothing: redraw the plot from the results file")
    p.add_argument("--sample-tokens", type=int, default=None, help="characters per sample (default: 200, quick 60)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--data", default=None, help="training text (default: data/input.txt)")
    add_output_folders(p)
    return p


def fill_defaults(args, device: torch.device) -> None:
    """The quick or full defaults of the flags left unset, a --checkpoints folder that exists, then every count in its
    range: a count past it would fail deep inside PyTorch (an allocation of terabytes) after minutes of measuring."""
    if args.checkpoints is None:
        args.checkpoints = str(REPO_ROOT / "checkpoints")
    elif not Path(args.checkpoints).is_dir():  # a typo would measure random weights and sample noise, said once
        raise UserError(f"--checkpoints {args.checkpoints}: no such folder; pass the folder that holds the vanilla/ "
                        "and modern/ run folders, or leave the flag out")
    if args.dtypes is None:  # the default first: the rows the docs quote as "default flags"
        default = resolve_dtype("auto", device).dtype
        others = [d for d in ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else []) if d != default]
        args.dtypes = [default] if args.quick else [default, *others]
    for dtype in args.dtypes:
        if dtype not in DTYPES:
            raise UserError(f"unknown dtype {dtype!r} in --dtypes; choose from {', '.join(DTYPES)}")
    if args.decode is None:
        args.decode = DECODE_VARIANTS["quick" if args.quick else "full"]
    for variant in args.decode:
        weights, engine = split_variant(variant)
        if weights not in WEIGHTS or engine not in ENGINES:
            raise UserError(f"unknown --decode variant {variant!r}; use fp32|bf16|fp16|int8, optionally +compile or +c")
        if engine == "c" and weights not in C_STEP_WEIGHTS:
            raise UserError(f"--decode {variant}: the C step runs {' or '.join(C_STEP_WEIGHTS)} weights; "
                            f"use {weights} or {weights}+compile")
    args.gen_tokens = args.gen_tokens if args.gen_tokens is not None else (200 if args.quick else 500)
    args.batches = args.batches or ([1] if args.quick else [1, 8])
    args.sample_tokens = args.sample_tokens if args.sample_tokens is not None else (60 if args.quick else 200)
    if args.memory_batch is None:
        args.memory_batch = 0 if args.quick else 64
    for flag, value, low, high in (("--repeats", args.repeats, 1, 1000), ("--train-batch", args.train_batch, 1, 1024),
                                   ("--gen-tokens", args.gen_tokens, 2, 10**6),
                                   ("--batched-gen-tokens", args.batched_gen_tokens, 2, 10**5),
                                   *(("--batches", batch, 1, 1024) for batch in args.batches),
                                   ("--memory-batch (0: not measured)", args.memory_batch, 0, 1024),
                                   ("--sample-tokens", args.sample_tokens, 0, 10**5)):
        check_int(value, flag, low, high)
    if args.nanogpt:
        load_nanogpt(args.nanogpt)  # a wrong path fails now, not after minutes of measuring


def command_line(args) -> str:
    """The command that produced a record, stored in it (the figure's title and the docs quote it). A nanoGPT
    checkout outside the repo is named as repo_relative names it (.../nanoGPT): no record holds a machine's folders."""
    return ("training/benchmark.py" + (" --quick" if args.quick else "") + (" --compile" if args.compile else "")
            + (f" --nanogpt {repo_relative(args.nanogpt)}" if args.nanogpt else ""))


def expected_duration(path: Path, command: str) -> str | None:
    """How long the same command took when it last wrote this machine's record (`path`): the ETA of a run of up to
    tens of minutes, said before it starts. None without such a record (or one that cannot be read: it is
    rewritten at the end anyway)."""
    try:
        last = read_json(path) if path.exists() else None
    except UserError:
        return None
    if not isinstance(last, dict) or last.get("command") != command or not isinstance(last.get("elapsed_s"), (int, float)):
        return None
    return (f"expect about {last['elapsed_s'] / 60:.0f} minutes: the last `{command}` on this kind of machine took "
            f"{last['elapsed_s']:.0f} s ({repo_relative(path)}, {last.get('date', 'undated')})")


def replot(args) -> None:
    """--replot: redraw the figure of every benchmark record in --results-dir, from the file alone."""
    records = sorted(Path(args.results_dir).glob("benchmark*.json"))
    if not records:
        raise UserError(f"--replot: no benchmark*.json in {args.results_dir}; run the benchmark first")
    for results in records:
        try:
            plot(read_json(results), Path(args.images_dir) / f"{results.stem}.png")
        except (KeyError, TypeError, IndexError) as err:
            raise UserError(f"{results} is not a record of this benchmark (no {err}); rerun the benchmark") from None
        print(f"redrew {Path(args.images_dir) / f'{results.stem}.png'} from {results}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.replot:
        return replot(args)
    device = pick_device(args.device)
    # one record per class of machine: a run here never overwrites figures another kind of machine measured
    out_name = benchmark_record_name(device, args.quick)
    fill_defaults(args, device)
    started = time.perf_counter()
    print(f"device: {device} ({describe_hardware(device)}), torch {torch.__version__}", flush=True)
    eta = expected_duration(Path(args.results_dir) / f"{out_name}.json", command_line(args))
    if eta:
        print(eta, flush=True)
    ceilings = measure_ceilings(device, args.repeats, args.dtypes)
    print("ceilings: " + ", ".join(f"{k} {v:,}" for k, v in ceilings.items()), flush=True)
    record = {"command": command_line(args), "hardware": describe_hardware(device), "device": str(device),
              "hardware_tag": hardware_tag(device), "torch": torch.__version__,
              "date": datetime.now(timezone.utc).date().isoformat(), "quick": args.quick, "ceilings": ceilings,
              "training_dtype_auto": vars(resolve_dtype("auto", device)), "kernels_alone": KERNELS_ALONE,
              "config": {"size": args.size, "train_batch": args.train_batch, "gen_tokens": args.gen_tokens,
                         "batched_gen_tokens": args.batched_gen_tokens,
                         "batches": args.batches, "repeats": args.repeats, "dtypes": args.dtypes}, "models": []}
    for name in args.models:
        entry = benchmark_model(name, args, device, ceilings)
        record["config"]["block_size"] = entry["config"]["block_size"]
        record["models"].append(entry)
    if args.nanogpt:
        print("\nnanoGPT, in the same run:", flush=True)
        record["nanogpt"] = nanogpt_rows(args.nanogpt, args, device, ceilings)
    modern = next((m for m in record["models"] if m["name"] == "modern"), None)
    if modern:
        print("\nthe training targets, head to head in alternating rounds:", flush=True)
        record["head_to_head"] = head_to_head(GPTConfig.from_dict(modern["config"]), args.nanogpt, args, device,
                                              ceilings)
    if not args.no_components:
        print("\ncomponents (one layer, reference width):", flush=True)
        record["components"] = layer_components(device, args.repeats)
    record["elapsed_s"] = round(time.perf_counter() - started, 1)
    for m in record["models"]:
        for s in m["samples"][:3]:
            print(f"\n[{m['name']}, {s['prompt']!r}, temperature {s['temperature']}]\n{s['text']}")
    atomic_write_json(Path(args.results_dir) / f"{out_name}.json", record)
    plot(record, Path(args.images_dir) / f"{out_name}.png")
    print(f"\nwrote {Path(args.results_dir) / f'{out_name}.json'} and {Path(args.images_dir) / f'{out_name}.png'} "
          f"in {record['elapsed_s']:.0f} s; the tables: python experiments/report.py --show "
          f"{'benchmark_quick' if args.quick else 'benchmark'}")
    return record


if __name__ == "__main__":
    run_cli(main)
