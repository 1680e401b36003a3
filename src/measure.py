"""Measuring speed on a noisy machine, and the machine's own limits to measure it against.

A figure on a shared 2-core VM moves by 20% between minutes, so every timing here synchronises the device, warms
up, and reports the median of several runs; contenders that will be compared are timed in turn, round after round
(`interleaved_median_seconds`). A ceiling is the best the machine did (`best_seconds`): the fastest run, not the
median, since slow spells are the machine's and not the hardware's. The ceilings are dense matmul GFLOP/s per dtype
and memory copy GB/s (`measure_ceilings`), and, per model, what its step's kernels alone cost (`training_kernels`,
`matvec_seconds`): what a training or decoding step would cost with nothing else in it.

training/benchmark.py times tinyllm against these; the swap experiments time their components with
`median_seconds`.
"""
from __future__ import annotations

import copy
import statistics
import time
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from device import DTYPES, autocast, peak_resident_bytes, synchronize, torch_compile
from model import GPT
from quantize import Int8Linear
from trainer import TrainConfig, build_optimizers
from transformer import causal_attention, compiles_to_block_causal, query_blocks


def sig(value: float, digits: int = 4) -> float:
    """A measurement rounded to `digits` significant figures for the results file: every stored figure keeps the
    same relative precision (0.05%), so ratios recomputed from stored figures agree with the stored ratios
    however small the numbers (a fixed number of decimals lost 4% on a ratio of 0.012)."""
    return float(f"{value:.{digits}g}")


def interleaved_median_seconds(calls: dict, rounds: int, device, warmup: int = 2) -> dict:
    """Seconds per call of each of `calls`, timed in turn round after round: the median over the rounds. On a
    shared machine whose speed drifts over minutes, rows timed one after another differ by that drift (on
    this 2-core VM, ~20% between the same kernels timed minutes apart); alternating puts every contender in
    the same moments, so their ratios hold."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            synchronize(device)
            t0 = time.perf_counter()
            call()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def median_seconds(fn, repeats: int, device, warmup: int = 1) -> float:
    """Seconds per call of `fn`: the median of `repeats` timed calls after `warmup` untimed ones."""
    return interleaved_median_seconds({"fn": fn}, repeats, device, warmup)["fn"]


def peak_memory_mb(device) -> float:
    """CUDA: peak allocated by torch since the last reset. CPU/MPS: the process's peak resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_resident_bytes() / 2**20


def reset_peak_memory(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


# ----------------------------------------------------------------------------- ceilings

def best_seconds(fn, device, min_runs: int, budget_s: float = 1.0, max_runs: int = 20) -> float:
    """A ceiling is the best the machine did: the fastest of up to max_runs runs in about budget_s (at least
    min_runs), after a warm-up of one run and a fifth of the budget. This shared 2-core machine has slow spells
    (its fp32 matmul rate drifted between ~90 and ~175 GFLOP/s within a day); the fastest run is the hardware."""
    times, runs, started = [], 0, time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - started < budget_s):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        runs += 1
        if runs > 1 and t0 - started > budget_s / 5:
            times.append(time.perf_counter() - t0)
    return min(times)


CEILING_SIZES = (1024, 2048)  # n of the dense n x n products the matmul ceiling tries, smallest first
SLOW_PRODUCT_S = 0.25  # a product that took longer (an emulated dtype) is not tried at a larger size


def dense_matmul(dtype: torch.dtype, device, n: int = CEILING_SIZES[0]):
    """The product the matmul ceiling times, dense n x n: (a call computing it, its FLOPs)."""
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    return (lambda: a @ b), 2 * n**3


def matmul_ceiling(dtype: torch.dtype, device, repeats: int) -> tuple[float, int]:
    """Dense matmul, the best a model's matmuls can do on this device in this dtype: (GFLOP/s, n) of the fastest
    of the CEILING_SIZES. One size is not enough: AMX's bf16 kernels ran 2048^3 products at about twice the rate
    of 1024^3 ones (2026-12-02, 2-core Xeon), so a 1024^3 ceiling let a step's MFU come out above what the
    machine's products do."""
    best = (0.0, CEILING_SIZES[0])
    for n in CEILING_SIZES:
        product, flops = dense_matmul(dtype, device, n)
        seconds = best_seconds(product, device, repeats)
        best = max(best, (flops / seconds / 1e9, n))
        if seconds > SLOW_PRODUCT_S:
            break
    return best


