"""Int8 weight-only quantization, for decoding.

Generating one token at batch 1 multiplies a single vector by every weight matrix once, so its speed is
set by how many bytes of weights are read, not by arithmetic. Storing each weight in 8 bits (with one
scale per output row) halves the bytes of bf16 and quarters those of fp32. The errors: each weight is rounded
to one of 255 levels of its row's largest magnitude, and the activations, the embedding (also the tied output
layer) and the norms' weights are rounded to bf16. That changes the logits slightly (tests/test_quantize.py
bounds it; the benchmark records the val loss and greedy agreement).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

PACKED_KERNEL_WIDTH = 16


def packed_kernel_is_safe(in_features: int) -> bool:
    """Whether `aten._weight_int8pack_mm` may be called for this input width.

    The kernel asks for in_features % 8 == 0, but in torch 2.13 on an AVX-512 CPU (Zen 4) it crashes the whole
    process (SIGSEGV) when in_features is 8 more than a multiple of 16 and there is more than one input row:
    K = 8, 24, 40, 72, ... crash at M = 2..64, while every multiple of 16 ran at every M tried (2 to 300). A crash
    by signal cannot be caught, so the kernel is used only at widths that are multiples of 16; other widths take
    the plain product (tests/test_quantize.py runs the odd widths in a child process)."""
    return in_features % PACKED_KERNEL_WIDTH == 0


class Int8Linear(nn.Module):
    """y = (x @ q^T) * scale + bias, with q int8 (out, in) and scale (out,) = max |row| / 127."""

    def __init__(self, linear: nn.Linear, activation_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        # round the scale to the dtype it is stored in first, so each weight is within half a step of q * scale
        scale = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127).to(activation_dtype)
        q = torch.round(weight / scale.float()[:, None]).clamp(-127, 127)
        self.register_buffer("q", q.to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(activation_dtype),
                                                                  requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.scale.dtype)
        y = self.matmul(x.reshape(-1, x.size(-1))).view(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """(M, in) activations in the scale's dtype -> (M, out), no bias: the product alone."""
        if self.uses_packed_kernel():
            # PyTorch's CPU int8 x bf16 kernel (the one torchao uses)
            return torch.ops.aten._weight_int8pack_mm(x, self.q, self.scale)
        return F.linear(x, self.q.to(x.dtype)) * self.scale

    def uses_packed_kernel(self) -> bool:
        return self.q.device.type == "cpu" and packed_kernel_is_safe(self.in_features)

    def dequantized_weight(self) -> torch.Tensor:
        return self.q.float() * self.scale.float()[:, None]

    def to_linear(self) -> nn.Linear:
        """An fp32 nn.Linear holding exactly these weights (q * scale)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight.data = self.dequantized_weight()
        if self.bias is not None:
            linear.bias.data = self.bias.data.float()
        return linear


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear inside the transformer blocks by an Int8Linear, in place, and cast the rest
    (embedding and tied output layer, norms) to bf16. The embedding stays 16-bit: it is read one row per
    token, and the output layer shares it."""
    model.to(torch.bfloat16)
    for block in model.blocks:
        replace_layers(block, nn.Linear, Int8Linear)
    return model


def replace_layers(root: nn.Module, kind: type, make) -> None:
    """Swap every submodule of type `kind` inside `root` for make(submodule), in place."""
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kind):
                setattr(parent, name, make(child))


def dequantize(model: nn.Module) -> nn.Module:
    """A copy in fp32 with exactly the int8 model's weights (q * scale) in plain nn.Linear layers: the function
    src/cdecode.c computes (int8 weights, fp32 activations), so its val loss and logits can be checked."""
    model = copy.deepcopy(model).float()
    replace_layers(model, Int8Linear, Int8Linear.to_linear)
    return model
