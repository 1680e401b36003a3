"""The KV cache must compute exactly what the model computes without it (the original project's bugs:
position 0 for every token, no causal mask in prefill, the last prompt token fed twice, no cropping)."""
import pytest
import torch

from conftest import tiny_model_config
from model import GPT, sample_next
from modernize import KVCache


def make_model(pos="rope", **overrides):
    torch.manual_seed(0)
    return GPT(tiny_model_config(pos=pos, **overrides)).eval()


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_cached_step_by_step_logits_equal_full_forward_at_every_position(pos):
    model = make_model(pos)
    idx = torch.randint(0, 65, (2, 16))
    full = model(idx)[0]
    caches = [KVCache(16) for _ in model.blocks]
    pieces = [model(idx[:, :5], caches=caches)[0]]              # multi-token prefill
    pieces += [model(idx[:, t:t + 1], caches=caches)[0] for t in range(5, 16)]
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)
    assert caches[0].length == 16


def test_prefill_is_causal():
    model = make_model()
    idx = torch.randint(0, 65, (1, 12))
    changed = idx.clone()
    changed[0, 8] = (changed[0, 8] + 3) % 65
    out = []
    for seq in (idx, changed):
        caches = [KVCache(16) for _ in model.blocks]
        out.append(model(seq, caches=caches)[0])
    assert torch.equal(out[0][:, :8], out[1][:, :8])


def test_chunked_prefill_on_a_partly_filled_cache_is_causal_and_exact():
    model = make_model()
    idx = torch.randint(0, 65, (1, 14))
    caches = [KVCache(16) for _ in model.blocks]
    a = model(idx[:, :6], caches=caches)[0]
    b = model(idx[:, 6:], caches=caches)[0]
    assert torch.allclose(torch.cat([a, b], 1), model(idx)[0], atol=1e-5)


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_greedy_generation_past_block_size_is_identical_with_and_without_cache(pos):
    model = make_model(pos)
    prompt = torch.randint(0, 65, (2, 5))
    cached = model.generate(prompt, 600, temperature=0.0)
    plain = model.generate(prompt, 600, temperature=0.0, use_cache=False)
    assert cached.shape == (2, 605)
    assert torch.equal(cached, plain)
    assert torch.equal(cached[:, :5], prompt)


def test_generation_with_a_prompt_longer_than_block_size():
    model = make_model()
    prompt = torch.randint(0, 65, (1, 40))
    assert torch.equal(model.generate(prompt, 30, temperature=0.0),
                       model.generate(prompt, 30, temperature=0.0, use_cache=False))


def test_the_sliding_window_cache_equals_sliding_window_attention():
    """Past block_size, each layer attends to the last block_size positions: a full forward with a
    sliding-window mask gives the same logits as the cache at every position."""
    model = make_model()
    idx = torch.randint(0, 65, (1, 50))
    full = model(idx, window=16)[0]
    caches = [KVCache(16) for _ in model.blocks]
    pieces = [model(idx[:, :16], caches=caches)[0]]
    pieces += [model(idx[:, t:t + 1], caches=caches)[0] for t in range(16, 50)]
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)


def test_cache_resets_between_calls_and_sampling_is_seeded():
    model = make_model()
    prompt = torch.randint(0, 65, (1, 4))
    runs = [model.generate(prompt, 40, temperature=1.0, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    uncached = model.generate(prompt, 40, temperature=1.0, generator=torch.Generator().manual_seed(7), use_cache=False)
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


@pytest.mark.parametrize("kwargs", [dict(temperature=-1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)])
def test_generate_rejects_nonsense_sampling_arguments(kwargs):
    with pytest.raises(ValueError):
        make_model().generate(torch.zeros(1, 1, dtype=torch.long), 1, **kwargs)


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_fixed_shape_decoding_step_equals_the_eager_cached_step(pos):
    """The step generate(engine="compile") compiles: the whole cache with a mask of filled slots, a tensor
    position, attention written out. Same logits as the eager step, also once the cache has wrapped."""
    model = make_model(pos)
    steps = 40 if pos == "rope" else 12  # learned positions end at block_size (16)
    idx = torch.randint(0, 65, (2, 4 + steps))
    eager, fixed = [KVCache(16) for _ in model.blocks], model.new_caches(idx.device)
    model(idx[:, :4], caches=eager)
    model(idx[:, :4], caches=fixed)
    model.rope is not None and model.rope.tables(0, 4 + steps)
    for t in range(4, 4 + steps):
        want = model(idx[:, t:t + 1], caches=eager)[0][:, -1]
        got = model._decode(idx[:, t:t + 1], fixed, model._decode_step)
        assert torch.allclose(got, want, atol=1e-5), f"position {t}"
    assert fixed[0].length == eager[0].length == 4 + steps
