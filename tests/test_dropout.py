"""src/dropout.py: the cheap-bits dropout drops p of the elements, unbiased in every lane of its 64-bit draws,
keeps the expectation, differentiates as the mask, repeats for a seed, and is computed alike when compiled."""
import pytest
import torch

from dropout import LEVELS, Dropout, dropout, random_bits


def test_dropout_drops_p_of_the_elements_in_every_lane_and_keeps_the_expectation():
    torch.manual_seed(0)
    n, p = 1_000_000, 0.2
    y = dropout(torch.ones(n), p)
    scale = LEVELS / (LEVELS - round(p * LEVELS))
    kept = y != 0
    assert torch.equal(y[kept], torch.full_like(y[kept], scale)), "kept elements are scaled by exactly 1 / (1 - p)"
    # four numbers come from each 64-bit draw: each of the four positions must drop p of its elements
    # (a plain int64 random_() never sets the top bit, and the fourth position would drop none)
    per_lane = (~kept).view(-1, 4).float().mean(0)
    assert torch.allclose(per_lane, torch.full((4,), p), atol=5 * (p * (1 - p) / (n / 4)) ** 0.5), per_lane
    assert abs(y.mean().item() - 1.0) < 0.005
    odd = dropout(torch.ones(3, 5, 7), 0.5)  # a size that is not a multiple of four keeps its shape
    assert odd.shape == (3, 5, 7) and 0 < (odd == 0).sum() < odd.numel()


def test_the_random_numbers_cover_the_int16_range_uniformly():
    torch.manual_seed(0)
    bits = random_bits(torch.empty(400_000)).long()
    counts = torch.bincount((bits + 32768) >> 12, minlength=16)  # sixteen equal bins of the 65,536 values
    assert counts.sum() == 400_000 and (counts - 25_000).abs().max() < 5 * 25_000 ** 0.5, counts


def test_the_gradient_is_the_mask_scaled_and_a_seed_repeats_the_mask():
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, 0.3)
    grad = torch.randn_like(y)
    y.backward(grad)
    kept = y != 0
    scale = LEVELS / (LEVELS - round(0.3 * LEVELS))
    assert torch.equal(x.grad, grad * kept * scale) and torch.equal(y, x.detach() * kept * scale)
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.3), y), "the same seed draws the same mask"
    assert not torch.equal(dropout(x, 0.3), y), "the next call draws another"


def test_no_dropout_outside_training_and_a_probability_out_of_range_is_refused():
    x = torch.randn(8, 8)
    layer = Dropout(0.5).eval()
    assert layer(x) is x and dropout(x, 0.0) is x and dropout(x, 0.9, training=False) is x
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            dropout(x, p)


@pytest.mark.multithreaded
def test_a_compiled_dropout_draws_the_bits_of_the_eager_one():
    """The draw is a custom op the compiler calls rather than traces: the same seed gives the same mask compiled."""
    from device import cpp_compiler, torch_compile
    if cpp_compiler() is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    x = torch.randn(4, 16, 32)

    def layer(x):
        return dropout(x * 2, 0.25) + 1

    torch.manual_seed(3)
    eager = layer(x)
    torch.manual_seed(3)
    assert torch.equal(torch_compile(layer)(x), eager)
