"""The dtype policy, per device (devices mocked), and mixed precision correctness on the CPU."""
import pytest
import torch

from common import UserError, autocast, resolve_dtype
from conftest import tiny_model_config
from model import GPT


@pytest.mark.parametrize("bf16_ok, expected", [(True, "bf16"), (False, "fp16")])
def test_cuda_auto_picks_bf16_where_supported_else_fp16(monkeypatch, bf16_ok, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    assert resolve_dtype("auto", torch.device("cuda")) == expected
    assert resolve_dtype("fp32", torch.device("cuda")) == "fp32"


def test_mps_and_cpu_default_to_fp32_and_refuse_fp16():
    for device in ("mps", "cpu"):
        assert resolve_dtype("auto", torch.device(device)) == "fp32"
        assert resolve_dtype("bf16", torch.device(device)) == "bf16"
        with pytest.raises(UserError, match="fp16"):
            resolve_dtype("fp16", torch.device(device))
    with pytest.raises(UserError, match="unknown"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_bf16_autocast_on_cpu_stays_close_to_fp32():
    torch.manual_seed(0)
    model = GPT(tiny_model_config(pos="rope", norm="rmsnorm", ffn="swiglu")).eval()
    idx = torch.randint(0, 65, (2, 16))
    ref = model(idx, idx)[1]
    with autocast(torch.device("cpu"), "bf16"):
        low = model(idx, idx)[1]
    assert abs(ref.item() - low.item()) < 0.05


def test_grad_scaler_only_for_fp16(tmp_path, small_text):
    from conftest import tiny_train_config
    from trainer import Run
    run = Run(tiny_model_config(), tiny_train_config(tmp_path / "r", small_text), log=lambda *_: None)
    assert run.dtype == "fp32" and not run.scaler.is_enabled()
