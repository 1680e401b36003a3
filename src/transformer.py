"""The transformer block: multi-head causal self-attention, the feed-forward network, pre-norm residuals.

Which norm, FFN and position scheme a block uses is decided by the config switches in `model.GPTConfig`,
so vanilla GPT and the modern LLaMA-style model are the same code with different settings.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from dropout import Dropout, dropout as apply_dropout
from modernize import RMSNorm, SwiGLU, apply_rotary, interleaved_to_halves, rotate_halves


def sliding_window_mask(length: int, window: int, device=None) -> torch.Tensor:
    """Causal mask where token i sees tokens i-window+1 .. i (True = may attend)."""
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    return (j <= i) & (j > i - window)


class MultiHeadAttention(nn.Module):
    """All heads at once: one fused q/k/v projection, then `F.scaled_dot_product_attention`
    (FlashAttention on CUDA), instead of a Python loop over `attention.Head`s."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, proj_bias: bool):
        super().__init__()
        assert n_embd % n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.head_size = n_head, n_embd // n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)  # rows: all queries, all keys, all values
        self.proj = nn.Linear(n_embd, n_embd, bias=proj_bias)
        self.dropout = dropout
        self.resid_dropout = Dropout(dropout)

    def project(self, x: torch.Tensor, rope=None, halves: bool = False):
        """q, k, v as (B, n_head, T, head_size), with q and k rotated when RoPE tables are given.

        The rotation runs before the heads move in front of T, in the layout the projection wrote: in a compiled
        training step on a CPU, its backward then fuses into a pass that reads and writes along head_size, instead
        of one that also transposes (the step measured faster in paired rounds, DEVLOG section 5).
        halves=True projects q and k with each head's rows in the order [0, 2, 4, ..., 1, 3, 5, ...] and rotates
        contiguous halves (`rotate_halves`): the same attention, each head's dimensions in another order, which the
        inductor compiles into vector loops where interleaved pairs compile into scalar ones. A compiled forward
        without a cache does that (`forward`); a cache keeps keys in the interleaved order every engine reads."""
        B, T, C = x.shape
        halves = halves and rope is not None and isinstance(self.qkv, nn.Linear)  # int8 layers keep their rows
        qkv = F.linear(x, self.halves_weight()) if halves else self.qkv(x)
        q, k, v = qkv.view(B, T, 3, self.n_head, self.head_size).unbind(2)  # each (B, T, n_head, head_size)
        if rope is not None:
            cos, sin = (table[:, None, :] for table in rope)  # (T, 1, head_size / 2): every head turns alike
            rotate = rotate_halves if halves else apply_rotary
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def halves_weight(self) -> torch.Tensor:
        """The q/k/v projection's weight with each head's query and key rows in `interleaved_to_halves` order."""
        q_rows, k_rows, v_rows = self.qkv.weight.split(self.n_head * self.head_size)
        q_rows, k_rows = (interleaved_to_halves(rows, self.n_head) for rows in (q_rows, k_rows))
        return torch.cat((q_rows, k_rows, v_rows))

    def forward(self, x, rope=None, cache=None, window: int | None = None):
        """Causal self-attention of x (B, T, C). Without a cache, token i attends to tokens i-window+1 .. i
        (all earlier ones if window is None or T <= window). With a cache (one layer's, see engine.py), this
        chunk's keys and values are stored and its queries attend over everything the cache holds."""
        B, T, C = x.shape
        q, k, v = self.project(x, rope, halves=cache is None and torch.compiler.is_compiling())
        if cache is not None:
            y = cache.attend(q, k, v)
        else:
            mask = sliding_window_mask(T, window, x.device) if window is not None and T > window else None
            y = causal_attention(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, C).to(x.dtype)))


def causal_attention(q, k, v, mask=None, dropout: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d), causal or `mask`) v over whole sequences, by `F.scaled_dot_product_attention`.

    On a CPU it runs in fp32 even under bf16 autocast: PyTorch's CPU flash-attention kernel accumulates in fp32
    either way, and was faster with fp32 inputs than with bf16 ones on the AVX512_BF16 CPU we measured it on
    (training/benchmark.py times both, as a component row, on the machine it runs on). Inside torch.compile, bf16
    causal attention on a CPU is `block_causal_attention` instead: its products run as bf16 matmuls and the
    inductor fuses the softmax around them, which measured faster than the fp32 kernel (a component row too).
    With dropout, a CPU runs `block_causal_attention` in either case, so that the attention weights are dropped
    with the cheap bits of dropout.py (the kernel would draw its own, one float each)."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=dropout)
    if mask is None and torch.compiler.is_compiling() and compiles_to_block_causal(q.device, q.dtype):
        return block_causal_attention(q, k, v, dropout)
    # entered only under autocast: a compiled graph that enters an autocast region is not stored by AOTAutograd's cache
    with torch.autocast("cpu", enabled=False) if torch.is_autocast_enabled("cpu") else contextlib.nullcontext():
        q, k, v = q.float(), k.float(), v.float()
        if mask is None and dropout > 0:
            return block_causal_attention(q, k, v, dropout)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=dropout)


