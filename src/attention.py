"""One causal self-attention head, written out step by step (the teaching version).

The model itself uses `transformer.MultiHeadAttention`, which computes all heads at once with one
fused projection and `F.scaled_dot_product_attention`; a test proves the two compute the same thing.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q k^T / sqrt(d): how well each query matches each key, before masking and softmax."""
    return q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))


def causal_attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) with the future masked out: row t says how much token t reads each token <= t.

    The 1/sqrt(d) keeps the dot products at unit variance, so the softmax does not saturate
    into a one-hot at initialisation.
    """
    T = q.size(-2)
    scores = attention_scores(q, k)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=q.device), diagonal=1)
    return F.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


class Head(nn.Module):
    """A single head: each token emits a query ("what am I looking for?"), a key ("what do I contain?")
    and a value ("what do I pass on?"); the output is the attention-weighted sum of values."""

    def __init__(self, n_embd: int, head_size: int, dropout: float = 0.0):
        super().__init__()
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        weights = causal_attention_weights(self.query(x), self.key(x))
        out = self.dropout(weights) @ self.value(x)
        return (out, weights) if return_weights else out


@torch.no_grad()
def record_attention(model: nn.Module, idx: torch.Tensor, scores: bool = False) -> list[torch.Tensor]:
    """The attention weights of every layer for `idx` (B, T <= block_size): a list of (B, n_head, T, T).
    scores=True gives the raw scores q k^T / sqrt(d) instead (before the causal mask and the softmax).

    The model's own fast path (`F.scaled_dot_product_attention`) never materialises the weights, and
    stays untouched: a forward hook on each attention module takes the input it was given, projects q and
    k with the module's own weights (rotated when the model uses RoPE) and recomputes the softmax above.
    """
    maps, hooks = [], []

    def hook(module, args, _output):
        x, rope = args[0], args[1] if len(args) > 1 else None
        q, k, _v = module.project(x, rope)
        maps.append((attention_scores if scores else causal_attention_weights)(q.float(), k.float()))

    for block in model.blocks:
        hooks.append(block.attn.register_forward_hook(hook))
    try:
        was_training = model.training
        model.eval()
        model(idx)
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return maps
