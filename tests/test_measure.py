"""src/measure.py: the timing a benchmark's ratios rest on, and the ceilings they are judged against. The
kernels-alone ceiling must time the very products and update a real training step runs, in its order."""
import itertools

import pytest
import torch

import measure
from conftest import tiny_model_config, tiny_sizes, tiny_train_config
from model import GPT, GPTConfig
from model_modern import modern_config
from trainer import Trainer
from transformer import block_causal_attention


class Products:
    """Records the shapes of the matrix products and optimizer updates PyTorch runs inside it (a TorchDispatchMode:
    what autograd runs too)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        products = self.shapes = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func in (torch.ops.aten.mm.default, torch.ops.aten.bmm.default):
                    products.append((func.__name__, tuple(args[0].shape), tuple(args[1].shape)))
                elif func is torch.ops.aten.addmm.default:  # a product with a bias added: the same product
                    products.append(("mm.default", tuple(args[1].shape), tuple(args[2].shape)))
                elif "adam" in func.__name__:  # an optimizer update: the shapes of the weights it steps
                    products.append((func.__name__, *(tuple(weight.shape) for weight in args[0])))
                return func(*args, **(kwargs or {}))
        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def shapes_of(calls) -> list:
    return [(call.func.__name__ + ".default", tuple(call.args[0].shape), tuple(call.args[1].shape)) for call in calls]


def test_the_kernels_alone_time_the_products_block_causal_attention_runs():
    """block_causal_products: the bmm calls of block_causal_attention's forward, and of its backward, of the same
    shapes (at a length whose last query block is short)."""
    shape = (2, 3, 80, 8)
    q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
    with Products() as forward:
        output = block_causal_attention(q, k, v)
    with Products() as backward:
        output.backward(torch.randn(shape))
    timed_forward, timed_backward = measure.block_causal_products(shape, torch.float32, "cpu")
    assert len(forward.shapes) == 4 and sorted(shapes_of(timed_forward)) == sorted(forward.shapes)
    assert len(backward.shapes) == 8 and sorted(shapes_of(timed_backward)) == sorted(backward.shapes)


@pytest.mark.parametrize("name", ["vanilla", "modern"])
def test_the_kernels_alone_run_the_products_of_a_step_in_its_order(name, monkeypatch):
    """training_products against a real forward and backward of a small model whose attention runs as block-causal
    products (dropout makes an eager CPU step do that): the same matrix products, in the same order (where autograd
    picks the order by its graph, as a set: the bmm calls of each attention, the two products of a linear layer's
    backward)."""
    sizes = tiny_sizes()
    model = GPT(GPTConfig.named(name, **{**sizes, "dropout": 0.1}))
    c, batch = model.config, 2
    tokens = torch.randint(0, c.vocab_size, (batch, c.block_size))
    with Products() as step_forward:
        loss = model(tokens, tokens)[1]
    with Products() as step_backward:
        loss.backward()
    monkeypatch.setattr(measure, "attention_as_products", lambda *_: True)  # as a compiled bf16 step on a CPU
    forward, backward = measure.training_products(model, "fp32", batch, "cpu", compiled=True)

    def grouped(shapes: list, linear_products: int) -> list:
        """Each run of bmm calls as one sorted tuple, each linear layer's products (runs of mm calls, linear_products
        each) as one sorted tuple."""
        groups = []
        for kind, run in itertools.groupby(shapes, key=lambda shape: shape[0]):
            run = list(run)
            size = len(run) if kind == "bmm.default" else linear_products
            groups += [tuple(sorted(run[i:i + size])) for i in range(0, len(run), size)]
        return groups
    assert grouped(shapes_of(forward), 1) == grouped(step_forward.shapes, 1)
    assert grouped(shapes_of(backward), 2) == grouped(step_backward.shapes, 2)
    linear_layers = 2 + len([m for m in model.blocks[0].ffn.modules() if isinstance(m, torch.nn.Linear)])
    products = step_forward.shapes + step_backward.shapes
    assert sum(shape[0] == "mm.default" for shape in products) == 3 * (linear_layers * c.n_layer + 1)


def test_the_kernels_alone_end_with_the_update_a_step_makes(tmp_path, shakespeare):
    """training_kernels: after the products, the optimizer update of the real step (the same kernel, over weights of
    the same shapes), run on a copy of the weights: the model's own are left as they were."""
    data = tmp_path / "small.txt"
    data.write_text(shakespeare[:20_000])
    run = Trainer(modern_config(**tiny_sizes()), tiny_train_config(tmp_path / "out", data, max_steps=1),
                  log=lambda *_: None)

    def updates(recorded: Products) -> list:
        return [call for call in recorded.shapes if "adam" in call[0]]
    with Products() as step:
        run.train_step()
    weights = {name: weight.clone() for name, weight in run.model.state_dict().items()}
    kernels = measure.training_kernels(run.model, "fp32", 2, "cpu")
    with Products() as alone:
        kernels()
    assert len(updates(step)) == 1 and updates(alone) == updates(step)
    assert alone.shapes[-1] == updates(step)[0], "the update comes last, as in the step"
    assert len(updates(step)[0]) - 1 == len(list(run.model.parameters()))
    for name, weight in run.model.state_dict().items():
        assert torch.equal(weight, weights[name]), name


