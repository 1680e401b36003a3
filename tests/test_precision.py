"""The dtype policy, per device (devices mocked), and mixed precision correctness on the CPU."""
import pytest
import torch

import device
from common import UserError
from device import COMPILE_MIN_SECONDS, COMPILE_MIN_STEPS, autocast, cpp_compiler, resolve_compile, resolve_dtype
from conftest import tiny_model_config
from engine import generate
from model import GPT


@pytest.mark.parametrize("bf16_ok, expected", [(True, "bf16"), (False, "fp16")])
def test_cuda_auto_picks_bf16_where_supported_else_fp16(monkeypatch, bf16_ok, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    assert resolve_dtype("auto", torch.device("cuda")).dtype == expected
    assert resolve_dtype("fp32", torch.device("cuda")).dtype == "fp32"


def cpu_with(monkeypatch, flags: set, speedup: float) -> list:
    """A mocked CPU: its flags, and what the bf16/fp32 matmul probe would measure on it. Returns the probe calls."""
    probes = []
    monkeypatch.setattr(device, "cpu_flags", lambda: set(flags))
    monkeypatch.setattr(device, "bf16_matmul_speedup", lambda: probes.append(1) or speedup)
    return probes


@pytest.mark.parametrize("flags, speedup, expected, why, probed", [
    ({"avx2", "fma"}, 0.01, "fp32", "no AVX512_BF16 or AMX-BF16 flag", True),         # AVX2-only EPYC: emulated bf16
    ({"avx2", "avx512f", "avx512_bf16"}, 0.01, "bf16", "AVX512_BF16", False),          # Zen 4: flags decide, no probe
    ({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, 0.01, "bf16", "AMX-BF16", False),  # Sapphire Rapids
    ({"avx2", "avx512f", "amx_tile", "amx_bf16"}, 0.01, "bf16", "AMX-BF16", False),    # AMX without AVX512_BF16
    ({"asimd", "bf16"}, 2.0, "bf16", "Arm BF16, but a measured bf16 matmul ran 2.0x", True),  # Graviton 3: probed
    ({"asimd", "bf16"}, 0.05, "fp32", "Arm BF16, and a measured bf16 matmul ran at 0.05x", True),  # a build not using it
    (set(), 2.5, "bf16", "2.5x faster", True),                                         # flags unreadable: the probe decides
    (set(), 1.1, "fp32", "could not be read", True),
])
def test_cpu_auto_decides_from_the_flags_or_a_probe_and_says_why(monkeypatch, flags, speedup, expected, why, probed):
    probes = cpu_with(monkeypatch, flags, speedup)
    choice = resolve_dtype("auto", torch.device("cpu"))
    assert choice.dtype == expected and why in choice.reason and choice.reason.startswith("auto:")
    assert bool(probes) == probed


def test_a_cuda_index_past_the_machines_gpus_is_refused_before_anything_runs(monkeypatch):
    """torch.device('cuda:5') is a valid name on a 2-GPU machine; only its first use fails, with a CUDA traceback."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device.pick_device("cuda:1") == torch.device("cuda:1")
    assert device.pick_device("cuda") == torch.device("cuda")
    with pytest.raises(UserError, match="has 2 CUDA GPU\\(s\\): use cuda:0 to cuda:1"):
        device.pick_device("cuda:2")


def test_an_explicit_dtype_is_kept_and_fp16_refused_off_cuda(monkeypatch):
    cpu_with(monkeypatch, {"avx2"}, 0.01)
    assert resolve_dtype("bf16", torch.device("cpu")) == device.Precision("bf16", "--dtype bf16 asked for")
    assert resolve_dtype("fp32", torch.device("cpu")).dtype == "fp32"
    assert resolve_dtype("auto", torch.device("mps")).dtype == "fp32"
    for name in ("mps", "cpu"):
        with pytest.raises(UserError, match="fp16"):
            resolve_dtype("fp16", torch.device(name))
    with pytest.raises(UserError, match="unknown"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_the_probe_measures_a_real_ratio():
    speedup = device.bf16_matmul_speedup.__wrapped__(n=64, runs=1)
    assert 0 < speedup < 1000


def test_the_hardware_description_names_the_flags_that_decide_speed(monkeypatch):
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16", "sse4_2"})
    text = device.describe_hardware(torch.device("cpu"))
    assert "(avx2 avx512f avx512_bf16)" in text and "threads" in text and "sse4_2" not in text


def test_the_cpu_name_carries_its_family_and_model_numbers(monkeypatch):
    """A VM may report only 'AMD EPYC' for generations that share their flags but not their speed."""
    block = "processor\t: {}\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
    monkeypatch.setattr(device, "cpuinfo", lambda: block.format(0) + "\n" + block.format(1).replace("26", "25"))
    assert device.cpu_name() == "AMD EPYC, family 26 model 2"
    monkeypatch.setattr(device, "cpuinfo", lambda: "")
    assert device.cpu_name()  # macOS, Windows: what platform says


@pytest.mark.parametrize("flags, tag", [({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, "cpu-amx"),
                                        ({"avx2", "avx512f", "avx512_bf16"}, "cpu-avx512bf16"),
                                        ({"avx2", "avx512f"}, "cpu-avx512"), ({"avx2", "fma"}, "cpu-avx2"),
                                        ({"asimd", "bf16"}, "cpu-arm-bf16"), ({"asimd"}, "cpu-arm"), (set(), "cpu-other")])
def test_the_hardware_tag_names_the_class_of_cpu_whose_targets_apply(monkeypatch, flags, tag):
    """The benchmark's results are named by it: an AVX2-only run must not overwrite a native-bf16 run's figures."""
    monkeypatch.setattr(device, "cpu_flags", lambda: flags)
    assert device.hardware_tag(torch.device("cpu")) == tag


def test_training_records_the_precision_and_its_reason(tmp_path, small_text, monkeypatch):
    import json
    from conftest import tiny_train_config
    from trainer import train
    cpu_with(monkeypatch, {"avx512_bf16"}, 0.01)
    lines = []
    summary = train(tiny_model_config(), tiny_train_config(tmp_path / "r", small_text, dtype="auto"), log=lines.append)
    assert summary["dtype"] == "bf16" and "AVX512_BF16" in summary["dtype_reason"]
    assert "bf16 (auto: this CPU has AVX512_BF16" in lines[0]
    best = json.loads((tmp_path / "r" / "best" / "config.json").read_text())
    assert best["dtype"] == "bf16" and best["dtype_reason"] == summary["dtype_reason"]
    fp32 = train(tiny_model_config(), tiny_train_config(tmp_path / "f", small_text), log=lambda *_: None)
    assert fp32["dtype"] == "fp32" and fp32["dtype_reason"] == "--dtype fp32 asked for"
    bf16_curve, fp32_curve = ([e["val_loss"] for e in json.loads((tmp_path / run / "history.json").read_text())["evals"]]
                              for run in ("r", "f"))
    assert fp32_curve[-1] < fp32_curve[0] - 0.3  # the fp32 run learns...
    assert max(abs(a - b) for a, b in zip(bf16_curve, fp32_curve)) < 0.01  # ...and bf16 autocast follows its curve


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
    from trainer import Trainer
    run = Trainer(tiny_model_config(), tiny_train_config(tmp_path / "r", small_text), log=lambda *_: None)
    assert run.dtype == "fp32" and not run.scaler.is_enabled()


def test_compile_auto_compiles_long_cpu_runs_of_fusible_models_where_a_compiler_is_found(monkeypatch):
    """--compile auto: compiled only for a single-process CPU run of at least COMPILE_MIN_STEPS steps (and no time
    limit under COMPILE_MIN_SECONDS) of a model with components the compiler fuses, with a C++ compiler; each other
    case is eager and says why; "on"/"off" are kept as asked."""
    from model import GPTConfig
    from trainer import fusible_components
    cpu, long_run = torch.device("cpu"), COMPILE_MIN_STEPS
    modern = fusible_components(GPTConfig.named("modern"))
    assert modern == ("RMSNorm", "RoPE", "SwiGLU") and fusible_components(GPTConfig.named("vanilla")) == ()
    monkeypatch.setattr(device.shutil, "which", lambda name: f"/usr/bin/{name}")
    decided = resolve_compile("auto", cpu, long_run, fusible=modern)
    assert decided.enabled and "fusing RMSNorm, RoPE, SwiGLU" in decided.reason
    assert resolve_compile("auto", cpu, long_run, fusible=modern, max_time=COMPILE_MIN_SECONDS).enabled
    for case, why in ((resolve_compile("auto", cpu, long_run - 1, fusible=modern), f"run of {long_run - 1} steps"),
                      (resolve_compile("auto", cpu, long_run, world=2, fusible=modern), "torchrun"),
                      (resolve_compile("auto", cpu, long_run, fusible=modern, max_time=1.5), "capped at 1.5 s"),
                      (resolve_compile("auto", cpu, long_run), "nothing the compiler fuses"),
                      (resolve_compile("auto", torch.device("cuda"), long_run, fusible=modern), "on cuda")):
        assert not case.enabled and why in case.reason
    monkeypatch.setattr(device.shutil, "which", lambda _name: None)
    assert "no C++ compiler" in resolve_compile("auto", cpu, long_run, fusible=modern).reason
    assert resolve_compile("on", cpu, 1) == device.Compile(True, "--compile on asked for")
    assert not resolve_compile("off", cpu, long_run, fusible=modern).enabled
    with pytest.raises(UserError, match="choose auto, on or off"):
        resolve_compile("yes", cpu, long_run)


def test_the_rotation_the_compiler_sees_is_the_complex_one_in_real_numbers(monkeypatch):
    """apply_rotary computes RoPE as a complex product in eager mode, and as its real-number form while
    torch.compile traces (the inductor cannot generate code for complex ops): both give the same rotation."""
    from modernize import RotaryEmbedding, apply_rotary
    torch.manual_seed(0)
    x, rope = torch.randn(2, 3, 7, 8), RotaryEmbedding(8, 16)
    cos, sin = rope.at(torch.arange(7))
    complex_form = apply_rotary(x, cos, sin)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.allclose(apply_rotary(x, cos, sin), complex_form, atol=1e-6)
    assert not torch.allclose(complex_form, x, atol=1e-2)  # it did rotate



def test_a_compiled_forward_without_a_cache_rotates_halves_of_reordered_rows_to_the_same_attention(monkeypatch):
    """While torch.compile traces a forward without a cache, each head's query and key rows are reordered
    [0, 2, 4, ..., 1, 3, 5, ...] and RoPE rotates contiguous halves (vector loops for the inductor). q and k are then
    the interleaved ones with their dimensions in that order, v is untouched, so the scores, the layer's output
    and the weight's gradient are the same; with a cache (decoding), the interleaved order stays."""
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig.named("modern", n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11, dropout=0.0))
    model.double()
    attention, rope = model.blocks[0].attn, model.rope.at(torch.arange(8))
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    q, k, v = attention.project(x, rope)
    qh, kh, vh = attention.project(x, rope, halves=True)
    order = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])  # head size 8
    assert torch.allclose(qh, q[..., order], atol=1e-6) and torch.allclose(kh, k[..., order], atol=1e-6)
    assert torch.equal(vh, v) and not torch.allclose(qh, q, atol=1e-2)

    def output_and_grad(compiling):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)
        attention.zero_grad()
        y = attention(x, rope)
        y.square().sum().backward()
        return y.detach(), attention.qkv.weight.grad.clone()
    (y, grad), (yh, grad_h) = output_and_grad(False), output_and_grad(True)
    assert torch.allclose(yh, y, atol=1e-6) and torch.allclose(grad_h, grad, atol=1e-5)
    asked = []  # what forward asks project for, compiling, without a cache and with one
    monkeypatch.setattr(attention, "project", lambda *args, halves: asked.append(halves) or (q, k, v))
    attention(x, rope)
    attention(x, rope, cache=type("Cache", (), {"attend": lambda self, q, k, v: v})())
    assert asked == [True, False]