def copy_gbps(device, repeats: int, megabytes: int = 256) -> float:
    """Bytes read + written per second by a large tensor copy: the memory bandwidth decoding is bound by."""
    src = torch.ones(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / best_seconds(lambda: dst.copy_(src), device, repeats) / 1e9


def measure_ceilings(device, repeats: int, dtypes: list[str]) -> dict:
    """The machine's ceilings: matmul_gflops_<dtype> (with matmul_size_<dtype>, the n of the n^3 product that set
    it) for fp32 and each dtype asked for, and copy_gbps."""
    ceilings = {}
    for name in sorted(set(dtypes) | {"fp32"}):
        gflops, n = matmul_ceiling(DTYPES[name], device, repeats)
        ceilings |= {f"matmul_gflops_{name}": sig(gflops), f"matmul_size_{name}": n}
    ceilings["copy_gbps"] = sig(copy_gbps(device, repeats))
    return ceilings


def too_slow_to_train(dtype: str, ceilings: dict) -> str | None:
    """A dtype whose matmuls run at a tiny fraction of fp32's (bf16 on CPUs without AVX-512-BF16/AMX: the
    products are emulated) would take minutes per step; say so with the measured numbers instead."""
    fast, this = ceilings["matmul_gflops_fp32"], ceilings.get(f"matmul_gflops_{dtype}", 0)
    if dtype != "fp32" and this < 0.1 * fast:
        return (f"{dtype} matmuls run at {this:,.1f} GFLOP/s here vs {fast:,.1f} in fp32 "
                f"({fast / max(this, 1e-9):,.0f}x slower): fp32 is the right default on this device")
    return None


# ----------------------------------------------------------- a training step: its FLOPs, its kernels alone

def flops_per_token(model) -> float:
    """Forward + backward FLOPs per trained token: 6 per matmul weight (the output layer included, position
    tables and the embedding lookup excluded) plus attention's scores and weighted sum, 12 * layers * width
    * context (the PaLM appendix formula, counting the causal mask's skipped half as done). Any GPT whose config
    names vocab_size, n_embd, n_layer and block_size (ours, nanoGPT's)."""
    c = model.config
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    matmul_weights = sum(p.numel() for p in model.parameters() if p.dim() == 2 and id(p) not in tables)
    return 6 * (matmul_weights + c.vocab_size * c.n_embd) + 12 * c.n_layer * c.n_embd * c.block_size


def training_kernels(model: GPT, dtype: str, batch: int, device, compiled: bool = False):
    """A call that runs one training step's kernels alone, at the model's own shapes and dtype, in the order the step
    runs them: its matrix products and attention kernels (`training_products`), then its optimizer's update
    (`optimizer_update`). What a step would cost with nothing else in it, the work no step can skip: a ceiling that
    says how far PyTorch's own kernels let a step go on this machine."""
    forward, backward = training_products(model, dtype, batch, device, compiled)
    update = optimizer_update(model, device)

    def kernels():
        for call in forward + backward:
            call()
        update()
    return kernels


def optimizer_update(model: GPT, device):
    """A call that runs the default training step's optimizer update alone (trainer.build_optimizers with
    TrainConfig's defaults: one fused AdamW kernel on a CPU or GPU) on a copy of the model's weights, gradients in
    place. It streams every weight, its gradient and AdamW's two moments through memory (in fp32, 16 bytes a weight
    read and 12 written), work that every step does and that the products alone would leave out."""
    weights = copy.deepcopy(model)  # the model itself is left as it was
    for weight in weights.parameters():
        weight.grad = torch.randn_like(weight) * 1e-3
    optimizers = build_optimizers(weights, TrainConfig(), torch.device(device))

    def update():
        for optimizer in optimizers:
            optimizer.step()
    return update


def training_products(model: GPT, dtype: str, batch: int, device, compiled: bool = False) -> tuple[list, list]:
    """The calls of one training step's products, forward ones and backward ones, each list in the order the step
    runs it: through the blocks (q/k/v projection, attention, output projection, the FFN's layers), then the output
    layer; the backward from the output layer back down, each linear layer's weight gradient before its input's.
    Attention is PyTorch's kernel (transformer.causal_attention, its backward through autograd), or where a compiled
    step runs `block_causal_attention` (bf16 on a CPU) the bmm products of its query blocks, the softmax between
    them left out, like the norms.

    Every layer's products get tensors of their own, as a step's activations are distinct per layer: when the
    backward reaches a layer, its tensors have left the cache. (Each linear layer's three products back to back on
    shared tensors, as this function ran them before, took less time on an AMX Xeon than the step's own products:
    a ceiling set too high, DEVLOG section 5.)"""
    c = model.config
    rows, low = batch * c.block_size, DTYPES[dtype]
    shape = (batch, c.n_head, c.block_size, c.n_embd // c.n_head)

    def linear(layer: nn.Linear) -> tuple[list, list]:
        x, w, g = (torch.randn(size, device=device, dtype=low) for size in
                   ((rows, layer.in_features), (layer.out_features, layer.in_features), (rows, layer.out_features)))
        return [partial(torch.mm, x, w.t())], [partial(torch.mm, g.t(), x), partial(torch.mm, g, w)]

    def attention() -> tuple[list, list]:
        if attention_as_products(compiled, device, dtype):
            return block_causal_products(shape, low, device)
        return attention_kernel(shape, dtype, device, compiled)
    stages = []  # (forward calls, backward calls) of each layer, in the forward's order
    for block in model.blocks:
        stages += [linear(block.attn.qkv), attention(), linear(block.attn.proj)]
        stages += [linear(m) for m in block.ffn.modules() if isinstance(m, nn.Linear)]
    stages.append(linear(model.lm_head))
    return ([call for forward, _ in stages for call in forward],
            [call for _, backward in reversed(stages) for call in backward])


def attention_as_products(compiled: bool, device, dtype: str) -> bool:
    """Whether training_products times attention as block_causal_attention's products (what a compiled step runs
    where transformer.compiles_to_block_causal says so) rather than PyTorch's attention kernel."""
    return compiled and compiles_to_block_causal(device, DTYPES[dtype])


def attention_kernel(shape: tuple, dtype: str, device, compiled: bool) -> tuple[list, list]:
    """Forward and backward calls of transformer.causal_attention (compiled, as a compiled step runs it) for q, k, v
    of `shape`: the forward keeps its output for the backward, which takes the gradients by autograd.grad (no
    accumulation into .grad, which a step does not pay here either)."""
    q, k, v = (torch.randn(shape, device=device, dtype=DTYPES[dtype], requires_grad=True) for _ in range(3))
    grad = torch.randn(shape, device=device, dtype=DTYPES[dtype])
    attend = torch_compile(causal_attention) if compiled else causal_attention
    kept = {}

    def forward():
        with autocast(device, dtype):
            kept["output"] = attend(q, k, v)

    def backward():
        torch.autograd.grad(kept.pop("output"), (q, k, v), grad)
    return [forward], [backward]


def block_causal_products(shape: tuple, dtype: torch.dtype, device) -> tuple[list, list]:
    """The bmm calls of transformer.block_causal_attention's forward and of its backward for q, k, v of `shape` (B,
    H, T, D), with the operands laid out as autograd and the inductor hand them over. Per query block of n queries
    against m keys: forward, the scores q k^T (n x D by D x m) and the weighted sum P v (n x m by m x D); backward,
    the weights' gradient dO v^T (n x D by D x m), q's gradient dS k (n x m by m x D), k's (transposed) q^T dS (D x n
    by n x m) and v's P^T dO (m x n by n x D). The keys are a concatenation of key blocks, k^T a transposed view of
    it; for the first block, a single key block, the inductor writes k^T itself, and dS k takes its transposed view."""
    B, H, T, D = shape

    def operand(rows: int, cols: int, transposed: bool = False) -> torch.Tensor:
        size = (B * H, cols, rows) if transposed else (B * H, rows, cols)
        tensor = torch.randn(size, device=device, dtype=dtype)
        return tensor.transpose(1, 2) if transposed else tensor
    forward, backward = [], []
    for start, end in query_blocks(T):
        n, m = end - start, end
        first = start == 0
        forward += [partial(torch.bmm, operand(n, D), operand(D, m, transposed=not first)),
                    partial(torch.bmm, operand(n, m), operand(m, D))]
        backward += [partial(torch.bmm, operand(n, D), operand(D, m, transposed=True)),
                     partial(torch.bmm, operand(n, m), operand(m, D, transposed=first)),
                     partial(torch.bmm, operand(D, n, transposed=True), operand(n, m)),
                     partial(torch.bmm, operand(m, n, transposed=True), operand(n, D))]
    return forward, backward


# ----------------------------------------------------------- a decoding step: bytes read, products alone

def weight_bytes(model: GPT) -> int:
    """Bytes of the weights a decoding step reads: every saved tensor once (the tied output layer is the embedding)."""
    return sum({t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}.values())


def matvec_seconds(model: GPT, repeats: int, device) -> float:
    """One token's matrix-vector products alone (every linear layer once, batch 1): what decoding would cost
    with nothing else in the step, measured with this model's own kernels (fp32, bf16 or int8) called straight,
    without the module around them. A ceiling, so the best run."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, Int8Linear))]
    dtype = next(model.parameters()).dtype

    def product(layer):
        x = torch.randn(1, layer.in_features, device=device, dtype=dtype)
        return partial(layer.matmul, x) if isinstance(layer, Int8Linear) else partial(F.linear, x, layer.weight)
    products = [product(layer) for layer in layers]

    @torch.inference_mode()
    def one_token_of_products(n=20):
        for _ in range(n):
            for call in products:
                call()
    return best_seconds(one_token_of_products, device, repeats) / 20
