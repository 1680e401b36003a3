"""The benchmark's measurements: one function per part of the record training/benchmark.py writes.

Each times the real thing (the Trainer's step, engine.generate, the decoding variants a user can pick) at a
model's shapes, and sets it against the machine's own ceilings from src/measure.py; the peers it is compared with
(nanoGPT, llama.cpp) are in src/peers.py. `benchmark_model` gathers one model's entry; the script adds the
ceilings, the head-to-head rounds and the components, writes the record and draws it with `plot`.
"""
from __future__ import annotations

import contextlib
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from attention import Head
from checkpoint import describe_record, holds_checkpoint, load_model
from common import REPO_ROOT, UserError, one_line, repo_relative
from data import load_text, validation_ids
from device import (DTYPES, autocast, cpp_compiler, keep_freed_memory, resolve_compile, resolve_dtype,
                    same_threads_env, synchronize, torch_compile)
from dropout import dropout as apply_dropout
from engine import check_engine, choose_engine, generate, prepare_decoder, prepare_weights
from measure import (CEILING_SIZES, attention_as_products, best_seconds, dense_matmul, flops_per_token,
                     interleaved_median_seconds, matvec_seconds, median_seconds, peak_memory_mb, reset_peak_memory,
                     sig, too_slow_to_train, training_kernels, weight_bytes)
from model import GPT, GPTConfig
from modernize import KVCache, RMSNorm
from peers import NanoGPTProcess, llama_cpp_rows, load_nanogpt, nanogpt_dtypes, nanogpt_training_step
from plots import pyplot, save_figure
from quantize import dequantize
from tokenizer import CharTokenizer
from trainer import Dist, TrainConfig, Trainer, estimate_loss, fusible_components
from transformer import MultiHeadAttention, causal_attention

PROMPTS = ["ROMEO:", "To be", "KING HENRY:"]
TEMPERATURES = [0.5, 0.8, 1.0]
MODELS = ("vanilla", "modern")  # model.CONFIGS names
ENGINE_LABELS = {"eager": "", "compile": ", compiled", "c": ", C step"}
C_STEP_WEIGHTS = ("fp32", "int8")  # what src/cdecode.c implements
DECODE_VARIANTS = {"full": ["bf16", "int8", "fp32+compile", "int8+compile", "fp32+c", "int8+c"],
                   "quick": ["fp32+c", "int8+c"]}
KERNELS_ALONE = "matrix products, attention kernels and optimizer update"  # what training_kernels times


# ----------------------------------------------------------------------------- training

def training_throughput(config: GPTConfig, dtype: str, args, device, ceilings: dict, compiled: bool) -> dict:
    """Time the real training step (src/trainer.py Trainer.train_step: autocast, scaler, clipping, AdamW)."""
    with tempfile.TemporaryDirectory() as out_dir:
        tc = TrainConfig(batch_size=args.train_batch, device=str(device), dtype=dtype, data=args.data,
                         out_dir=out_dir, compile="on" if compiled else "off", max_steps=1)
        run = Trainer(config, tc, log=lambda *_: None)
        reset_peak_memory(device)
        seconds = median_seconds(run.train_step, args.repeats, device, warmup=3 if compiled else 2)
        tokens = args.train_batch * config.block_size
        tokens_per_sec = tokens / seconds
        ceiling = ceilings.get(f"matmul_gflops_{dtype}") or ceilings["matmul_gflops_fp32"]
        achieved = tokens_per_sec * flops_per_token(run.model) / 1e9
        kernel_call = training_kernels(run.model, run.dtype, args.train_batch, device, compiled)
        kernels = tokens / best_seconds(kernel_call, device, args.repeats)
        return {"dtype": run.dtype, "compiled": compiled, "batch": args.train_batch, "tokens_per_sec": sig(tokens_per_sec),
                "ms_per_step": sig(seconds * 1e3), "model_gflops": sig(achieved),
                "mfu": sig(achieved / ceiling), "ceiling_tokens_per_sec": sig(ceiling * 1e9 / flops_per_token(run.model)),
                "kernel_ceiling_tokens_per_sec": sig(kernels), "fraction_of_kernel_ceiling": sig(tokens_per_sec / kernels),
                "kernel_ceiling_mfu": sig(kernels * flops_per_token(run.model) / 1e9 / ceiling),
                "peak_memory_mb": sig(peak_memory_mb(device))}


