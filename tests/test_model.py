"""The architecture: parameter counts, causality, attention equivalence, and the modern components."""
import math

import pytest
import torch

from attention import Head
from checkpoint import parameter_bytes
from conftest import tiny_model_config
from model import GPT, GPTConfig
from model_modern import ModernGPT
from modernize import RMSNorm, RMSNormFunction, RotaryEmbedding, SwiGLU, apply_rotary, swiglu_hidden_size
from transformer import QUERY_BLOCK, MultiHeadAttention, block_causal_attention


@pytest.mark.parametrize("overrides, expected", [
    ({}, 10_763_904),                                   # vanilla reference
    ({"norm": "rmsnorm"}, 10_758_912),
    ({"ffn": "swiglu"}, 10_752_384),
    ({"pos": "rope"}, 10_665_600),
    ({"ffn": "relu2"}, 10_763_904),                     # ReLU^2: same size as ReLU
])
def test_parameter_counts_of_each_swap(overrides, expected):
    assert GPT(GPTConfig(**overrides)).num_params() == expected


def test_the_memory_check_counts_parameters_from_shapes_alone():
    """checkpoint.parameter_bytes builds the model on the meta device, weights and RoPE tables as shapes: the count
    of a real build, and a model of a terabyte (RoPE tables of 17 GB in float64) counted without allocating it."""
    for config in (GPTConfig.named("vanilla"), GPTConfig.named("modern"), tiny_model_config(pos="rope", ffn="swiglu")):
        assert parameter_bytes(config) == 4 * GPT(config).num_params()
    assert parameter_bytes(GPTConfig.named("modern", n_embd=2**16, n_head=1, block_size=2**16)) > 2**40


def test_modern_parameter_counts_and_usage_snippet():
    model = ModernGPT(vocab_size=65, n_embd=384, n_heads=6, n_layer=6, block_size=256, dropout=0.0)
    assert model.num_params() == 10_646_784
    assert ModernGPT(vocab_size=50257, dropout=0.0).num_params() == 29_920_512


def test_weights_are_tied_and_initialised():
    model = GPT(GPTConfig())
    assert model.lm_head.weight is model.tok_emb.weight
    w = model.blocks[0].ffn.up.weight
    assert abs(w.std().item() - 0.02) < 1e-3 and torch.all(model.blocks[0].ffn.up.bias == 0)


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_causality_future_token_does_not_change_past_logits(pos):
    torch.manual_seed(0)
    model = GPT(tiny_model_config(pos=pos)).eval()
    idx = torch.randint(0, 65, (2, 16))
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 65
    a, b = model(idx)[0], model(changed)[0]
    assert torch.allclose(a[:, :9], b[:, :9], atol=0, rtol=0)
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_batched_attention_equals_concatenated_single_heads():
    torch.manual_seed(0)
    n_embd, n_head = 32, 4
    hs = n_embd // n_head
    mha = MultiHeadAttention(n_embd, n_head, dropout=0.0, proj_bias=True).eval()
    heads = [Head(n_embd, hs) for _ in range(n_head)]
    with torch.no_grad():
        wq, wk, wv = mha.qkv.weight.split(n_embd)
        for h, head in enumerate(heads):
            head.query.weight.copy_(wq[h * hs:(h + 1) * hs])
            head.key.weight.copy_(wk[h * hs:(h + 1) * hs])
            head.value.weight.copy_(wv[h * hs:(h + 1) * hs])
    x = torch.randn(3, 10, n_embd)
    expected = mha.proj(torch.cat([head(x) for head in heads], dim=-1))
    assert torch.allclose(mha(x), expected, atol=1e-5)



