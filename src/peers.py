"""The peers tinyllm is timed against in the benchmark: karpathy/nanoGPT's model.py and llama.cpp.

Nothing of either is in this repo. nanoGPT's model.py is loaded from a checkout the user names (--nanogpt DIR) and its
training step runs in a process of its own, as its users run it; llama.cpp is reached through llama-cpp-python where
it is installed, on our weights exported to GGUF (src/convert.py). training/benchmark.py sets the rows measured here
beside ours.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import UserError, one_line
from device import autocast, same_threads_env, synchronize
from measure import flops_per_token, median_seconds, sig, too_slow_to_train
from model import GPT

NANOGPT = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65, dropout=0.0, bias=False)


# ----------------------------------------------------------------------------- nanoGPT

def load_nanogpt(folder: str):
    """nanoGPT's model.py as a module, from a checkout the user points to (nothing of it is in this repo)."""
    path = Path(folder) / "model.py"
    if not path.is_file():
        raise UserError(f"--nanogpt {folder}: no model.py there; pass a checkout of github.com/karpathy/nanoGPT")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nanogpt_training_step(nanogpt, dtype: str, batch: int, device):
    """nanoGPT's GPT at its Shakespeare-char size and one training step of it on a fixed batch: forward under
    `dtype` autocast, backward, AdamW from its configure_optimizers (its recipe's settings). (model, step)."""
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # its parameter counts, again for each step built
        model = nanogpt.GPT(nanogpt.GPTConfig(**NANOGPT)).to(device)
        optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device.type)
    x = torch.randint(0, NANOGPT["vocab_size"], (batch, NANOGPT["block_size"]), device=device)

    def step():
        with autocast(device, dtype):
            loss = model(x, x)[1]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, step