def head_to_head(config: GPTConfig, nanogpt_folder: str | None, args, device, ceilings: dict) -> dict:
    """The training targets' figures, all timed in the same alternating rounds (interleaved_median_seconds):
    our real training step with default flags (the dtype --dtype auto picks, compiled if --compile auto compiles a
    default-length run here; then the eager step too), the same step's kernels alone (training_kernels), nanoGPT's
    step in each dtype it runs at speed here (with --nanogpt; in its own process as its users run it, and on a CPU
    also in this one, given the allocator setting our Trainer makes: the "_memory_kept" rows), and the dense matmul
    of the matmul ceiling in our dtype, so the MFU set against it is measured in the same moments too."""
    dtype = resolve_dtype("auto", device).dtype
    default_run = TrainConfig()
    compiled = resolve_compile(default_run.compile, device, default_run.max_steps, 1, fusible_components(config))
    tokens = args.train_batch * config.block_size
    size = ceilings.get(f"matmul_size_{dtype}", CEILING_SIZES[0])
    product, product_flops = dense_matmul(DTYPES[dtype], device, size)
    products = max(1, 10 * CEILING_SIZES[0] ** 3 // size**3)  # about ten 1024^3 products' FLOPs a call

    def matmuls():  # a sample long enough to time
        for _ in range(products):
            product()

    def trainer(compile: bool, out_dir: str) -> Trainer:
        return Trainer(config, TrainConfig(batch_size=args.train_batch, device=str(device), dtype=dtype, data=args.data,
                                           out_dir=out_dir, compile="on" if compile else "off", max_steps=1),
                       log=lambda *_: None)
    with tempfile.TemporaryDirectory() as out_dir:
        run = trainer(compiled.enabled, out_dir)
        calls = {"modern": run.train_step}
        if compiled.enabled:
            calls["modern_eager"] = trainer(False, out_dir).train_step
        calls["modern_kernels_alone"] = training_kernels(run.model, dtype, args.train_batch, device,
                                                         compiled.enabled)
        calls["matmul"] = matmuls
        with contextlib.ExitStack() as processes:
            if nanogpt_folder:
                nanogpt = load_nanogpt(nanogpt_folder)
                for theirs in nanogpt_dtypes([dtype], ceilings):
                    calls[f"nanogpt_{theirs}"] = processes.enter_context(
                        NanoGPTProcess(nanogpt_folder, theirs, args.train_batch, device))
                    if device.type == "cpu" and keep_freed_memory():  # the setting our Trainer made in this process
                        calls[f"nanogpt_{theirs}_memory_kept"] = nanogpt_training_step(nanogpt, theirs, args.train_batch,
                                                                                       device)[1]
            rounds = 3 * args.repeats
            seconds = interleaved_median_seconds(calls, rounds, device, warmup=3 if compiled.enabled else 2)
        matmul_gflops = products * product_flops / seconds.pop("matmul") / 1e9
        flops = flops_per_token(run.model)
    tokens_per_sec = {name: sig(tokens / s) for name, s in seconds.items()}
    result = {"dtype": dtype, "compiled": compiled.enabled, "compile_reason": compiled.reason, "batch": args.train_batch,
              "rounds": rounds, "tokens_per_sec": tokens_per_sec, "matmul_gflops": sig(matmul_gflops), "matmul_size": size,
              "kernels_alone": "matrix products (attention's too, as block-causal bf16 products) and optimizer update"
              if attention_as_products(compiled.enabled, device, dtype) else KERNELS_ALONE,
              "mfu": sig(tokens_per_sec["modern"] * flops / 1e9 / matmul_gflops),
              "kernels_alone_mfu": sig(tokens_per_sec["modern_kernels_alone"] * flops / 1e9 / matmul_gflops)}
    print(f"  head to head {result}", flush=True)
    return result


# ----------------------------------------------------------------------------- generation

def generation_speed(model: GPT, batch: int, new_tokens: int, use_cache: bool, repeats: int, device,
                     ceilings: dict, weights: str = "fp32", engine: str = "eager", decoder=None) -> dict:
    """Greedy decoding from a 1-token prompt: time to first token, then ms per token after it. The first of the
    repeats + 1 runs is the warm-up (and compiles the step for engine "compile")."""
    prompt = torch.zeros(batch, 1, dtype=torch.long, device=device)
    decoder = decoder or (prepare_decoder(model, engine) if use_cache else None)
    first, totals = [], []
    for i in range(repeats + 1):
        stamps = []
        synchronize(device)
        t0 = time.perf_counter()
        generate(model, prompt, new_tokens, temperature=0.0, use_cache=use_cache, decoder=decoder,
                 on_token=lambda _ids: stamps.append(time.perf_counter()))
        synchronize(device)
        if i:
            first.append(stamps[0] - t0)
            totals.append(time.perf_counter() - t0)
    total, ttft = statistics.median(totals), statistics.median(first)
    step_seconds = (total - ttft) / (new_tokens - 1)
    row = {"batch": batch, "new_tokens": new_tokens, "cached": use_cache, "ttft_ms": sig(ttft * 1e3),
           "weights_dtype": weights, "engine": engine, "mode": mode_label(use_cache, weights, engine),
           "ms_per_token": sig(step_seconds * 1e3), "tokens_per_sec": sig(batch * new_tokens / total)}
    if use_cache:
        # every decoded token reads all the weights once (plus its cache): the memory-bound ceiling
        per_second = ceilings["copy_gbps"] * 1e9 / weight_bytes(model)
        row["weights_mb"] = sig(weight_bytes(model) / 2**20)
        row["bandwidth_ceiling_steps_per_sec"] = sig(per_second)
        row["fraction_of_bandwidth_ceiling"] = sig(1 / step_seconds / per_second)
    if use_cache and batch == 1 and engine != "c":  # the C step has its own products, timed as part of it
        matvec_per_second = 1 / matvec_seconds(model, repeats, device)
        row["matvec_ceiling_tokens_per_sec"] = sig(matvec_per_second)
        row["fraction_of_matvec_ceiling"] = sig(1 / step_seconds / matvec_per_second)
    return row


def split_variant(variant: str) -> tuple[str, str]:
    """'int8+c' -> ('int8', 'c'); 'bf16' -> ('bf16', 'eager'): weights, then how the cached step runs."""
    weights, _, engine = variant.partition("+")
    return weights, engine or "eager"


def mode_label(cached: bool, weights: str, engine: str) -> str:
    """How a generation row decoded, as the tables and the figure name it: 'cached, int8 weights, C step'."""
    mode = "cached" if cached else "uncached"
    if weights != "fp32":
        mode += f", {weights} weights"
    return mode + ENGINE_LABELS[engine]


def weights_label(variant: str) -> str:
    """'int8+c' -> 'int8, C step': a quality row's weights as the tables print them."""
    weights, engine = split_variant(variant)
    return weights + ENGINE_LABELS[engine]


def prepare_variant(model: GPT, variant: str, device):
    """(a copy of `model` with the variant's weights, its decoder), or a UserError saying why it cannot run."""
    weights, engine = split_variant(variant)
    check_engine(engine, device, weights)
    variant_model = prepare_weights(copy.deepcopy(model), weights, device)
    return variant_model, prepare_decoder(variant_model, engine)


def decode_variants(model: GPT, args, device, ceilings: dict, uncached: dict) -> tuple[list[dict], list[str]]:
    """The --decode rows (batch 1, cached): weights cast or quantized, optionally another engine. RoPE models
    only: learned-position models re-encode the whole window past block_size (matrix-matrix products)."""
    rows, skipped = [], []
    for variant in args.decode:
        weights, engine = split_variant(variant)
        try:
            variant_model, decoder = prepare_variant(model, variant, device)
        except UserError as err:
            skipped.append(f"decoding {variant}: {err}")
            continue
        row = generation_speed(variant_model, 1, args.gen_tokens, True, args.repeats, device, ceilings,
                               weights=weights, engine=engine, decoder=decoder)
        row["speedup"] = sig(row["tokens_per_sec"] / uncached["tokens_per_sec"])
        rows.append(row)
        print(f"  decoding {variant}: {row}", flush=True)
    return rows, skipped


# ----------------------------------------------------------------------------- memory

MEMORY_CHILD = """
import json, sys, tempfile, torch
sys.path.insert(0, sys.argv[1])
from device import peak_resident_bytes
from engine import generate
from model import GPT, GPTConfig
from trainer import TrainConfig, Trainer
config = GPTConfig.from_dict(json.loads(sys.argv[3]))
if sys.argv[2] == "training":
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, TrainConfig(batch_size=int(sys.argv[4]), device="cpu", out_dir=out,
                                              data=sys.argv[5] or None), log=lambda *_: None)
        for _ in range(2):
            trainer.train_step()
        print(trainer.dtype)
else:
    model = GPT(config).eval()
    generate(model, torch.zeros(1, 1, dtype=torch.long), int(sys.argv[4]), temperature=0.0, engine="auto")
    print("fp32")
print(peak_resident_bytes())
"""


def peak_resident_mb(task: str, config: GPTConfig, size: int, args) -> dict:
    """Peak resident memory of one task in a fresh process (this one has grown with every measurement before):
    two training steps at batch `size` (the default dtype), or generating `size` tokens on the default path."""
    result = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(REPO_ROOT / "src"), task,
                             json.dumps(config.to_dict()), str(size), args.data or ""],
                            capture_output=True, text=True, timeout=1800, env=same_threads_env())
    if result.returncode != 0:
        raise UserError(f"measuring the memory of {task} failed: {one_line(result.stderr)[-300:]}")
    dtype, rss = result.stdout.split()[-2:]
    row = {"task": task, "size": size, "dtype": dtype, "peak_resident_mb": sig(int(rss) / 2**20)}
    print(f"  memory {row}", flush=True)
    return row


