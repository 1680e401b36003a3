"""Dropout whose random numbers are cheap on a CPU.

Dropout needs one random number per element it may drop: at the reference size, tens of millions per training
step, most of them for the attention weights. On a GPU they cost next to nothing. On a CPU, PyTorch's dropout
draws one float per element from its Mersenne twister (`bernoulli_`) on one thread, and inside torch.compile the
inductor generates one per element with its own counter-based generator; in a profile of the compiled reference
step with dropout on, those loops took more time than all the matrix products (training/benchmark.py times
both kinds of dropout, eager and compiled: rows of its components table).

Here each 64-bit draw of the same generator gives four 16-bit numbers, and an element is dropped when its number
falls below p * 65536, so p is rounded to a multiple of 1/65536 (0.2 becomes 0.199997) and the kept elements
are scaled by exactly 1 / (1 - that p). The draw is a custom op, `tinyllm::random_bits`, which torch.compile
keeps as a call instead of tracing into it: a compiled step and an eager one draw the same bits from the same
generator in the same order, so a seed gives the same masks either way (tests/test_precision.py trains both and
compares the curves), and the inductor fuses the comparison and the scaling into the loops around them. Other
devices keep PyTorch's dropout.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F

LEVELS = 1 << 16  # a 16-bit random number per element

if "tags" not in inspect.signature(getattr(torch.library, "custom_op", lambda: None)).parameters:  # torch < 2.8
    raise ImportError(f"tinyllm needs torch 2.8 or newer (custom ops with tags); this is torch {torch.__version__}: "
                      "pip install -r requirements.txt")


@torch.library.custom_op("tinyllm::random_bits", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))
def random_bits(like: torch.Tensor) -> torch.Tensor:
    """Uniform random int16 numbers in the shape of `like`, from the default CPU generator, four per 64-bit draw.

    It takes the tensor to be masked, not a count, so that a compiled graph cannot move the draw before that
    tensor is computed: the draws keep the eager order, and a compiled step masks what an eager one does. (A plain
    `random_()` of int64 draws from [0, 2^63): every fourth number would never be negative. From -2^63 with no
    upper bound, it returns the generator's 64 bits as they are.)"""
    numel = like.numel()
    words = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-2**63, None)
    return words.view(torch.int16)[:numel].view(like.shape)


@random_bits.register_fake
def _(like: torch.Tensor) -> torch.Tensor:
    return torch.empty(like.shape, dtype=torch.int16)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element of x with probability p (rounded to a multiple of 1/65536 on a CPU) and scale the rest
    by 1 / (1 - p), so that the expected output is x; x itself when not training or p is 0."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    dropped = round(p * LEVELS)
    keep = random_bits(x) >= dropped - LEVELS // 2  # the int16 numbers start at -32768
    return x * keep * (LEVELS / (LEVELS - dropped))


class Dropout(nn.Dropout):
    """nn.Dropout computed by `dropout` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
