"""Int8 weight-only quantization: each weight moves by at most half a step of its row's scale, the packed
CPU kernel computes the same product as the plain dequantized matmul at every width (the odd ones run in a
child process: a kernel crash must fail a test, not kill the suite), and a quantized model's logits stay
close to the fp32 model's."""
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from conftest import ROOT, tiny_model_config
from model import GPT
from quantize import Int8Linear, packed_kernel_is_safe, quantize_int8

# widths 8 more than a multiple of 16 crashed torch 2.13's packed kernel on an AVX-512 CPU at batch > 1
ODD_WIDTHS = [8, 24, 36, 40, 56, 72, 104]
CHILD = """
import sys, torch, torch.nn as nn
sys.path.insert(0, sys.argv[1])
from quantize import Int8Linear
torch.manual_seed(0)
for width in map(int, sys.argv[2:]):
    print(width, flush=True)  # the last width printed names the one that crashed
    linear = nn.Linear(width, 24)
    q = Int8Linear(linear)
    for rows in (1, 2, 4, 15, 64):
        x = torch.randn(rows, width)
        expected = x.bfloat16().float() @ q.dequantized_weight().T + linear.bias.bfloat16().float()
        assert torch.allclose(q(x).float(), expected, rtol=2e-2, atol=2e-2), (width, rows)
print("ok")
"""


def test_odd_widths_at_batch_above_one_run_without_crashing_the_process():
    result = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "src"), *map(str, ODD_WIDTHS + [16, 48, 384])],
                            capture_output=True, text=True, timeout=120)
    last = (result.stdout.split() or ["none"])[-1]
    assert result.returncode == 0, f"exit {result.returncode} at in_features {last}: {result.stderr[-500:]}"
    assert last == "ok"


def test_the_packed_kernel_is_only_used_at_widths_where_it_is_safe():
    assert [w for w in ODD_WIDTHS + [16, 48, 384, 1024] if packed_kernel_is_safe(w)] == [16, 48, 384, 1024]
    assert Int8Linear(nn.Linear(384, 8)).uses_packed_kernel()
    assert not Int8Linear(nn.Linear(40, 8)).uses_packed_kernel()


@pytest.mark.parametrize("in_features", [48, 36])  # 48: the packed kernel; 36: the plain product
def test_int8_linear_matches_its_dequantized_weights(in_features):
    torch.manual_seed(0)
    linear = nn.Linear(in_features, 24)
    q = Int8Linear(linear)
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