@pytest.mark.parametrize("length", [1, QUERY_BLOCK - 1, QUERY_BLOCK, 2 * QUERY_BLOCK + 5])
def test_block_causal_attention_equals_pytorch_causal_kernel_and_its_gradients(length):
    """The blocks skipped above the diagonal were all masked: skipping them changes nothing, in value or gradient,
    whether the length fills its last block or not (float64, so only the formula can differ)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, length, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    blocks = block_causal_attention(q, k, v)
    kernel = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(blocks, kernel, atol=1e-12)
    grad = torch.randn_like(kernel)
    for ours, theirs in zip(torch.autograd.grad(blocks, (q, k, v), grad), torch.autograd.grad(kernel, (q, k, v), grad)):
        assert torch.allclose(ours, theirs, atol=1e-12)
    late = k.detach().clone()
    late[:, :, -1] += 1.0  # the last key changes only the last query's output
    changed = (block_causal_attention(q, late, v) - blocks).abs().amax(dim=(0, 1, 3))
    assert torch.all(changed[:-1] == 0) and (length == 1 or changed[-1] > 0)

def test_rmsnorm_matches_its_formula():
    torch.manual_seed(0)
    norm = RMSNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(4, 8) * 3 + 1
    expected = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    assert torch.allclose(norm(x), expected, atol=1e-6)
    assert norm.eps == 1e-6 and not hasattr(norm, "bias")


def test_rmsnorm_hand_written_backward_matches_autograd():
    """The CPU path's closed-form backward (modernize.RMSNormFunction) against torch's numerical gradcheck in
    float64, and against autograd's gradients of F.rms_norm for the same input, weight and upstream gradient."""
    torch.manual_seed(0)
    x = (torch.randn(2, 5, 8, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    weight = torch.linspace(0.5, 2.0, 8, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: RMSNormFunction.apply(a, b, 1e-6), (x, weight))
    grad = torch.randn(2, 5, 8, dtype=torch.float64)
    ours = torch.autograd.grad(RMSNormFunction.apply(x, weight, 1e-6), (x, weight), grad)
    reference = torch.autograd.grad(torch.nn.functional.rms_norm(x, (8,), weight, 1e-6), (x, weight), grad)
    for a, b in zip(ours, reference):
        assert torch.allclose(a, b, atol=1e-12)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in fp32, returned in the input's dtype
        assert RMSNorm(8)(torch.randn(3, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_swiglu_hidden_size_and_formula():
    assert swiglu_hidden_size(384) == 1024
    torch.manual_seed(0)
    ffn = SwiGLU(384).eval()
    assert ffn.gate.weight.shape == (1024, 384) and ffn.gate.bias is None
    x = torch.randn(2, 5, 384)
    expected = ffn.down(torch.nn.functional.silu(ffn.gate(x)) * ffn.up(x))
    assert torch.allclose(ffn(x), expected, atol=1e-6)


def test_rope_scores_depend_only_on_relative_distance_and_preserve_norms():
    torch.manual_seed(0)
    head_dim = 16
    rope = RotaryEmbedding(head_dim, max_positions=64)
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def rotated(vec, pos):
        rope.reserve(pos + 1)
        cos, sin = rope.at(torch.tensor([pos]))
        return apply_rotary(vec.view(1, 1, 1, -1), cos, sin).view(-1)

    for m, n in [(3, 1), (10, 2), (40, 0)]:
        base = rotated(q, m) @ rotated(k, n)
        for offset in (1, 7, 100, 500):  # past the initial table: it grows
            shifted = rotated(q, m + offset) @ rotated(k, n + offset)
            assert torch.allclose(base, shifted, atol=1e-4), (m, n, offset)
        assert torch.allclose(rotated(q, m).norm(), q.norm(), atol=1e-5)
    # the rotation is real: different distances give different scores, and pair 0 turns by 1 radian per step
    assert not torch.allclose(rotated(q, 5) @ rotated(k, 0), rotated(q, 6) @ rotated(k, 0))
    cos, _ = rope.at(torch.tensor([1]))
    assert math.isclose(cos[0, 0].item(), math.cos(1.0), abs_tol=1e-6)


def test_rope_rotates_interleaved_pairs():
    rope = RotaryEmbedding(4, max_positions=8)
    x = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 4)
    cos, sin = rope.at(torch.tensor([1]))
    out = apply_rotary(x, cos, sin).view(-1)
    angle1 = 10000 ** (-2 / 4)
    expected = torch.tensor([math.cos(1), math.sin(1), math.cos(angle1), math.sin(angle1)])
    assert torch.allclose(out, expected, atol=1e-6)


def test_config_round_trips_through_json_and_rejects_nonsense():
    config = GPTConfig(norm="rmsnorm", pos="rope")
    assert GPTConfig.from_dict(__import__("json").loads(config.to_json())) == config
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=100, n_head=6)
    with pytest.raises(ValueError, match="norm"):
        GPTConfig(norm="batchnorm")


def test_named_configs_and_the_architecture_they_name():
    assert GPTConfig.named("vanilla") == GPTConfig() and GPTConfig().architecture == "vanilla"
    modern = GPTConfig.named("modern", n_layer=2)
    assert modern.architecture == "modern" and modern.n_layer == 2 and not modern.attn_proj_bias
    assert GPTConfig(norm="rmsnorm").architecture == "custom(rmsnorm,relu,learned)"
