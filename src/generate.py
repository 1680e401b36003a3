"""Generate text from a trained checkpoint (vanilla, modern or BPE; local folder or Hub repo).

    python src/generate.py --demo                       # five sampling settings; trains a small model first if none exists
    python src/generate.py --checkpoint checkpoints/modern --prompt "JULIET:" --tokens 300 --temp 0.8

The command line only: loading is checkpoint.py's, generating engine.py's. It never writes or deletes a file,
except the first --demo on a fresh clone, which trains its model into checkpoints/.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from checks import check_int, check_seed  # noqa: E402
from checkpoint import describe_record, holds_checkpoint, load_model  # noqa: E402
from cli import training_main  # noqa: E402
from common import REPO_ROOT, ArgumentParser, UserError, repo_relative, run_cli  # noqa: E402
from device import hardware_tag, pick_device  # noqa: E402
from engine import (ENGINES, WEIGHTS, check_engine, check_sampling_args, choose_weights, encode_prompt,  # noqa: E402
                    generate_text, prepare_decoder, prepare_weights, sample_prompt)
from presets import PRESETS  # noqa: E402

DEMO_SETTINGS = [  # (label, temperature, top_k, top_p)
    ("temperature 0.5", 0.5, None, None),
    ("temperature 0.8", 0.8, None, None),
    ("temperature 1.0", 1.0, None, None),
    ("temperature 1.0, top-k 10", 1.0, 10, None),  # of 65 characters: top-k 50 gave temperature 1.0's text again
    ("temperature 1.0, top-p 0.9", 1.0, None, 0.9),
]
SEARCH_ORDER = ("modern", "vanilla", "bpe", "demo")
CHECKPOINTS = REPO_ROOT / "checkpoints"
RESULTS = REPO_ROOT / "results"  # the demo preset's own runs (train_demo*.json), for the first-run message
MAX_TOKENS = 10_000_000  # --tokens: the output ids alone take 8 bytes each


def find_default_checkpoint() -> Path | None:
    for run in SEARCH_ORDER:
        folder = CHECKPOINTS / run
        if holds_checkpoint(folder):
            return folder
    return None


def demo_expectation(device) -> str:
    """What the demo's training took where we measured it, for the first-run message: on this kind of machine
    (results/train_demo-cpu-amx.json, ...) where we have its record, else on the machine of results/train_demo.json."""
    for path in (RESULTS / f"train_demo-{hardware_tag(device)}.json", RESULTS / "train_demo.json"):
        try:
            r = json.loads(path.read_text())
            return (f"on {r['hardware']} it took {r['elapsed_s']:.0f} s and reached val loss {r['best_val_loss']:.2f}; "
                    f"it stops after {r['train_config']['max_time']:g} s of wall clock on any machine")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return f"it stops after {PRESETS['demo'].values['max_time']:g} s of wall clock on any machine"


def unfinished_demo(folder: Path) -> bool:
    """The demo's own run, stopped (Ctrl-C, a kill) before it finished: it has checkpoints, of a barely
    trained model, but no summary.json. --demo trains it on instead of sampling noise from it."""
    return folder == CHECKPOINTS / "demo" and not (folder / "summary.json").exists()


def train_demo_model(device: torch.device, resume: bool = False) -> Path:
    """A fresh clone has no checkpoint: train the small modern model of the `demo` preset on `device` (it stops
    within two minutes), or (resume=True) train on the one an earlier --demo began."""
    if resume:
        print("The demo model's training stopped before it finished: training it on from its last checkpoint.",
              flush=True)
    else:
        print(f"No checkpoint found: training a small modern model first (--preset demo; {demo_expectation(device)}). "
              "Later runs reuse it.", flush=True)
    out = CHECKPOINTS / "demo"
    training_main("the demo model", "modern", ("demo",), ["--preset", "demo", "--sample-tokens", "0", "--out-dir",
                                                          str(out), "--device", str(device),
                                                          "--resume" if resume else "--overwrite"],
                  record_results=False)
    return out


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description="Generate text from a tinyllm checkpoint.")
    p.add_argument("--checkpoint", default=None,
                   help="run folder (its best/ or last/), checkpoint folder, or Hub repo id; default: the best local run")
    p.add_argument("--prompt", default=None, help="text to continue (default: ROMEO:, or a newline for a model of a "
                   "text without those characters)")
    p.add_argument("--tokens", "--max-new-tokens", type=int, default=500, help="tokens to generate")
    p.add_argument("--temp", "--temperature", type=float, default=0.8, help="sampling temperature (0 = greedy)")
    p.add_argument("--top_k", "--top-k", type=int, default=None, help="sample from the k likeliest tokens")
    p.add_argument("--top_p", "--top-p", type=float, default=None, help="nucleus sampling threshold in (0, 1]")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling (default: a fresh one each call)")
    p.add_argument("--no-cache", action="store_true", help="recompute the context every step (no KV cache)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--dtype", choices=(*WEIGHTS, "auto"), default="fp32",
                   help="weights for generation: fp32 is the exact model; bf16 halves the bytes read per token and int8 "
                        "(weight-only, src/quantize.py) quarters them, which speeds up batch-1 decoding on a CPU at a "
                        "small cost in accuracy (training/benchmark.py measures both); fp16 on GPUs only; auto: the "
                        "fastest weights here (engine.choose_weights), with the reason printed")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="how each cached step runs: c = src/cdecode.c, one C call per token (modern models with fp32 or "
                        "int8 weights on a CPU; needs a C compiler, builds once on first use); eager = PyTorch op by "
                        "op; compile = torch.compile'd (needs a C++ compiler on a CPU; compiles on its first call); auto = "
                        "c where it can run, else eager. All compute the same function")
    p.add_argument("--demo", action="store_true", help="300 tokens at five sampling settings; with no checkpoint in "
                   "checkpoints/, first trains one (--preset demo, at most two minutes)")
    return p


def check_args(args) -> None:
    try:
        check_sampling_args(args.temp, args.top_k, args.top_p)
    except ValueError as err:
        raise UserError(str(err).replace("temperature", "--temp").replace("top_k", "--top_k").replace("top_p", "--top_p")) from None
    check_int(args.tokens, "--tokens", 0, MAX_TOKENS)
    if args.seed is not None:
        check_seed(args.seed)


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    check_args(args)
    device = pick_device(args.device)
    if args.dtype == "auto":
        choice = choose_weights(device)
        print(f"[--dtype auto: {choice.dtype} weights, since {choice.reason}]", file=sys.stderr)
        args.dtype = choice.dtype
    check_engine(args.engine, device, args.dtype, use_cache=not args.no_cache)
    checkpoint = args.checkpoint or find_default_checkpoint()
    if checkpoint is None and not args.demo:
        raise UserError("no checkpoint found in checkpoints/; run python src/generate.py --demo (trains a small "
                        "one in 2 minutes at most), train one (python -u training/train_modern.py --preset cpu), "
                        "or pass --checkpoint")
    if checkpoint is None or (args.demo and not args.checkpoint and unfinished_demo(checkpoint)):
        checkpoint = train_demo_model(device, resume=checkpoint is not None)
    model, record = load_model(checkpoint, device=device)
    model = prepare_weights(model, args.dtype, device)
    decoder = None if args.no_cache else prepare_decoder(model, args.engine)
    args.prompt = sample_prompt(model.tokenizer) if args.prompt is None and model.tokenizer else args.prompt
    encode_prompt(model, args.prompt)  # like the decoder, a bad prompt fails here, before any text is printed
    where = describe_record(checkpoint if args.checkpoint else repo_relative(checkpoint), record)  # ours: short
    options = dict(seed=args.seed, use_cache=not args.no_cache, decoder=decoder)
    if args.demo:
        print(f"checkpoint: {where}\n")
        for label, temp, top_k, top_p in DEMO_SETTINGS:
            print(f"=== {label} ===")
            print(generate_text(model, args.prompt, 300, temp, top_k, top_p, **options) + "\n")
        return
    print(f"[{where}]", file=sys.stderr)
    write = lambda s: print(s, end="", flush=True)  # noqa: E731
    write(args.prompt)
    generate_text(model, args.prompt, args.tokens, args.temp, args.top_k, args.top_p, stream=write, **options)
    print()


if __name__ == "__main__":
    run_cli(main)
