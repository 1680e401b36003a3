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


def test_benchmark_flops_count_matches_a_hand_count():
    """6 FLOPs per matmul weight per trained token, plus attention's 12 * layers * width * context."""
    import sys
    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "training"))
    import benchmark
    c = tiny_model_config()
    model = GPT(c)
    per_layer = 3 * c.n_embd * c.n_embd + c.n_embd * c.n_embd + 2 * 4 * c.n_embd * c.n_embd
    expected = 6 * (c.n_layer * per_layer + c.vocab_size * c.n_embd) + 12 * c.n_layer * c.n_embd * c.block_size
    assert benchmark.flops_per_token(model) == expected


def compiler_available() -> bool:
    import shutil
    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not compiler_available(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_model_computes_the_same_loss_and_gradients_as_eager():
    torch.manual_seed(0)
    model = GPT(tiny_model_config(pos="rope", norm="rmsnorm", ffn="swiglu", n_layer=1))
    idx = torch.randint(0, 65, (2, 16))
    loss = model(idx, idx)[1]
    loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled_loss = torch.compile(model)(idx, idx)[1]
    compiled_loss.backward()
    assert torch.allclose(loss, compiled_loss, atol=1e-5)
    for eager, p in zip(eager_grads, model.parameters()):
        assert torch.allclose(eager, p.grad, atol=1e-5)


@pytest.mark.skipif(not compiler_available(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_int8_decoding_gives_the_tokens_of_eager_int8_decoding():
    """generate(engine="compile"): one fixed-shape graph per step (cache wrap-around included, 40 > block 16)."""
    from quantize import quantize_int8
    torch.manual_seed(0)
    model = quantize_int8(GPT(tiny_model_config(pos="rope", norm="rmsnorm", ffn="swiglu", n_layer=1)).eval())
    prompt = torch.randint(0, 65, (1, 3))
    assert torch.equal(model.generate(prompt, 40, temperature=0.0, engine="compile"),
                       model.generate(prompt, 40, temperature=0.0))
