"""Swap 4: generation with and without the KV cache, measured properly.

For 64, 256, 512 and 1024 new tokens at batch 1 and 8: one warm-up run, device synchronisation, the
median of --repeats timed runs, tokens/s and the speedup; greedy outputs of both modes must be identical.
Times --checkpoint; without it, checkpoints/modern when it exists, else random weights at the reference config
(said in the output: the speed is the same, the text is not).

    python -u experiments/swap4_kvcache.py
"""
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

from checks import check_int  # noqa: E402
from checkpoint import describe_record, holds_checkpoint, load_model  # noqa: E402
from common import (REPO_ROOT, ArgumentParser, UserError, atomic_write_json,  # noqa: E402
                    add_output_folders, repo_relative, run_cli)
from device import describe_hardware, pick_device  # noqa: E402
from engine import generate  # noqa: E402
from measure import median_seconds  # noqa: E402
from model_modern import ModernGPT  # noqa: E402
from plots import pyplot, save_figure  # noqa: E402


def build_parser():
    p = ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--checkpoint", default=None,
                   help="model to time: a run folder, checkpoint folder or Hub repo id (default: checkpoints/modern "
                        "if it exists, else random weights at the reference config)")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 512, 1024], help="new tokens per run")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per setting (median reported)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    add_output_folders(p)
    return p


def get_model(path: str | None, device):
    """The model to time and a line saying which. A --checkpoint that was asked for must load (a mistyped one is an
    error, not random weights); only the default folder may be missing."""
    default = REPO_ROOT / "checkpoints" / "modern"
    if path is None and not holds_checkpoint(default):
        torch.manual_seed(0)
        model = ModernGPT(vocab_size=65, dropout=0.0).to(device).eval()
        return model, (f"random weights at the reference config ({model.num_params():,} params): no checkpoint at "
                       f"{repo_relative(default)}")
    path = default if path is None else path
    model, record = load_model(path, device=device)
    return model, describe_record(repo_relative(path), record)


def time_generation(model, prompt, new_tokens: int, use_cache: bool, repeats: int, device):
    """(median seconds of a greedy generation of new_tokens, its output), after a short warm-up run."""
    generate(model, prompt, min(new_tokens, 16), temperature=0.0, use_cache=use_cache)  # warm-up
    outputs = []
    seconds = median_seconds(lambda: outputs.append(generate(model, prompt, new_tokens, temperature=0.0,
                                                             use_cache=use_cache)), repeats, device, warmup=0)
    return seconds, outputs[-1]


def plot(rows, title, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for batch in sorted({r["batch"] for r in rows}):
        sub = [r for r in rows if r["batch"] == batch]
        lengths = [r["new_tokens"] for r in sub]
        ax.plot(lengths, [r["cached_tok_s"] for r in sub], marker="o", label=f"cached, batch {batch}")
        ax.plot(lengths, [r["uncached_tok_s"] for r in sub], marker="x", linestyle="--", label=f"uncached, batch {batch}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("new tokens generated")
    ax.set_ylabel("tokens / second")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    save_figure(fig, path)


def main(argv=None):
    args = build_parser().parse_args(argv)
    for flag, values, high in (("--repeats", [args.repeats], 1000), ("--lengths", args.lengths, 10**6),
                               ("--batches", args.batches, 1024)):
        for value in values:  # past these, an allocation of terabytes would fail inside PyTorch
            check_int(value, flag, 1, high)
    device = pick_device(args.device)
    model, source = get_model(args.checkpoint, device)
    print(f"model: {source}\ndevice: {device} ({describe_hardware(device)})")
    rows = []
    for batch in args.batches:
        prompt = torch.zeros(batch, 1, dtype=torch.long, device=device)
        if model.tokenizer is not None:
            prompt = torch.tensor([model.tokenizer.encode("ROMEO:")] * batch, device=device)
        for n in args.lengths:
            t_cached, out_cached = time_generation(model, prompt, n, True, args.repeats, device)
            t_plain, out_plain = time_generation(model, prompt, n, False, args.repeats, device)
            row = {"batch": batch, "new_tokens": n, "cached_tok_s": batch * n / t_cached,
                   "uncached_tok_s": batch * n / t_plain, "speedup": t_plain / t_cached,
                   "greedy_identical": bool(torch.equal(out_cached, out_plain))}
            rows.append(row)
            print(f"batch {batch:>2} | {n:>5} tokens | cached {row['cached_tok_s']:>9,.0f} tok/s | uncached "
                  f"{row['uncached_tok_s']:>9,.0f} tok/s | speedup {row['speedup']:5.2f}x | greedy identical "
                  f"{row['greedy_identical']}", flush=True)
    record = {"experiment": "swap4_kvcache", "model": source, "device": str(device), "hardware": describe_hardware(device),
              "date": datetime.now(timezone.utc).date().isoformat(), "torch": torch.__version__,
              "repeats": args.repeats, "context_length_uncached": model.context_length(),
              "block_size": model.config.block_size, "rows": rows}
    atomic_write_json(Path(args.results_dir) / "swap4_kvcache.json", record)
    plot(rows, f"KV cache: greedy generation speed ({record['hardware']}, {record['date']})",
         Path(args.images_dir) / "swap4_kvcache.png")
    if not all(r["greedy_identical"] for r in rows):
        raise UserError("cached and uncached greedy outputs differ: the KV cache is broken")
    print(f"wrote {Path(args.results_dir) / 'swap4_kvcache.json'} and {Path(args.images_dir) / 'swap4_kvcache.png'}")
    return record


if __name__ == "__main__":
    run_cli(main)