@pytest.mark.parametrize("seconds, expected", [
    ({1024: 0.002, 2048: 0.008}, (2**34 / 0.008 / 1e9, 2048)),  # the larger product faster per FLOP: AMX's bf16
    ({1024: 0.002, 2048: 0.032}, (2**31 / 0.002 / 1e9, 1024)),  # the larger product slower: the smaller sets it
    ({1024: 1.0}, (2**31 / 1.0 / 1e9, 1024)),                   # a slow (emulated) product is not tried larger
])
def test_the_matmul_ceiling_is_the_fastest_of_its_sizes(monkeypatch, seconds, expected):
    monkeypatch.setattr(measure, "dense_matmul", lambda dtype, device, n: (n, 2 * n**3))
    monkeypatch.setattr(measure, "best_seconds", lambda n, device, repeats: seconds[n])  # KeyError if not expected
    assert measure.matmul_ceiling(torch.bfloat16, torch.device("cpu"), 3) == pytest.approx(expected)



def test_head_to_head_rounds_alternate_the_contenders():
    """Each round times every contender once, in turn, so a slow spell of the machine falls on all of them."""
    order = []
    seconds = measure.interleaved_median_seconds({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                                                   rounds=3, device=torch.device("cpu"), warmup=1)
    assert order == ["a", "b"] + ["a", "b"] * 3 and set(seconds) == {"a", "b"}


def test_the_flops_count_matches_a_hand_count():
    """6 FLOPs per matmul weight per trained token, plus attention's 12 * layers * width * context."""
    c = tiny_model_config()
    model = GPT(c)
    per_layer = 3 * c.n_embd * c.n_embd + c.n_embd * c.n_embd + 2 * 4 * c.n_embd * c.n_embd
    expected = 6 * (c.n_layer * per_layer + c.vocab_size * c.n_embd) + 12 * c.n_layer * c.n_embd * c.block_size
    assert measure.flops_per_token(model) == expected


def test_a_ceiling_is_the_fastest_run_after_the_warm_up(monkeypatch):
    """best_seconds on a fake clock: the runs inside the warm-up (the first run, and any in the first fifth of the
    budget) do not count, however fast; then the fastest of the rest, at least min_runs of them, until the budget
    is spent."""
    durations, clock, calls = iter([0.01, 0.01, 0.3, 0.25, 0.4, 0.5, 9.0]), [0.0], []
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock[0])

    def run():
        calls.append(clock[0])
        clock[0] += next(durations)
    assert measure.best_seconds(run, torch.device("cpu"), min_runs=3, budget_s=1.0) == pytest.approx(0.25)
    assert len(calls) == 6, "three timed runs after the warm-up, then the budget (1 s) was spent"