def compiles_to_block_causal(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether causal attention without a mask runs as `block_causal_attention` inside torch.compile: bf16 on a CPU
    (causal_attention; training/benchmark.py times a compiled step's attention by the same rule)."""
    return torch.device(device).type == "cpu" and dtype == torch.bfloat16


QUERY_BLOCK = 64  # queries per block of block_causal_attention (32 and 128 measured slower at the reference size)


def query_blocks(T: int) -> list[tuple[int, int]]:
    """(start, end) of block_causal_attention's query blocks over T tokens; block i attends to keys [0, end)."""
    return [(start, min(start + QUERY_BLOCK, T)) for start in range(0, T, QUERY_BLOCK)]


def block_causal_attention(q, k, v, dropout: float = 0.0) -> torch.Tensor:
    """Causal attention written out as products, QUERY_BLOCK queries at a time, each block against only the keys up
    to its last query: the score blocks above the diagonal, which the mask would zero anyway, are never computed,
    which saves 3/8 of the work at 256 tokens (what flash attention kernels do by skipping tiles).

    The scores come out of the matmul in q's dtype (under bf16 rounded, where a flash kernel keeps them in fp32:
    swap 7 measures what bf16 training costs the loss), the softmax runs in fp32, and its weights return to v's
    dtype for the second product, as in flash attention. Written for torch.compile, which fuses the scale, mask,
    softmax and casts into one loop per block; run eagerly in float64 it is tested against PyTorch's kernel. A CPU
    also runs it eagerly, in fp32, when attention has dropout (causal_attention).

    Each block's keys and values are the key blocks up to its own, concatenated, rather than a slice k[..., :end, :].
    The backward of a slice pads its gradient to the full length, and the inductor sums the blocks' padded
    gradients with a bounds check on every element, fused into RoPE's backward (the largest generated loop of a
    compiled step); the gradient of a concatenation is split into whole key blocks instead, summed by plain adds.
    The copies this costs the forward are small, and the step measured faster (DEVLOG section 5)."""
    T, scale = q.shape[-2], q.shape[-1] ** -0.5
    softmax_dtype = torch.promote_types(q.dtype, torch.float32)  # fp32 for bf16/fp16 inputs, fp64 stays fp64
    key_blocks, value_blocks = k.split(QUERY_BLOCK, dim=-2), v.split(QUERY_BLOCK, dim=-2)
    outputs = []
    for block, (start, end) in enumerate(query_blocks(T)):
        keys, values = torch.cat(key_blocks[:block + 1], dim=-2), torch.cat(value_blocks[:block + 1], dim=-2)
        scores = (q[..., start:end, :] @ keys.transpose(-2, -1)).to(softmax_dtype) * scale
        future = torch.arange(start, end, device=q.device)[:, None] < torch.arange(end, device=q.device)
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        weights = apply_dropout(weights, dropout)
        outputs.append(weights.to(v.dtype) @ values)
    return torch.cat(outputs, dim=-2)


class FeedForward(nn.Module):
    """Linear(d, 4d) -> activation -> Linear(4d, d): the per-token computation between attentions.
    `relu` is GPT's original; `relu2` (ReLU squared, used by nanochat/modded-nanogpt) has the same size."""

    def __init__(self, n_embd: int, dropout: float, activation: str = "relu"):
        super().__init__()
        self.up = nn.Linear(n_embd, 4 * n_embd)
        self.down = nn.Linear(4 * n_embd, n_embd)
        self.activation = activation
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.up(x))
        if self.activation == "relu2":
            h = h.square()
        return self.dropout(self.down(h))


def make_norm(kind: str, dim: int) -> nn.Module:
    return RMSNorm(dim, eps=1e-6) if kind == "rmsnorm" else nn.LayerNorm(dim, eps=1e-5)


def make_ffn(kind: str, dim: int, dropout: float) -> nn.Module:
    return SwiGLU(dim, dropout) if kind == "swiglu" else FeedForward(dim, dropout, activation=kind)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + ffn(norm(x)). Normalising the input of each
    branch (not the residual stream itself) keeps a clean identity path, so deep stacks train stably."""

    def __init__(self, config):
        super().__init__()
        self.norm1 = make_norm(config.norm, config.n_embd)
        self.attn = MultiHeadAttention(config.n_embd, config.n_head, config.dropout, config.attn_proj_bias)
        self.norm2 = make_norm(config.norm, config.n_embd)
        self.ffn = make_ffn(config.ffn, config.n_embd, config.dropout)

    def forward(self, x, rope=None, cache=None, window=None):
        x = x + self.attn(self.norm1(x), rope, cache, window)
        return x + self.ffn(self.norm2(x))
