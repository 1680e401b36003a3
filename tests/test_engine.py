"""engine.py: the KV cache must compute exactly what the model computes without it (the original project's bugs:
position 0 for every token, no causal mask in prefill, the last prompt token fed twice, no cropping), every
decoder gives the eager decoder's tokens, and sampling does what its arguments say."""
import pytest
import torch

import engine
from conftest import tiny_model_config
from engine import Cache, CompiledDecoder, EagerDecoder, generate, sample_next
from model import GPT


def make_model(pos="rope", **overrides):
    torch.manual_seed(0)
    return GPT(tiny_model_config(pos=pos, **overrides)).eval()


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_cached_step_by_step_logits_equal_full_forward_at_every_position(pos):
    model = make_model(pos)
    idx = torch.randint(0, 65, (2, 16))
    full = model(idx)[0]
    cache = Cache(model)
    pieces = [model(idx[:, :5], cache=cache)[0]]              # multi-token prefill
    pieces += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(5, 16)]
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)
    assert cache.length == 16


def test_prefill_is_causal():
    model = make_model()
    idx = torch.randint(0, 65, (1, 12))
    changed = idx.clone()
    changed[0, 8] = (changed[0, 8] + 3) % 65
    out = [model(seq, cache=Cache(model))[0] for seq in (idx, changed)]
    assert torch.equal(out[0][:, :8], out[1][:, :8])


def test_chunked_prefill_on_a_partly_filled_cache_is_causal_and_exact():
    model = make_model()
    idx = torch.randint(0, 65, (1, 14))
    cache = Cache(model)
    a = model(idx[:, :6], cache=cache)[0]
    b = model(idx[:, 6:], cache=cache)[0]
    assert torch.allclose(torch.cat([a, b], 1), model(idx)[0], atol=1e-5)


def test_learned_positions_stop_at_block_size_with_or_without_a_cache():
    model = make_model("learned")
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = Cache(model)
    model(torch.zeros(1, 16, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_greedy_generation_past_block_size_is_identical_with_and_without_cache(pos):
    model = make_model(pos)
    prompt = torch.randint(0, 65, (2, 5))
    cached = generate(model, prompt, 600, temperature=0.0)
    plain = generate(model, prompt, 600, temperature=0.0, use_cache=False)
    assert cached.shape == (2, 605)
    assert torch.equal(cached, plain)
    assert torch.equal(cached[:, :5], prompt)


def test_generation_with_a_prompt_longer_than_block_size():
    model = make_model()
    prompt = torch.randint(0, 65, (1, 40))
    assert torch.equal(generate(model, prompt, 30, temperature=0.0),
                       generate(model, prompt, 30, temperature=0.0, use_cache=False))


def test_the_sliding_window_cache_equals_sliding_window_attention():
    """Past block_size, each layer attends to the last block_size positions: the model run without a cache over
    its attention window gives the cache's logits at every position, and full attention does not."""
    model = make_model()
    idx = torch.randint(0, 65, (1, 50))
    windowed = model(idx)[0]
    cache = Cache(model)
    pieces = [model(idx[:, :16], cache=cache)[0]]
    pieces += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(16, 50)]
    assert torch.allclose(torch.cat(pieces, 1), windowed, atol=1e-5)
    model.attention_window = None
    assert not torch.allclose(model(idx)[0][:, 16:], windowed[:, 16:], atol=1e-3)


def test_cache_resets_between_calls_and_sampling_is_seeded():
    model = make_model()
    prompt = torch.randint(0, 65, (1, 4))
    decoder = EagerDecoder(model)
    runs = [generate(model, prompt, 40, temperature=1.0, generator=torch.Generator().manual_seed(7), decoder=decoder)
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    uncached = generate(model, prompt, 40, temperature=1.0, generator=torch.Generator().manual_seed(7), use_cache=False)
    assert torch.equal(runs[0], uncached)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    gen = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, 1.0, top_k=2, generator=gen).item() for _ in range(200)}
    assert draws == {2, 3}
    draws = {sample_next(logits, 1.0, top_k=1000, generator=gen).item() for _ in range(400)}  # clamped to vocab
    assert draws == {0, 1, 2, 3}
    draws = {sample_next(logits, 1.0, top_p=0.5, generator=gen).item() for _ in range(200)}
    assert draws == {3}  # p(3) = 0.64 >= 0.5 on its own
    assert sample_next(logits, 0.0).item() == 3


@pytest.mark.parametrize("temperature", [1e-30, 2e-38, 1e-300, 5e-324])
def test_a_tiny_temperature_samples_the_likeliest_token(temperature):
    """logits / 1e-300 overflow to +-inf, and softmax of +inf is NaN: a tiny temperature is greedy, not a crash."""
    logits = torch.tensor([[0.5, -2.0, 3.0, 2.9], [7.0, -7.0, 1.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    assert sample_next(logits, temperature, generator=gen).flatten().tolist() == [2, 0]
    assert sample_next(logits, temperature, top_k=2, top_p=0.9, generator=gen).flatten().tolist() == [2, 0]


@pytest.mark.parametrize("kwargs", [dict(temperature=-1), dict(temperature=float("nan")), dict(top_k=0),
                                    dict(top_p=0.0), dict(top_p=1.5)])
def test_generate_rejects_nonsense_sampling_arguments(kwargs):
    with pytest.raises(ValueError):
        generate(make_model(), torch.zeros(1, 1, dtype=torch.long), 1, **kwargs)


def test_the_fixed_shape_step_equals_the_eager_cached_step():
    """The step CompiledDecoder compiles (StaticCache: the whole buffer with a mask of filled slots, a tensor
    position, attention written out), run eagerly: the eager step's logits, also once the cache has wrapped."""
    model = make_model()
    idx = torch.randint(0, 65, (2, 44))
    eager = Cache(model)
    model(idx[:, :4], cache=eager)
    fixed_cache = Cache(model)
    model(idx[:, :4], cache=fixed_cache)
    static = engine.StaticCache(fixed_cache)
    model.rope.reserve(44)
    for t in range(4, 44):
        want = model(idx[:, t:t + 1], cache=eager)[0][:, -1]
        got = engine._static_step(model, idx[:, t:t + 1], static)
        static.position += 1
        assert torch.allclose(got, want, atol=1e-5), f"position {t}"


def test_the_compiled_step_refuses_learned_positions():
    with pytest.raises(ValueError, match="RoPE"):
        CompiledDecoder(make_model("learned"))


def test_an_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="engine"):
        engine.make_decoder(make_model(), "warp")
    with pytest.raises(ValueError, match="use_cache"):
        generate(make_model(), torch.zeros(1, 1, dtype=torch.long), 2, engine="compile", use_cache=False)
