"""Reading attention out of the model without touching its fast path, and the visualisation script."""
import json
import math

import numpy as np
import pytest
import torch

from attention import record_attention
from checkpoint import save_model_folder
from conftest import (ROOT, assert_user_error, load_script, run_main, run_script, tiny_model_config, tiny_sizes,
                      tiny_train_config)
from model import GPT
from model_modern import ModernGPT, modern_config
from tokenizer import CharTokenizer
from trainer import train

visualize = load_script(ROOT / "experiments" / "visualize.py")


def tiny_modern(**overrides):
    return modern_config(**{**tiny_sizes(), **overrides})


@pytest.mark.parametrize("cls, config", [(GPT, tiny_model_config()), (ModernGPT, tiny_modern())])
def test_recorded_weights_are_causal_distributions_that_reproduce_the_attention_output(cls, config):
    torch.manual_seed(0)
    model = cls(config).eval()
    idx = torch.randint(0, config.vocab_size, (2, config.block_size))
    seen = []
    hooks = [b.attn.register_forward_hook(lambda m, args, out: seen.append((m, args, out))) for b in model.blocks]
    maps = record_attention(model, idx)
    for h in hooks:
        h.remove()
    assert len(maps) == config.n_layer
    for w, (module, args, output) in zip(maps, seen):
        T = idx.size(1)
        assert w.shape == (2, config.n_head, T, T)
        assert torch.all(w.triu(diagonal=1) == 0), "a token attends to the future"
        assert torch.allclose(w.sum(-1), torch.ones(2, config.n_head, T), atol=1e-6)
        _q, _k, v = module.project(args[0], args[1])
        rebuilt = module.proj((w @ v).transpose(1, 2).reshape(2, T, config.n_embd))
        assert torch.allclose(rebuilt, output, atol=1e-5), "the weights do not give the model's own output"
    assert not any(b.attn._forward_hooks for b in model.blocks), "hooks left behind"


def test_head_statistics_on_known_patterns():
    T = 5
    diagonal = torch.eye(T)[None]
    distance, entropy = visualize.head_statistics(diagonal)
    assert distance.item() == 0 and entropy.abs().item() < 1e-9
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    distance, entropy = visualize.head_statistics(uniform[None])
    assert math.isclose(distance.item(), sum(i / 2 for i in range(T)) / T, rel_tol=1e-6)
    assert math.isclose(entropy.item(), sum(math.log(i + 1) for i in range(T)) / T, rel_tol=1e-6)


def test_pca_finds_the_direction_of_largest_variance():
    rng = torch.Generator().manual_seed(0)
    points = torch.randn(200, 5, generator=rng).numpy()
    points[:, 3] *= 10  # most variance along axis 3
    xy, explained = visualize.pca_2d(points)
    assert xy.shape == (200, 2) and explained[0] > 0.8 and explained[0] + explained[1] <= 1
    assert abs(abs(np.corrcoef(xy[:, 0], points[:, 3])[0, 1]) - 1) < 1e-3


def test_visualize_draws_every_figure_from_tiny_checkpoints(tmp_path, small_text):
    for name, config in (("vanilla", tiny_model_config()), ("modern", tiny_modern())):
        train(config, tiny_train_config(tmp_path / "ckpt" / name, small_text, max_steps=4, eval_interval=2),
              log=lambda *_: None)
    result = run_script(ROOT / "experiments" / "visualize.py", "all", "--checkpoints", tmp_path / "ckpt",
                        "--results-dir", tmp_path / "r", "--images-dir", tmp_path / "i")
    assert result.returncode == 0, result.stderr
    images = {p.name for p in (tmp_path / "i").iterdir()}
    assert images == {"attention_vanilla.png", "attention_modern.png", "attention_heads.png", "rope.png",
                      "embeddings.png", "losses.png"}
    attention = json.loads((tmp_path / "r" / "attention.json").read_text())["data"]
    cfg = tiny_model_config()
    assert len(attention["modern"]["heads"]) == cfg.n_layer * cfg.n_head
    assert all(0 <= h["mean_distance"] < cfg.block_size for h in attention["vanilla"]["heads"])
    rope = json.loads((tmp_path / "r" / "rope.json").read_text())["data"]
    assert rope["run"] == "modern" and len(rope["score_by_distance"]) == cfg.n_layer
    assert rope["radians_per_position"][0] == 1.0 and rope["radians_per_position"] == sorted(rope["radians_per_position"], reverse=True)
    losses = json.loads((tmp_path / "r" / "losses.json").read_text())["data"]
    assert [e["step"] for e in losses["modern"]["evals"]] == [0, 2, 4]
    assert "reference: no run at a reference config" in result.stdout  # no results file of one in r/