# ----------------------------------------------------------------------------- components (before / after)

def layer_components(device, repeats: int, batch: int = 8, decode_tokens: int = 256,
                     c: GPTConfig | None = None) -> list[dict]:
    """The speed changes inside one layer at the reference width (384, 6 heads, block 256):
    - training step of the layer: 6 teaching `attention.Head`s in a Python loop (the original project) vs one
      fused q/k/v projection + scaled_dot_product_attention (`transformer.MultiHeadAttention`);
    - decoding `decode_tokens` tokens through the layer: a cache grown with torch.cat at every step (a new,
      longer tensor per token) vs the preallocated `KVCache` written in place;
    - on a CPU, causal attention under bf16 autocast: PyTorch's kernel in bf16 vs in fp32
      (`transformer.causal_attention` runs fp32 on a CPU), and that fp32 kernel vs what a compiled step runs instead
      (`transformer.block_causal_attention`, compiled);
    - on a CPU, RMSNorm forward + backward: F.rms_norm differentiated by autograd vs the closed-form backward
      of `modernize.RMSNormFunction` (what `RMSNorm` runs on a CPU);
    - on a CPU, dropout (p 0.2) forward + backward on a layer's activations: F.dropout vs `dropout.dropout` (what
      the model's dropout runs on a CPU), eager, then both compiled."""
    c = c or GPTConfig(dropout=0.0)
    torch.manual_seed(0)
    fused = MultiHeadAttention(c.n_embd, c.n_head, 0.0, True).to(device)
    heads = nn.ModuleList(Head(c.n_embd, c.n_embd // c.n_head) for _ in range(c.n_head)).to(device)
    proj = nn.Linear(c.n_embd, c.n_embd).to(device)
    x = torch.randn(batch, c.block_size, c.n_embd, device=device)

    def head_loop():
        proj(torch.cat([head(x) for head in heads], dim=-1)).sum().backward()

    def fused_step():
        fused(x).sum().backward()

    tokens = torch.randn(decode_tokens, 1, 1, c.n_embd, device=device)

    @torch.inference_mode()
    def concat_cache():
        keys = values = None
        for token in tokens:
            q, k, v = fused.project(token)
            keys = k if keys is None else torch.cat([keys, k], dim=2)
            values = v if values is None else torch.cat([values, v], dim=2)
            fused.proj(F.scaled_dot_product_attention(q, keys, values).transpose(1, 2).reshape(1, 1, c.n_embd))

    @torch.inference_mode()
    def preallocated_cache():
        cache = KVCache(decode_tokens)
        for token in tokens:
            fused(token, cache=cache)

    shape = (batch, c.n_head, c.block_size, c.n_embd // c.n_head)
    q, k, v = (torch.randn(shape, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))

    def bf16_kernel():
        with autocast(device, "bf16"):
            F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

    def fp32_kernel():
        with autocast(device, "bf16"):
            causal_attention(q, k, v).sum().backward()

    compiled_attention = torch_compile(causal_attention)

    def compiled_blocks():
        with autocast(device, "bf16"):
            compiled_attention(q, k, v).sum().backward()

    norm = RMSNorm(c.n_embd).to(device)
    activations = torch.randn(batch, c.block_size, c.n_embd, device=device, requires_grad=True)

    def composed_norm():
        F.rms_norm(activations, (c.n_embd,), norm.weight, norm.eps).sum().backward()

    def closed_form_norm():
        norm(activations).sum().backward()

    def dropout_step(drop):  # forward + backward of p 0.2 on the activations, the backward's mask included
        return lambda: drop(activations, 0.2).sum().backward()

    changes = [(f"attention layer training step, batch {batch} x {c.block_size}", "tokens/s", batch * c.block_size,
                (f"{c.n_head} teaching heads in a loop", head_loop), ("fused q/k/v + SDPA", fused_step)),
               (f"attention layer decoding {decode_tokens} tokens, batch 1", "tokens/s", decode_tokens,
                ("torch.cat cache", concat_cache), ("preallocated KVCache", preallocated_cache))]
    if device.type == "cpu":  # transformer.causal_attention's CPU policy, measured here
        changes.append((f"causal attention forward + backward under bf16 autocast, batch {batch} x {c.block_size}",
                        "tokens/s", batch * c.block_size, ("bf16 kernel", bf16_kernel), ("fp32 kernel", fp32_kernel)))
        if cpp_compiler():  # what a compiled step runs instead
            changes.append((f"causal attention forward + backward under bf16 autocast, in a compiled step, batch "
                            f"{batch} x {c.block_size}", "tokens/s", batch * c.block_size, ("fp32 kernel", fp32_kernel),
                            ("compiled block-causal bf16", compiled_blocks)))
        changes.append((f"RMSNorm forward + backward, batch {batch} x {c.block_size}", "tokens/s", batch * c.block_size,
                        ("F.rms_norm + autograd", composed_norm), ("closed-form backward", closed_form_norm)))
        changes.append((f"dropout p 0.2 forward + backward, batch {batch} x {c.block_size} x {c.n_embd}", "tokens/s",
                        batch * c.block_size, ("F.dropout", dropout_step(F.dropout)),
                        ("16-bit draws (dropout.py)", dropout_step(apply_dropout))))
        if cpp_compiler():
            changes.append((f"dropout p 0.2 forward + backward, compiled, batch {batch} x {c.block_size} x {c.n_embd}",
                            "tokens/s", batch * c.block_size,
                            ("F.dropout", dropout_step(torch_compile(F.dropout))),
                            ("16-bit draws (dropout.py)", dropout_step(torch_compile(apply_dropout)))))
    rows = []
    for what, unit, work, before, after in changes:
        # each run is short and both sides are sensitive to other load: three times the repeats, interleaved
        pairs = [(median_seconds(before[1], 3, device), median_seconds(after[1], 3, device)) for _ in range(repeats)]
        slow, fast = (statistics.median(side) for side in zip(*pairs))
        rows.append({"component": what, "unit": unit, "before": before[0], "after": after[0],
                     "before_value": sig(work / slow), "after_value": sig(work / fast),
                     "speedup": sig(slow / fast)})
        print(f"  {rows[-1]}", flush=True)
    return rows


# ----------------------------------------------------------------------------- quality and samples

def weight_quality(checkpoint: GPT, args, device, ceilings: dict,
                   greedy_tokens: int = 200) -> tuple[list[dict], list[str]]:
    """Val loss of a trained checkpoint with fp32, bf16 and int8 weights (the same 8 fixed batches), and how
    many greedy tokens from "ROMEO:" (or token 0) match the fp32 ones before the first difference; int8+c: the
    int8 weights through the C step (modern checkpoints on a CPU), which keeps the activations in fp32.
    (rows, what was skipped and why): bf16 weights where this machine emulates bf16 products (the val loss
    alone would take minutes), the C step where it cannot run."""
    c = checkpoint.config
    val = validation_ids(checkpoint.tokenizer, load_text(args.data), c.block_size)
    val = val.to(device)
    try:
        prompt = torch.tensor([checkpoint.tokenizer.encode(PROMPTS[0])], device=device)
    except (KeyError, ValueError):  # a character outside this checkpoint's vocabulary
        prompt = torch.zeros(1, 1, dtype=torch.long, device=device)
    rows, skipped, reference = [], [], None
    for weights in ("fp32", "bf16", "int8", "int8+c"):
        engine = split_variant(weights)[1]
        slow = f"matmul_gflops_{weights}" in ceilings and too_slow_to_train(weights, ceilings)
        if slow:
            skipped.append(f"quality of {weights} weights: {slow}")
            continue
        try:
            model, decoder = prepare_variant(checkpoint, weights, device)
        except UserError as err:  # the C step: CPUs, modern checkpoints and a C compiler only
            skipped.append(f"quality of {weights_label(weights)} weights: {err}")
            continue
        evaluated = dequantize(model) if engine == "c" else model  # what the C step computes: fp32 activations
        loss = estimate_loss(evaluated, val, c.block_size, batch_size=8, iters=8, seed=0, device=device, dtype="fp32",
                             d=Dist(device=device))
        tokens = generate(model, prompt, greedy_tokens, temperature=0.0, decoder=decoder)[0, prompt.size(1):]
        reference = tokens if reference is None else reference
        differs = (tokens != reference).nonzero()
        rows.append({"weights": weights, "label": weights_label(weights), "val_loss": round(loss, 4),
                     "weights_mb": round(weight_bytes(model) / 2**20, 2),
                     "greedy_tokens_identical": int(differs[0, 0]) if len(differs) else greedy_tokens,
                     "greedy_tokens": greedy_tokens})
    return rows, skipped


def samples(model: GPT, sample_tokens: int, device) -> list[dict]:
    out = []
    for prompt in PROMPTS:
        for temperature in TEMPERATURES:
            try:
                ids = torch.tensor([model.tokenizer.encode(prompt)], device=device)
            except (KeyError, ValueError):
                continue  # a prompt character outside this checkpoint's vocabulary
            generator = torch.Generator(device=device).manual_seed(1337)
            text = model.tokenizer.decode(generate(model, ids, sample_tokens, temperature=temperature,
                                                   generator=generator)[0].tolist())
            out.append({"prompt": prompt, "temperature": temperature, "text": text})
    return out


# ----------------------------------------------------------------------------- models

def load_models(name: str, args, device) -> tuple[GPT, GPT, str, bool]:
    """(model for samples, model for speed, description, whether the sample model is trained). Both are the
    checkpoint when there is one and --size checkpoint; otherwise speed uses random weights at the reference config."""
    folder = Path(args.checkpoints) / name
    checkpoint = None
    if holds_checkpoint(folder):
        checkpoint, record = load_model(folder, device=device)
        checkpoint.eval()
        source = describe_record(repo_relative(folder), record)
    if checkpoint is not None and args.size == "checkpoint":
        return checkpoint, checkpoint, source, True
    char = checkpoint is not None and checkpoint.tokenizer.kind == "char"
    tokenizer = checkpoint.tokenizer if char else CharTokenizer.from_text(load_text(args.data))
    torch.manual_seed(0)
    reference = GPT(GPTConfig.named(name, vocab_size=tokenizer.vocab_size, dropout=0.0)).to(device).eval()
    reference.tokenizer = tokenizer  # the GGUF export of the llama.cpp rows needs a vocabulary
    if checkpoint is None:
        return reference, reference, (f"random weights at the reference config ({reference.num_params():,} params): "
                                      f"no checkpoint in {repo_relative(folder)}; samples are noise"), False
    return checkpoint, reference, (f"samples from {source}; speed at the reference config "
                                   f"({reference.num_params():,} params, random weights)"), True


def benchmark_model(name: str, args, device, ceilings: dict) -> dict:
    """One model's entry of the record: training speed per dtype (and compiled), generation speed per batch (and
    the decoding variants), llama.cpp on its weights and peak memory (modern, CPU), the quality of low-precision
    weights and samples (trained checkpoints); 'skipped' says what was not timed, and why."""
    sampler, timed, source, trained = load_models(name, args, device)
    print(f"\n{name}: {source}", flush=True)
    entry = {"name": name, "source": source, "params": timed.num_params(), "config": timed.config.to_dict(),
             "training": [], "generation": []}
    skipped = []
    for dtype in args.dtypes:
        if too_slow_to_train(dtype, ceilings):
            skipped.append(too_slow_to_train(dtype, ceilings))
            print(f"  training in {dtype} skipped: {skipped[-1]}", flush=True)
            continue
        for compiled in (False, True) if args.compile else (False,):
            entry["training"].append(training_throughput(timed.config, dtype, args, device, ceilings, compiled))
            print(f"  training {entry['training'][-1]}", flush=True)
    for batch in args.batches:
        tokens = args.gen_tokens if batch == 1 else args.batched_gen_tokens
        rows = [generation_speed(timed, batch, tokens, cached, args.repeats, device, ceilings)
                for cached in (True, False)]
        rows[0]["speedup"] = sig(rows[0]["tokens_per_sec"] / rows[1]["tokens_per_sec"])
        print(f"  generation {rows}", flush=True)
        if batch == 1 and timed.rope is not None:
            variants, not_run = decode_variants(timed, args, device, ceilings, uncached=rows[1])
            rows += variants
            skipped += not_run
        entry["generation"] += rows
    if name == "modern" and device.type == "cpu":
        entry["default_engine"] = choose_engine(timed)  # what src/generate.py runs without flags
        entry["llama_cpp"], not_run = llama_cpp_rows(timed, args)
        skipped += not_run
    if name == "modern" and args.memory_batch:
        entry["memory"] = [peak_resident_mb("generation", timed.config, args.gen_tokens, args),
                           peak_resident_mb("training", timed.config, args.memory_batch, args)]
    if trained:
        entry["quality"], not_run = weight_quality(sampler, args, device, ceilings)
        skipped += not_run
        print(f"  quality {entry['quality']}", flush=True)
    entry["samples"] = samples(sampler, args.sample_tokens, device) if args.sample_tokens else []
    entry["skipped"] = skipped
    return entry


# ----------------------------------------------------------------------------- the figure

def plot(record: dict, path: Path) -> None:
    plt = pyplot()
    fig, (left, right, decode) = plt.subplots(1, 3, figsize=(16, 4.4))
    labels, values, ceilings = [], [], []
    for m in record["models"]:
        for t in m["training"]:
            labels.append(f"{m['name']}\n{t['dtype']}" + ("\ncompiled" if t["compiled"] else ""))
            values.append(t["tokens_per_sec"])
            ceilings.append(t["ceiling_tokens_per_sec"])
    x = range(len(labels))
    left.bar(x, ceilings, color="lightgray", label="matmul ceiling of this machine")
    left.bar(x, values, width=0.5, label="measured")
    left.set_xticks(list(x), labels, fontsize=8)
    left.set_ylabel("training tokens / second")
    left.set_title(f"training, batch {record['config']['train_batch']} x block {record['config']['block_size']}", fontsize=9)
    left.legend(fontsize=8)
    for m in record["models"]:
        for cached in (True, False):
            rows = [g for g in m["generation"] if g["cached"] == cached and g.get("weights_dtype", "fp32") == "fp32"
                    and g.get("engine", "eager") == "eager"]
            right.plot([g["batch"] for g in rows], [g["tokens_per_sec"] for g in rows], marker="o" if cached else "x",
                       linestyle="-" if cached else "--", label=f"{m['name']} {'cached' if cached else 'uncached'}")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("batch")
    right.set_ylabel("generation tokens / second")
    right.set_title(f"greedy generation: {record['config']['gen_tokens']} new tokens at batch 1, "
                    f"{record['config']['batched_gen_tokens']} at larger batches", fontsize=9)
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=8)
    plot_decoding(decode, record)
    fig.suptitle(f"{record['command']}: {record['hardware']}, {record['date']}", fontsize=10)
    save_figure(fig, path)


def plot_decoding(ax, record: dict) -> None:
    """Batch-1 cached decoding of each model and variant, against the kernel (matvec) and bandwidth ceilings."""
    rows = [(m["name"], g) for m in record["models"] for g in m["generation"] if g["cached"] and g["batch"] == 1]
    x = range(len(rows))
    ax.bar(x, [g["bandwidth_ceiling_steps_per_sec"] for _, g in rows], color="lightgray",
           label="weights read at the copy bandwidth")
    ax.bar(x, [g["tokens_per_sec"] for _, g in rows], width=0.5, label="measured")
    ax.scatter(x, [g.get("matvec_ceiling_tokens_per_sec", float("nan")) for _, g in rows], marker="_", s=300,
               color="black", zorder=3, label="matrix-vector products alone")
    ax.set_xticks(list(x), [f"{name}\n{g['mode'].replace('cached, ', '').replace(' weights', '').replace(', ', chr(10))}"
                            for name, g in rows], fontsize=7)
    ax.set_ylabel("tokens / second")
    ax.set_title(f"batch-1 cached decoding, {record['config']['gen_tokens']} tokens", fontsize=9)
    ax.legend(fontsize=8)
