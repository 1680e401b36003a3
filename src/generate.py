"""Generate text from a trained checkpoint (vanilla, modern or BPE; local folder or Hub repo).

    python src/generate.py --demo                       # five sampling settings; trains a small model first if none exists
    python src/generate.py --checkpoint checkpoints/modern --prompt "JULIET:" --tokens 300 --temp 0.8
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cdecode import find_c_compiler  # noqa: E402
from checkpoint import load_model  # noqa: E402
from checks import check_int, check_seed  # noqa: E402
from checkpoint import describe_record  # noqa: E402
from common import REPO_ROOT, ArgumentParser, UserError, run_cli  # noqa: E402
from device import DTYPES, pick_device  # noqa: E402
from model import ENGINES, check_sampling_args  # noqa: E402
from quantize import quantize_int8  # noqa: E402

GENERATION_DTYPES = ("fp32", "bf16", "fp16", "int8")  # weights for decoding (see cast_for_generation)
DEMO_SETTINGS = [  # (label, temperature, top_k, top_p)
    ("temperature 0.5", 0.5, None, None),
    ("temperature 0.8", 0.8, None, None),
    ("temperature 1.0", 1.0, None, None),
    ("temperature 1.0, top-k 50", 1.0, 50, None),
    ("temperature 1.0, top-p 0.9", 1.0, None, 0.9),
]
SEARCH_ORDER = ("modern", "vanilla", "bpe")
MAX_TOKENS = 10_000_000  # --tokens: the output ids alone take 8 bytes each
CHECKPOINTS = REPO_ROOT / "checkpoints"


def encode_prompt(model, prompt: str) -> torch.Tensor:
    if model.tokenizer is None:
        raise UserError("this checkpoint has no tokenizer recorded; it cannot encode a prompt")
    try:
        ids = model.tokenizer.encode(prompt)
    except ValueError as err:
        raise UserError(f"bad prompt: {err}") from None
    if not ids:
        raise UserError("the prompt is empty; pass --prompt with at least one character")
    return torch.tensor([ids], dtype=torch.long, device=next(model.parameters()).device)


def generate_text(model, prompt: str, tokens: int, temperature: float = 0.8, top_k=None, top_p=None,
                  seed: int | None = None, use_cache: bool = True, stream=None, engine: str = "eager") -> str:
    """Prompt + `tokens` generated tokens as text. stream(str) receives each new piece as it is made."""
    idx = encode_prompt(model, prompt)
    device = idx.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    decoder = StreamDecoder(model.tokenizer, stream) if stream else None
    out = model.generate(idx, tokens, temperature=temperature, top_k=top_k, top_p=top_p, use_cache=use_cache,
                         generator=generator, on_token=decoder, engine=engine)
    if decoder:
        decoder.flush()
    return model.tokenizer.decode(out[0].tolist())


class StreamDecoder:
    """Decode a growing token list and emit only the new text (a BPE token can end mid-character,
    so text is emitted once it decodes cleanly)."""

    def __init__(self, tokenizer, write):
        self.tokenizer, self.write, self.pending = tokenizer, write, []

    def __call__(self, next_id: torch.Tensor) -> None:
        self.pending.append(int(next_id[0, 0]))
        text = self.tokenizer.decode(self.pending)
        if "\ufffd" not in text:
            self.write(text)
            self.pending = []

    def flush(self) -> None:
        if self.pending:
            self.write(self.tokenizer.decode(self.pending))
            self.pending = []


def find_default_checkpoint() -> Path | None:
    for run in SEARCH_ORDER:
        folder = CHECKPOINTS / run
        if (folder / "best" / "config.json").exists() or (folder / "last" / "config.json").exists():
            return folder
    return None


def train_demo_model() -> Path:
    """A fresh clone has no checkpoint: train the small CPU preset modern model (a few minutes)."""
    print("No checkpoint found: training the small --preset cpu modern model first "
          "(a few minutes on a laptop CPU; later runs reuse it).", flush=True)
    sys.path.insert(0, str(REPO_ROOT / "training"))
    from train_modern import main as train_modern_main
    out = CHECKPOINTS / "modern"
    train_modern_main(["--preset", "cpu", "--sample-tokens", "0", "--out-dir", str(out)], record_results=False)
    return out


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description="Generate Shakespeare from a tinyllm checkpoint.")
    p.add_argument("--checkpoint", default=None,
                   help="run folder (its best/ or last/), checkpoint folder, or Hub repo id; default: the best local run")
    p.add_argument("--prompt", default="ROMEO:", help="text to continue")
    p.add_argument("--tokens", type=int, default=500, help="tokens to generate")
    p.add_argument("--temp", type=float, default=0.8, help="sampling temperature (0 = greedy)")
    p.add_argument("--top_k", "--top-k", type=int, default=None, help="sample from the k likeliest tokens")
    p.add_argument("--top_p", "--top-p", type=float, default=None, help="nucleus sampling threshold in (0, 1]")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--no-cache", action="store_true", help="recompute the context every step (no KV cache)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--dtype", choices=GENERATION_DTYPES, default="fp32",
                   help="weights for generation: bf16 halves the bytes read per token and int8 (weight-only, "
                        "src/quantize.py) quarters them, which speeds up batch-1 decoding of RoPE models on a CPU "
                        "(training/benchmark.py measures it); fp16 on GPUs only")
    p.add_argument("--engine", choices=ENGINES, default="eager",
                   help="how each cached step runs: eager PyTorch; compile = torch.compile'd (needs a C++ compiler on "
                        "a CPU; the first call compiles for ~10-30 s); c = src/cdecode.c, the fastest on a CPU "
                        "(batch 1, modern models, --dtype int8; needs a C compiler, builds once on first use)")
    p.add_argument("--demo", action="store_true", help="300 tokens at five sampling settings")
    return p


def cast_for_generation(model, dtype: str, device: torch.device):
    """Decoding one token reads every weight once, so fewer bytes per weight speed it up where memory
    bandwidth is the limit (batch-1 decoding). Norms, RoPE, attention over the cache and sampling still
    compute in fp32."""
    if dtype == "fp16" and device.type == "cpu":
        raise UserError("--dtype fp16 is not supported for generation on the CPU; use bf16, int8 or fp32")
    if dtype == "int8":
        return quantize_int8(model)
    return model.to(DTYPES[dtype]) if dtype != "fp32" else model


def check_engine(engine: str, device: torch.device, dtype: str, use_cache: bool = True) -> None:
    """Refuse an engine that cannot run here before anything is loaded: torch.compile on a CPU writes and builds
    C++, the C step needs a C compiler and int8 weights; without them both would fail deep inside."""
    if engine != "eager" and not use_cache:
        raise UserError(f"--engine {engine} runs the cached decoding step; drop --no-cache or use --engine eager")
    if engine == "compile" and device.type == "cpu" and not any(
            shutil.which(cxx) for cxx in (os.environ.get("CXX", "g++"), "g++", "clang++")):
        raise UserError("--engine compile needs a C++ compiler on a CPU (install g++ or clang++), or use --engine eager")
    if engine == "c":
        if device.type != "cpu":
            raise UserError(f"--engine c runs on the CPU, not {device.type}; add --device cpu")
        if dtype != "int8":
            raise UserError(f"--engine c runs int8 weights, not {dtype}; add --dtype int8")
        if find_c_compiler() is None:
            raise UserError("--engine c needs a C compiler (cc, gcc or clang); install one or use --engine eager")


def start_engine(model, engine: str) -> None:
    """Build the C step now, so a model it cannot run fails with one line before any text is printed."""
    if engine != "c":
        return
    try:
        model.c_decoder()
    except (ValueError, RuntimeError) as err:  # a model it does not implement; a failed build
        raise UserError(f"--engine c: {err}") from None


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        check_sampling_args(args.temp, args.top_k, args.top_p)
    except ValueError as err:
        raise UserError(str(err).replace("temperature", "--temp").replace("top_k", "--top_k").replace("top_p", "--top_p")) from None
    check_int(args.tokens, "--tokens", 0, MAX_TOKENS)
    if args.seed is not None:
        check_seed(args.seed)
    device = pick_device(args.device)
    check_engine(args.engine, device, args.dtype, use_cache=not args.no_cache)
    checkpoint = args.checkpoint or find_default_checkpoint()
    if checkpoint is None:
        if not args.demo:
            raise UserError("no checkpoint found in checkpoints/; train one (python -u training/train_modern.py "
                            "--preset cpu) or pass --checkpoint")
        checkpoint = train_demo_model()
    model, record = load_model(checkpoint, device=device)
    model = cast_for_generation(model, args.dtype, device)
    start_engine(model, args.engine)
    where = describe_record(checkpoint, record)
    if args.demo:
        print(f"checkpoint: {where}\n")
        for label, temp, top_k, top_p in DEMO_SETTINGS:
            print(f"=== {label} ===")
            text = generate_text(model, args.prompt, 300, temp, top_k, top_p, seed=args.seed,
                                 use_cache=not args.no_cache, engine=args.engine)
            print(text + "\n")
        return
    encode_prompt(model, args.prompt)  # a bad prompt fails before anything is printed
    print(f"[{where}]", file=sys.stderr)
    write = lambda s: print(s, end="", flush=True)  # noqa: E731
    write(args.prompt)
    generate_text(model, args.prompt, args.tokens, args.temp, args.top_k, args.top_p, seed=args.seed,
                  use_cache=not args.no_cache, stream=write, engine=args.engine)
    print()


if __name__ == "__main__":
    run_cli(main)
