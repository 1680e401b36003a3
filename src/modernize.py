"""The modern components LLaMA and Qwen use instead of GPT-2's: RMSNorm, SwiGLU, RoPE, and a KV cache.

Each one is a drop-in swap selected by a config switch (`norm`, `ffn`, `pos`) in `model.GPTConfig`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dropout import Dropout


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight.

    LayerNorm subtracts the mean and adds a bias; RMSNorm only rescales. The re-centring turned out
    not to matter for transformers, and dropping it saves a reduction and the bias parameters.
    It runs in fp32 even under autocast. On CUDA and MPS it is PyTorch's F.rms_norm (a fused kernel there); on a
    CPU, where torch 2.13 builds F.rms_norm from element-wise ops and autograd differentiates each of them, it is
    RMSNormFunction below, except inside torch.compile: there the inductor fuses F.rms_norm and its backward into
    loops as fast as the closed form's (a compiled step timed the same with either), and a graph that calls an
    autograd.Function is one torch's AOTAutograd cache refuses to store, so every run would trace it again.
    tests/test_model.py checks it against the formula written out, and its gradients against autograd's of
    F.rms_norm.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.compiler.is_compiling():
            return RMSNormFunction.apply(x.float(), self.weight.float(), self.eps).type_as(x)
        return F.rms_norm(x.float(), (x.size(-1),), self.weight.float(), self.eps).type_as(x)


class RMSNormFunction(torch.autograd.Function):
    """RMSNorm with its backward written out: y = x_hat * weight, x_hat = x * rstd, rstd = 1/sqrt(mean(x^2) + eps).

    Why by hand: on a CPU each element-wise op is a pass over the activations into a freshly allocated tensor,
    and F.rms_norm's forward plus autograd's backward of it make about sixteen of them. The closed form below
    needs about half, several in place (training/benchmark.py times both, a row of its components table). The gradient of x_hat is the incoming gradient minus its
    component along x_hat (rescaling x does not change x_hat), times rstd:
        grad_x = rstd * (g - x_hat * mean(g * x_hat)),  g = grad_y * weight;  grad_weight = sum(grad_y * x_hat).
    """

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        mean_square = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.size(-1))
        rstd = mean_square.add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, rstd)
        return (x * rstd).mul_(weight)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, rstd = ctx.saved_tensors
        x_hat = x * rstd
        grad_weight = (grad_y * x_hat).reshape(-1, x.size(-1)).sum(0)
        g = grad_y * weight
        along = (g * x_hat).mean(-1, keepdim=True)
        grad_x = torch.addcmul(g, x_hat, along, value=-1).mul_(rstd)
        return grad_x, grad_weight, None


def swiglu_hidden_size(n_embd: int, multiple_of: int = 64) -> int:
    """2/3 * 4d, rounded up to a multiple of 64: three matrices of this size cost the same as the two
    4d matrices of a plain FFN, so the swap is fair at equal parameters (1024 for d = 384)."""
    hidden = int(2 * 4 * n_embd / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): a learned, smooth gate multiplies the features, instead of ReLU's
    hard zeroing. No biases (as in LLaMA)."""

    def __init__(self, n_embd: int, dropout: float = 0.0):
        super().__init__()
        hidden = swiglu_hidden_size(n_embd)
        self.gate = nn.Linear(n_embd, hidden, bias=False)
        self.up = nn.Linear(n_embd, hidden, bias=False)
        self.down = nn.Linear(hidden, n_embd, bias=False)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.silu(self.gate(x)) * self.up(x)))