class NanoGPTProcess:
    """nanoGPT's training step (nanogpt_training_step) in a fresh process of its own, as its users run it. Ours sets
    device.keep_freed_memory, a setting of the whole process that nanoGPT's train.py does not make: its step timed
    in this process would be given it too. Calling the object runs one step there and returns when it is done, so
    it is timed like a local call, and alternates with ours in interleaved_median_seconds."""

    def __init__(self, folder: str, dtype: str, batch: int, device):
        serve = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import peers; "
                 "peers.serve_nanogpt_steps(*sys.argv[1:])")
        self.process = subprocess.Popen([sys.executable, "-c", serve, folder, dtype, str(batch), str(device)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                        env=same_threads_env())
        self.wait()

    def wait(self) -> None:
        reply = self.process.stdout.readline().strip()
        if reply != "done":
            self.process.kill()
            code = self.process.wait()
            self.process.stdin.close()
            self.process.stdout.close()
            raise RuntimeError(f"nanoGPT's process failed: {reply or f'it stopped (exit code {code})'}")

    def __call__(self) -> None:
        self.process.stdin.write("step\n")
        self.wait()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.process.stdin.close()  # its loop ends at the end of its input
        self.process.wait(timeout=60)
        self.process.stdout.close()


def serve_nanogpt_steps(folder: str, dtype: str, batch: str, device: str) -> None:
    """NanoGPTProcess's other end: build nanoGPT's step, then run one per "step" line read until the input ends,
    answering "done" on stdout after each (what nanoGPT prints goes to stderr)."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        device = torch.device(device)
        step = nanogpt_training_step(load_nanogpt(folder), dtype, int(batch), device)[1]
        replies.write("done\n")
        for line in sys.stdin:
            if line.strip() != "step":
                break
            step()
            synchronize(device)
            replies.write("done\n")
    except Exception as err:  # the parent raises it
        replies.write(f"{type(err).__name__}: {one_line(str(err))}\n")


def nanogpt_dtypes(dtypes: list[str], ceilings: dict) -> list[str]:
    """The dtypes nanoGPT's step is timed in: fp32, and the others asked for that this machine runs at speed
    (fp16 is left out: nanoGPT would need its own GradScaler)."""
    return [d for d in dict.fromkeys(["fp32", *dtypes]) if d != "fp16" and not too_slow_to_train(d, ceilings)]


def nanogpt_rows(folder: str, args, device, ceilings: dict) -> dict:
    """nanoGPT's GPT at its Shakespeare-char size, timed like ours: its training step in fp32 and under bf16
    autocast at our batch (in a process of its own: NanoGPTProcess), and its GPT.generate (no cache: the whole
    cropped context every token) over --gen-tokens tokens at batch 1, timed over the whole call."""
    nanogpt = load_nanogpt(folder)
    model = nanogpt_training_step(nanogpt, "fp32", args.train_batch, device)[0]  # for its FLOPs and generate
    training = []
    for dtype in nanogpt_dtypes(args.dtypes, ceilings):
        with NanoGPTProcess(folder, dtype, args.train_batch, device) as step:
            seconds = median_seconds(step, args.repeats, device, warmup=2)
        tokens_per_sec = args.train_batch * NANOGPT["block_size"] / seconds
        achieved = tokens_per_sec * flops_per_token(model) / 1e9
        training.append({"dtype": dtype, "batch": args.train_batch, "tokens_per_sec": sig(tokens_per_sec),
                         "ms_per_step": sig(seconds * 1e3), "mfu": sig(achieved / ceilings[f"matmul_gflops_{dtype}"])})
        print(f"  nanoGPT training {training[-1]}", flush=True)
    model.eval()
    prompt = torch.zeros(1, 1, dtype=torch.long, device=device)

    @torch.no_grad()
    def generate_call():
        model.generate(prompt, args.gen_tokens, temperature=0.8, top_k=200)  # its sample.py's settings
    seconds = median_seconds(generate_call, max(1, args.repeats // 2), device, warmup=1)
    generation = {"batch": 1, "new_tokens": args.gen_tokens, "tokens_per_sec": sig(args.gen_tokens / seconds),
                  "mode": "nanoGPT GPT.generate (no cache)"}
    print(f"  nanoGPT generation {generation}", flush=True)
    return {"source": "karpathy/nanoGPT model.py", "config": NANOGPT, "params": sum(p.numel() for p in model.parameters()),
            "training": training, "generation": generation}


# ----------------------------------------------------------------------------- llama.cpp

def llama_cpp_seconds(llm, new_tokens: int, repeats: int) -> float:
    """Median seconds for a llama_cpp.Llama to decode `new_tokens` greedily from token 0, after one warm-up."""
    def generate_call():
        for i, _token in enumerate(llm.generate([0], temp=0.0, top_k=1, reset=True)):
            if i + 1 == new_tokens:
                break
    return median_seconds(generate_call, repeats, torch.device("cpu"), warmup=1)


def llama_cpp_rows(model: GPT, args) -> tuple[list[dict], list[str]]:
    """llama.cpp (through llama-cpp-python) decoding the same weights exported to GGUF (src/convert.py) at batch 1,
    greedy, with as many threads as PyTorch uses: f32 (the same function as ours, within block_size) and q8_0.
    (rows, what was not timed and why)."""
    try:
        import llama_cpp
    except ImportError:
        return [], ["llama.cpp: llama-cpp-python is not installed here"]
    from convert import check_exportable, save_gguf
    try:
        check_exportable(model, "gguf")
    except UserError as err:
        return [], [f"llama.cpp: {err}"]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for gguf_type in ("f32", "q8_0"):
            path = Path(folder) / f"model-{gguf_type}.gguf"
            save_gguf(path, model, gguf_type, "tinyllm benchmark")
            llm = llama_cpp.Llama(model_path=str(path), n_ctx=args.gen_tokens + 8, n_threads=torch.get_num_threads(),
                                  n_threads_batch=torch.get_num_threads(), verbose=False)
            seconds = llama_cpp_seconds(llm, args.gen_tokens, args.repeats)
            rows.append({"batch": 1, "new_tokens": args.gen_tokens, "weights": gguf_type,
                         "tokens_per_sec": sig(args.gen_tokens / seconds), "weights_mb": sig(path.stat().st_size / 2**20),
                         "mode": f"llama.cpp {gguf_type} (llama-cpp-python {llama_cpp.__version__})"})
            print(f"  llama.cpp {rows[-1]}", flush=True)
            del llm
    return rows, []
