"""Int8 weight-only quantization: each weight moves by at most half a step of its row's scale, the packed
CPU kernel computes the same product as the plain dequantized matmul, and a quantized model's logits stay
close to the fp32 model's."""
import pytest
import torch
import torch.nn as nn

from conftest import tiny_model_config
from model import GPT
from quantize import Int8Linear, quantize_int8


@pytest.mark.parametrize("in_features", [40, 36])  # 40: the packed kernel; 36 (not a multiple of 8): the fallback
def test_int8_linear_matches_its_dequantized_weights(in_features):
    torch.manual_seed(0)
    linear = nn.Linear(in_features, 24)
    q = Int8Linear(linear)
    assert q.uses_packed_kernel() == (in_features % 8 == 0)
    step = q.scale.float()[:, None]
    assert ((q.dequantized_weight() - linear.weight).abs() <= step * 0.501).all()
    x = torch.randn(3, 5, in_features)
    expected = x.bfloat16().float() @ q.dequantized_weight().T + linear.bias.bfloat16().float()
    assert torch.allclose(q(x).float(), expected, rtol=2e-2, atol=2e-2)
    assert not torch.allclose(q(x).float(), expected + 0.1, rtol=2e-2, atol=2e-2)


def test_quantized_model_logits_stay_close_to_fp32():
    torch.manual_seed(0)
    model = GPT(tiny_model_config(pos="rope", norm="rmsnorm", ffn="swiglu", n_embd=64)).eval()
    idx = torch.randint(0, 65, (2, 16))
    reference = model(idx)[0]
    quantized = quantize_int8(model)
    assert isinstance(quantized.blocks[0].attn.qkv, Int8Linear)
    assert quantized.blocks[0].attn.qkv.q.dtype == torch.int8
    error = (quantized(idx)[0].float() - reference).abs().max()
    assert 0 < error < 0.05 * reference.abs().max()