class RotaryEmbedding(nn.Module):
    """RoPE: rotate each (even, odd) pair of q and k dimensions by an angle position * frequency.

    A rotation by angle a*m of q and b*m of k leaves their dot product depending on (a - b) only, so
    attention scores see relative distance, and no position table is learned. Pair i turns at
    theta^(-2i/d): the first pairs spin fast (local detail), the last ones slowly (long range).
    Values are not rotated: position should change *where* a token looks, not *what* it passes on.
    """

    def __init__(self, head_dim: int, max_positions: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head size, got {head_dim}")
        # float64 on the CPU for accurate angles at large positions; only the cos/sin tables move devices
        self.inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim)
        self._build(max_positions, torch.get_default_device())

    def _build(self, n_positions: int, device: torch.device) -> None:
        if device.type == "meta":  # a model built for its shapes alone (checkpoint.parameter_bytes): no angles
            cos, sin = (torch.empty(n_positions, self.inv_freq.numel(), device=device) for _ in range(2))
        else:
            angles = torch.outer(torch.arange(n_positions, dtype=torch.float64, device="cpu"), self.inv_freq)
            cos, sin = angles.cos().float().to(device), angles.sin().float().to(device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def reserve(self, n_positions: int) -> None:
        """Grow the tables to hold at least `n_positions` positions (decoding may run past block_size)."""
        if n_positions > self.cos.size(0):
            self._build(max(2 * self.cos.size(0), n_positions), self.cos.device)

    def at(self, positions: torch.Tensor):
        """cos/sin (T, D/2) for the absolute positions given (a lookup: the same graph for every decoding step)."""
        return self.cos.index_select(0, positions), self.sin.index_select(0, positions)


def interleaved_to_halves(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of a q or k projection (n_head * d, C): each head's [0, 1, 2, ...] -> [0, 2, 4, ..., 1, 3, 5, ...].

    What these rows compute, rotated by `rotate_halves`, is what the original rows compute rotated by
    `apply_rotary`, with each head's dimensions in another order: q . k is a sum over the same pairs either way."""
    d = weight.size(0) // n_head
    return weight.view(n_head, d // 2, 2, -1).transpose(1, 2).reshape(weight.shape)


def halves_to_interleaved(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """The inverse of `interleaved_to_halves`."""
    d = weight.size(0) // n_head
    return weight.view(n_head, 2, d // 2, -1).transpose(1, 2).reshape(weight.shape)


def rotate_halves(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE over pairs (x[i], x[i + D/2]) (transformers' `rotate_half`), for rows put in that order by
    `interleaved_to_halves`. The two halves are contiguous, so the inductor turns this, and its backward, into
    vector loops; the interleaved pairs of `apply_rotary` it compiles into a scalar loop on a CPU."""
    a, b = x.float().chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1).type_as(x)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[..., 0::2], x[..., 1::2]) of x (..., D) by the given angles (cos and sin tables
    that broadcast against x's pairs: (T, D/2) for x (B, H, T, D), (T, 1, D/2) for x (B, T, H, D)).

    A pair (a, b) is the complex number a + ib, and rotating it by angle t is multiplying it by
    cos t + i sin t: in eager mode one complex product per pair, computed in fp32, fewer passes than four real
    products and a stack. While torch.compile traces, it is those real products: the inductor cannot generate code
    for complex ops, and fuses the real ones into one loop (tests/test_precision.py checks both forms agree). A
    compiled forward without a KV cache (training) rotates halves instead (`rotate_halves`,
    `MultiHeadAttention.project`)."""
    if torch.compiler.is_compiling():
        a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).type_as(x)
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * torch.complex(cos.float(), sin.float())).flatten(-2).type_as(x)


class KVCache:
    """Keys and values of the tokens already seen, for one layer, preallocated once per generation.

    Decoding then costs one token's projections per step instead of re-running the whole window.
    Writes go to slot (position % capacity): once `capacity` (= block_size) tokens are stored, the oldest is
    overwritten, so the cache slides. That is sliding-window attention: each layer attends to at most block_size
    tokens back, the span the model was trained on, and slot order does not matter to softmax. It equals the
    model run without a cache with its attention window (`GPT.attention_window`), not a recomputation of the
    cropped last block_size tokens (which would see fewer tokens in its early positions).
    engine.py holds one per layer, with the position of the next token.
    """

    def __init__(self, capacity: int, dtype: torch.dtype | None = None):
        self.capacity = capacity
        self.dtype = dtype  # None: the dtype of the keys; generation on a CPU asks for fp32 (see engine.Cache)
        self.k = self.v = None  # buffers, allocated at the first update
        self.length = 0  # tokens seen so far = absolute position of the next token

    def update(self, k: torch.Tensor, v: torch.Tensor):
        """Store new keys/values (B, H, T, D); return (keys, values, attn_mask, is_causal) to attend over."""
        B, H, T, D = k.shape
        if self.k is None:
            self.k = k.new_zeros(B, H, self.capacity, D, dtype=self.dtype)
            self.v = v.new_zeros(B, H, self.capacity, D, dtype=self.dtype)
        start = self.length
        if T == 1:  # decoding: one new token sees every stored one, no mask needed
            slot = start % self.capacity
            self.k[:, :, slot] = k[:, :, 0]
            self.v[:, :, slot] = v[:, :, 0]
            self.length += 1
            n = min(self.length, self.capacity)
            return self.k[:, :, :n], self.v[:, :, :n], None, False
        if start + T > self.capacity:
            raise ValueError(f"a {T}-token chunk at position {start} does not fit a cache of {self.capacity}")
        self.k[:, :, start:start + T] = k
        self.v[:, :, start:start + T] = v
        self.length += T
        if start == 0:  # prefill: plain causal attention over the prompt itself
            return k, v, None, True
        rows = torch.arange(start, start + T, device=k.device)[:, None]
        mask = torch.arange(start + T, device=k.device)[None, :] <= rows
        return self.k[:, :, :start + T], self.v[:, :, :start + T], mask, False

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store this chunk's keys and values, then attend its queries over everything stored: (B, H, T, D)."""
        keys, values, mask, causal = self.update(k, v)
        return F.scaled_dot_product_attention(q.to(keys.dtype), keys, values, attn_mask=mask, is_causal=causal)