def test_causal_attention_runs_blocks_only_for_bf16_while_compiling_and_the_kernel_otherwise(monkeypatch):
    """The CPU policy of transformer.causal_attention: the fp32 kernel in eager mode (fp32 output from bf16 inputs),
    block_causal_attention for bf16 while torch.compile traces, and the kernel again for a mask or fp32 inputs."""
    from transformer import block_causal_attention, causal_attention, sliding_window_mask
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 8, dtype=torch.bfloat16) for _ in range(3))
    eager = causal_attention(q, k, v)
    assert eager.dtype == torch.float32
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    traced = causal_attention(q, k, v)
    assert traced.dtype == torch.bfloat16 and torch.equal(traced, block_causal_attention(q, k, v))
    assert torch.allclose(traced.float(), eager, atol=0.05)  # the same attention, rounded to bf16
    assert causal_attention(q.float(), k.float(), v.float()).dtype == torch.float32
    assert torch.equal(causal_attention(q, k, v, sliding_window_mask(20, 5)),
                       causal_attention(q.float(), k.float(), v.float(), sliding_window_mask(20, 5)))


@pytest.mark.skipif(cpp_compiler() is None, reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.multithreaded
def test_compiled_bf16_model_computes_the_loss_and_gradients_of_the_fp32_model():
    """What a compiled bf16 training step runs on a CPU (block-causal attention, fused norms and RoPE, bf16
    products) against the eager fp32 model: the same loss and gradients, up to bf16 rounding."""
    torch.manual_seed(0)
    model = GPT(tiny_model_config(pos="rope", norm="rmsnorm", ffn="swiglu", n_layer=1, block_size=80))
    idx = torch.randint(0, 65, (2, 80))
    loss = model(idx, idx)[1]
    loss.backward()
    reference = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with autocast(torch.device("cpu"), "bf16"):
        compiled_loss = device.torch_compile(model)(idx, idx)[1]
    compiled_loss.backward()
    assert abs(compiled_loss.item() - loss.item()) < 0.02
    for fp32_grad, p in zip(reference, model.parameters()):
        assert torch.nn.functional.cosine_similarity(fp32_grad.flatten(), p.grad.flatten(), dim=0) > 0.99

@pytest.mark.skipif(cpp_compiler() is None, reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.multithreaded
def test_a_compiled_training_run_repeats_its_loss_curve_exactly_and_follows_eager(tmp_path, small_text):
    """Same seed, same curve, compiled too: without deterministic mode the inductor's parallel atomic adds for the
    embedding's gradient made two identical compiled runs drift apart within thirty steps; and a run of another
    batch size between them (an A/B of batch sizes in one process) would turn torch.compile to one dynamic-shape
    graph for every later shape, whose other kernels changed a seed's curve at the recipe's size; the trainer
    compiles one static graph per shape (the graphs counted: a tiny model's curves agree either way). And the compiled
    step trains the same model as the eager one, dropout on: both draw the same masks (dropout.py), so the curves
    agree to rounding. Deterministic mode, on for a compiled run's steps, is off again when train() returns."""
    import json
    from conftest import tiny_train_config
    from trainer import train
    from torch._dynamo.utils import counters
    torch.use_deterministic_algorithms(False)
    curves, graphs = [], counters["stats"]["unique_graphs"]
    runs = (("a", "on", 8), ("batch 4", "on", 4), ("batch 6", "on", 6), ("b", "on", 8), ("eager", "off", 8))
    for run, compile, batch_size in runs:
        summary = train(tiny_model_config(pos="rope", norm="rmsnorm", ffn="swiglu", dropout=0.1, n_layer=1),
                        tiny_train_config(tmp_path / run, small_text, compile=compile, max_steps=30, eval_interval=30,
                                          batch_size=batch_size), log=lambda *_: None)
        assert summary["compiled"] == (compile == "on") and not torch.are_deterministic_algorithms_enabled()
        curves.append(json.loads((tmp_path / run / "history.json").read_text())["train_loss"])
    assert counters["stats"]["unique_graphs"] - graphs == 3  # batch 8, 4 and 6; run b reused a's
    assert curves[0] == curves[3]
    assert max(abs(a - b) for a, b in zip(curves[0], curves[4])) < 1e-4


@pytest.mark.skipif(cpp_compiler() is None, reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.multithreaded
def test_compiled_model_computes_the_same_loss_and_gradients_as_eager():
    torch.manual_seed(0)
    model = GPT(tiny_model_config(pos="rope", norm="rmsnorm", ffn="swiglu", n_layer=1))
    idx = torch.randint(0, 65, (2, 16))
    loss = model(idx, idx)[1]
    loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled_loss = device.torch_compile(model)(idx, idx)[1]
    compiled_loss.backward()
    assert torch.allclose(loss, compiled_loss, atol=1e-5)
    for eager, p in zip(eager_grads, model.parameters()):
        assert torch.allclose(eager, p.grad, atol=1e-5)


@pytest.mark.skipif(cpp_compiler() is None, reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_a_compiled_training_graph_is_one_the_next_run_can_load_from_the_cache(dtype):
    """torch's AOTAutograd cache keeps a compiled graph's forward and backward for the next process, which then
    skips tracing them (the first step of a warm compiled run took a quarter to a half less time here). It bypasses
    a graph that calls an autograd.Function or enters an autocast region: RMSNorm's closed-form backward and
    attention's fp32 region did that in every compiled step; dropout's custom op does not."""
    from torch._dynamo.utils import counters
    from torch._functorch import config as functorch_config
    if not functorch_config.enable_autograd_cache:
        pytest.skip("this torch does not cache AOTAutograd graphs")
    torch._dynamo.reset()  # a graph compiled by an earlier test in this process would be reused, not compiled
    counters.clear()
    model = GPT(tiny_model_config(pos="rope", norm="rmsnorm", ffn="swiglu", n_layer=1, dropout=0.1))
    idx = torch.randint(0, 65, (2, 16))
    with autocast(torch.device("cpu"), dtype):
        loss = device.torch_compile(model)(idx, idx)[1]
    loss.backward()
    cache = counters["aot_autograd"]
    assert cache["autograd_cache_bypass"] == 0 and cache["autograd_cache_hit"] + cache["autograd_cache_miss"] == 1


@pytest.mark.skipif(cpp_compiler() is None, reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.multithreaded
def test_compiled_int8_decoding_gives_the_tokens_of_eager_int8_decoding():
    """engine "compile": one fixed-shape graph per step (cache wrap-around included, 40 > block 16)."""
    from quantize import quantize_int8
    torch.manual_seed(0)
    model = quantize_int8(GPT(tiny_model_config(pos="rope", norm="rmsnorm", ffn="swiglu", n_layer=1)).eval())
    prompt = torch.randint(0, 65, (1, 3))
    assert torch.equal(generate(model, prompt, 40, temperature=0.0, engine="compile"),
                       generate(model, prompt, 40, temperature=0.0))


def test_decoding_weights_auto_picks_the_fastest_path_of_the_machine(monkeypatch):
    import cdecode
    from engine import choose_weights
    cpu = torch.device("cpu")
    monkeypatch.setattr(cdecode, "find_c_compiler", lambda: "/usr/bin/cc")
    assert choose_weights(cpu).dtype == "int8"  # the C step: a quarter of the bytes per token
    monkeypatch.setattr(cdecode, "find_c_compiler", lambda: None)
    cpu_with(monkeypatch, {"avx512_bf16"}, 0.01)
    assert choose_weights(cpu).dtype == "bf16" and "AVX512_BF16" in choose_weights(cpu).reason
    cpu_with(monkeypatch, {"avx2"}, 0.01)
    assert choose_weights(cpu).dtype == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_weights(torch.device("cuda")).dtype == "bf16"


def test_cpu_threads_follow_a_containers_cpu_quota(tmp_path, monkeypatch, capsys):
    """In a container with a CPU quota (docker --cpus 2, a Kubernetes limit) PyTorch still starts a thread per core
    of the host. The quota is read from the cgroup (v2's cpu.max, v1's cfs files) and caps the threads, rounded up,
    with one line saying so; OMP_NUM_THREADS, where set, decides instead."""
    for name, files, quota in (("v2", {"cpu.max": "150000 100000\n"}, 1.5), ("v2-none", {"cpu.max": "max 100000\n"}, None),
                               ("v1", {"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
                               ("v1-none", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
                               ("absent", {}, None)):
        for path, text in files.items():
            (tmp_path / name / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / path).write_text(text)
        assert device.cgroup_cpu_quota(tmp_path / name) == quota, name
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device, "cgroup_cpu_quota", lambda: 0.5)
    try:
        torch.set_num_threads(2)
        device.pick_device("cpu")
        assert torch.get_num_threads() == 1 and "this container's CPU quota (0.5 CPUs)" in capsys.readouterr().err
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        device.pick_device("cpu")
        assert torch.get_num_threads() == 2 and capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(before)