def test_the_reference_figure_draws_our_runs_at_the_reference_configs_from_their_results_files(tmp_path):
    """Only runs at a training script's default config are drawn, their evaluations as recorded; a run of a preset
    in the same folder is not. Asked for alone with none there, the figure is a one-line error, not an empty plot."""
    empty = run_main(ROOT / "experiments" / "visualize.py", "reference", "--results-dir", tmp_path / "r",
                     "--images-dir", tmp_path / "i")
    assert_user_error(empty, "no run at a reference config", "report.py --show reference")
    assert not (tmp_path / "i").exists()
    reference = json.loads((ROOT / "results" / "train_modern-reference.json").read_text())
    evals = [{"step": s, "train_loss": 2.0 - s / 1e4, "val_loss": 2.1 - s / 2e4, "val_bpc": 3.0, "lr": 3e-4}
             for s in (0, 500, 1000)]
    ours = {**reference, "run": "ours", "evals": evals, "best_step": 1000, "best_val_loss": evals[-1]["val_loss"]}
    preset = {**ours, "run": "preset", "train_config": {**reference["train_config"], "max_steps": 1400}}
    (tmp_path / "r").mkdir()
    for r in (ours, preset):
        (tmp_path / "r" / f"train_{r['run']}.json").write_text(json.dumps(r))
    drawn = run_main(ROOT / "experiments" / "visualize.py", "reference", "--results-dir", tmp_path / "r",
                     "--images-dir", tmp_path / "i")
    assert drawn.returncode == 0, drawn.stderr
    data = json.loads((tmp_path / "r" / "reference.json").read_text())["data"]
    assert data["vanilla"] == [] and [r["run"] for r in data["modern"]] == ["ours"]
    assert data["modern"][0]["evals"] == [{k: e[k] for k in ("step", "train_loss", "val_loss")} for e in evals]
    assert (tmp_path / "i" / "reference.png").stat().st_size > 0


def test_visualize_explains_a_missing_checkpoint(tmp_path):
    result = run_script(ROOT / "experiments" / "visualize.py", "attention", "--checkpoints", tmp_path)
    assert_user_error(result, "no checkpoint", "train")


def test_a_run_asked_for_must_exist_and_a_default_one_missing_is_said(tmp_path):
    """--runs modrn (a typo) beside modern was left out of the figures without a word; without --runs, the default
    runs that do not exist are left out, and a line says so."""
    tokenizer = CharTokenizer.from_text("ROMEO: a tiny text\n")
    model = GPT(tiny_modern(vocab_size=tokenizer.vocab_size))
    save_model_folder(tmp_path / "ckpt" / "modern" / "best", model, tokenizer, {"architecture": "modern"})
    flags = ["--checkpoints", tmp_path / "ckpt", "--prompt", "ROMEO: a tiny", "--results-dir", tmp_path / "r",
             "--images-dir", tmp_path / "i"]
    typo = run_main(ROOT / "experiments" / "visualize.py", "attention", "--runs", "modern", "modrn", *flags)
    assert_user_error(typo, "modrn")
    assert not (tmp_path / "r").exists()
    default = run_main(ROOT / "experiments" / "visualize.py", "attention", *flags)
    assert default.returncode == 0, default.stderr
    assert f"no checkpoint in {tmp_path / 'ckpt' / 'vanilla'}: the figures show modern only" in default.stdout
    assert list(json.loads((tmp_path / "r" / "attention.json").read_text())["data"]) == ["modern"]


def test_characters_the_font_lacks_are_named_once_not_warned_per_glyph(tmp_path, capsys):
    """A model of Chinese text labels its figures with characters matplotlib's default font lacks: matplotlib warned
    for each character in each figure (dozens of warnings for one run's figures). save_figure says it in one line, naming them, and
    lets every other warning through."""
    import warnings

    from plots import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.set_title("字 語 字 a")
    draw = fig.savefig

    def savefig_with_another_warning(*args, **kwargs):
        warnings.warn("some other problem")
        draw(*args, **kwargs)
    fig.savefig = savefig_with_another_warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_figure(fig, tmp_path / "f.png")
    out = capsys.readouterr().out
    assert (tmp_path / "f.png").exists() and [str(w.message) for w in caught] == ["some other problem"]
    assert out.count("\n") == 1 and "f.png: matplotlib's font has no glyph for 2 character(s) (字 語)" in out
