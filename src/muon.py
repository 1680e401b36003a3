"""Muon: momentum, orthogonalised by Newton-Schulz, for the hidden weight matrices (Keller Jordan et al., 2024).

Why orthogonalise. The momentum of a weight matrix is typically dominated by a few directions: its singular values
spread over orders of magnitude, so a plain (or Adam-scaled) update moves the matrix a lot along those few
directions and hardly at all along the rest. Muon replaces the update M = U S V^T by its orthogonal part U V^T:
every singular value becomes 1, so every direction the gradient points into moves by the same amount.

Why Newton-Schulz. U V^T could come from an SVD, but that is slow and serial. Instead, scale M so that all its
singular values are at most 1 (dividing by its Frobenius norm does it), then apply an odd polynomial
p(x) = a x + b x^3 + c x^5 to it a few times. For a matrix, X -> a X + b (X X^T) X + c (X X^T)^2 X applies p to
every singular value at once while keeping U and V, using only matrix products. With a = 3.4445, b = -4.7750,
c = 2.0315, five iterations map every singular value in (0, 1] into roughly [0.7, 1.2]: not exactly 1, which
turns out not to matter, and only 15 small matrix products per matrix per step.

Where it applies. To the 2-D matrices inside the blocks, which map one hidden space to another. Not to the
embedding (each row is one token, updated only when that token occurs: row-wise is what Adam already does), not
to vectors (norm weights, biases): those keep AdamW (trainer.build_optimizers).

The update is scaled by 0.2 * sqrt(max(rows, cols)) (Moonshot's "Muon is scalable for LLM training"), which gives
it the RMS of a typical AdamW update, so one learning rate and weight decay serve both optimizers.
"""
from __future__ import annotations

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def orthogonalize(matrix: torch.Tensor, steps: int = 5, dtype: str = "bf16") -> torch.Tensor:
    """The orthogonal part U V^T of `matrix` (approximately: singular values ~0.7..1.2), by Newton-Schulz in `dtype`
    (bf16 | fp32)."""
    a, b, c = NS_COEFFICIENTS
    x = matrix.to(NS_DTYPES[dtype])
    wide = x.size(0) <= x.size(1)
    if not wide:  # iterate on the smaller Gram matrix X X^T
        x = x.T
    x = x / x.norm().clamp(min=1e-7)  # every singular value now at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.T).to(matrix.dtype)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised (see the module docstring), for 2-D parameters.

    ns_dtype: the precision of the Newton-Schulz products. bf16 when the run trains in bf16; fp32 otherwise (a CPU
    without AVX512_BF16 or AMX emulates bf16 products about a hundred times slower than fp32, and a run asked for
    in fp32 gets no bf16 rounding), which trainer.build_optimizers decides through device.py."""

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5, ns_dtype: str = "bf16"):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_steps=ns_steps, ns_dtype=ns_dtype))
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon updates 2-D matrices; got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"].mul_(momentum).add_(p.grad)
                update = p.grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
                direction = orthogonalize(update, group["ns_steps"], group["ns_dtype"])
                p.mul_(1 - lr * group["weight_decay"])  # decoupled weight decay, as AdamW
                p.add_(direction, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))
        return loss
