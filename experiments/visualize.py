"""Seeing inside the trained models: attention maps, RoPE rotations, character embeddings, loss curves.

    python experiments/visualize.py all                   # every figure, from checkpoints/vanilla and /modern
    python experiments/visualize.py attention --prompt "JULIET:\nO Romeo, Romeo!"
    python experiments/visualize.py rope                  # or embeddings, losses: one figure
    python experiments/visualize.py reference             # our runs at the original's configs, from results/

Each figure goes to images/<name>.png and the numbers behind it to results/<name>.json. Any checkpoint
works (char or BPE): --runs names folders under --checkpoints. "reference" reads the training runs' results files
in --results-dir instead (train_*.json at the training scripts' default configs), and "all" leaves it out while
there is none.
"""
from __future__ import annotations

import math
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from attention import record_attention  # noqa: E402
from checkpoint import holds_checkpoint, load_model  # noqa: E402
from common import (REPO_ROOT, ArgumentParser, UserError, atomic_write_json,  # noqa: E402
                    add_output_folders, read_json, repo_relative, run_cli)
from device import describe_hardware, pick_device  # noqa: E402
from docs import ORIGINAL, measured_on, reference_runs  # noqa: E402
from plots import pyplot, save_figure  # noqa: E402

PROMPT = "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east"
FIGURES = ["attention", "rope", "embeddings", "losses", "reference"]
FROM_RECORDS = {"losses", "reference"}  # drawn from run histories and results files: no model to load
DEFAULT_RUNS = ("vanilla", "modern")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("figure", choices=[*FIGURES, "all"], help="which figure to draw")
    p.add_argument("--runs", nargs="+", default=None,
                   help=f"run folders under --checkpoints (default: {' '.join(DEFAULT_RUNS)}, those that exist)")
    p.add_argument("--checkpoints", default=str(REPO_ROOT / "checkpoints"), help="the folder of the run folders")
    p.add_argument("--prompt", default=PROMPT, help="text whose attention is drawn (cut to the context length)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | mps")
    add_output_folders(p)
    return p


def stamp() -> str:
    """Where and when a figure was computed, for its title."""
    return f"{describe_hardware(torch.device('cpu'))}, {datetime.now(timezone.utc).date().isoformat()}"


def load_runs(args) -> dict:
    """name -> (model, record) for each run of --runs, every one of which must load (a mistyped name is an error,
    not a figure left out); without --runs, those of DEFAULT_RUNS that exist, the others named in a line."""
    names, runs = args.runs or DEFAULT_RUNS, {}
    for name in names:
        folder = Path(args.checkpoints) / name
        if args.runs or holds_checkpoint(folder):
            runs[name] = load_model(folder, device=pick_device(args.device))
    if not runs:
        raise UserError(f"no checkpoint in {', '.join(str(Path(args.checkpoints) / n) for n in names)}; "
                        "train one first, e.g. python -u training/train_modern.py --preset cpu")
    left_out = [name for name in names if name not in runs]
    if left_out:
        print(f"no checkpoint in {', '.join(str(Path(args.checkpoints) / n) for n in left_out)}: the figures show "
              f"{', '.join(runs)} only")
    return runs


def encode(model, text: str) -> list[int]:
    try:
        ids = model.tokenizer.encode(text)
    except (KeyError, ValueError) as err:
        raise UserError(f"--prompt: {err}; pass a --prompt of text like the model's training text") from None
    if len(ids) < 2:
        raise UserError("--prompt needs at least two tokens")
    return ids


def token_labels(model, ids: list[int]) -> list[str]:
    return [repr(model.tokenizer.decode([i]))[1:-1].replace("\\n", "⏎") or "·" for i in ids]


# ----------------------------------------------------------------------------- attention

def head_statistics(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head (H,): mean distance looked back (tokens) and mean entropy of a row (nats), over positions.
    A low distance with low entropy is a local head (previous character, this word); a high distance
    is a long-range head (the speaker's name, the start of the line)."""
    T = weights.size(-1)
    distance = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).clamp(min=0).float()
    mean_distance = (weights * distance).sum(-1).mean(-1)
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1).mean(-1)
    return mean_distance, entropy


def draw_attention(args, runs: dict) -> dict:
    plt, out = pyplot(), {}
    for name, (model, _record) in runs.items():
        ids = encode(model, args.prompt)[:model.config.block_size]
        maps = record_attention(model, torch.tensor([ids], device=next(model.parameters()).device))
        labels = token_labels(model, ids)
        L, H = len(maps), maps[0].size(1)
        fig, axes = plt.subplots(L, H, figsize=(2.3 * H, 2.3 * L), squeeze=False)
        stats = []
        for layer, w in enumerate(maps):
            w = w[0].cpu()
            distance, entropy = head_statistics(w)
            for head in range(H):
                ax = axes[layer][head]
                ax.imshow(w[head].numpy(), cmap="viridis", vmin=0, vmax=min(1.0, float(w[head].max())))
                ax.set_title(f"L{layer} H{head}: {distance[head]:.1f} back", fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
                stats.append({"layer": layer, "head": head, "mean_distance": round(float(distance[head]), 3),
                              "entropy": round(float(entropy[head]), 3)})
        for ax in axes[-1]:  # tokens along the bottom row (keys), every other one to stay legible
            ax.set_xticks(range(0, len(labels), 2), labels[::2], fontsize=4, rotation=90)
        for row in axes:
            row[0].set_yticks(range(0, len(labels), 2), labels[::2], fontsize=4)
        fig.suptitle(f"attention of checkpoints/{name} ({model.num_params():,} params, {stamp()})\nrows = query "
                     "token, columns = key token; panel title = mean distance looked back", fontsize=9)
        save_figure(fig, Path(args.images_dir) / f"attention_{name}.png")
        out[name] = {"prompt": args.prompt, "tokens": labels, "heads": stats}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, data in out.items():
        ax.scatter([h["mean_distance"] for h in data["heads"]], [h["entropy"] for h in data["heads"]],
                   label=name, s=[20 + 10 * h["layer"] for h in data["heads"]], alpha=0.7)
    ax.set_xlabel("mean distance looked back (tokens)")
    ax.set_ylabel("mean attention entropy (nats)")
    ax.set_title(f"every head of every layer (marker size = layer): local vs long-range heads\n{stamp()}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, Path(args.images_dir) / "attention_heads.png")
    return out


# ----------------------------------------------------------------------------- RoPE

def score_by_distance(model, ids: torch.Tensor) -> list[list[float]]:
    """Per layer: the mean pre-softmax score q_i . k_j / sqrt(d) for each distance i - j, over heads and
    positions of a real text. In a RoPE model this profile is all the position information attention has."""
    per_layer = [s[0].mean(0) for s in record_attention(model, ids, scores=True)]
    return [[float(torch.diagonal(s, offset=-d).mean()) for d in range(ids.size(1))] for s in per_layer]


def draw_rope(args, runs: dict) -> dict:
    plt = pyplot()
    rope_runs = {n: mr for n, mr in runs.items() if mr[0].rope is not None}
    if not rope_runs:
        raise UserError(f"none of {', '.join(runs)} uses RoPE; pass --runs with a modern checkpoint")
    name, (model, _record) = next(iter(rope_runs.items()))
    inv_freq = model.rope.inv_freq.float()
    positions = torch.arange(model.config.block_size)
    angles = torch.outer(positions.double(), inv_freq.double())
    device = next(model.parameters()).device
    text_ids = encode(model, args.prompt * 4)[:model.config.block_size]
    profile = score_by_distance(model, torch.tensor([text_ids], device=device))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    image = left.imshow(torch.cos(angles).T.numpy(), aspect="auto", cmap="coolwarm", vmin=-1, vmax=1)
    left.set_xlabel("position m")
    left.set_ylabel("dimension pair i (fast → slow)")
    left.set_title(f"cos(m·θ_i), θ_i = {model.config.rope_theta:g}^(-2i/{2 * len(inv_freq)}): early pairs turn "
                   "fast (local), late pairs slowly (long range)", fontsize=8)
    fig.colorbar(image, ax=left)
    for layer, scores in enumerate(profile):
        right.plot(range(len(scores)), scores, label=f"layer {layer}")
    right.set_xlabel("relative distance i − j (tokens)")
    right.set_ylabel("mean q·k / √d")
    right.set_title(f"checkpoints/{name}: attention score vs distance on real text\n{stamp()}", fontsize=8)
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    save_figure(fig, Path(args.images_dir) / "rope.png")
    return {"run": name, "theta": model.config.rope_theta, "head_dim": 2 * len(inv_freq),
            "radians_per_position": [float(f) for f in inv_freq],
            "period_in_positions": [float(2 * math.pi / f) for f in inv_freq], "score_by_distance": profile}


# ----------------------------------------------------------------------------- embeddings

def character_class(ch: str) -> str:
    if ch.isspace():
        return "whitespace"
    if ch.lower() in "aeiou":
        return "vowel (upper)" if ch.isupper() else "vowel"
    if ch.isalpha():
        return "consonant (upper)" if ch.isupper() else "consonant"
    return "digit / punctuation"


def pca_2d(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection on the two directions of largest variance (SVD of the centred matrix), and the
    fraction of the variance each explains."""
    centred = matrix - matrix.mean(0)
    _u, s, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, (s[:2] ** 2) / (s ** 2).sum()


def case_pairs_nearest(chars: list[str], matrix: np.ndarray) -> float:
    """Share of letters whose nearest other embedding (cosine) is the same letter in the other case."""
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    index = {c: i for i, c in enumerate(chars)}
    letters = [c for c in chars if c.isalpha() and c.swapcase() in index]
    hits = sum(chars[int(sim[index[c]].argmax())] == c.swapcase() for c in letters)
    return hits / len(letters) if letters else float("nan")


def draw_embeddings(args, runs: dict) -> dict:
    plt, out = pyplot(), {}
    char_runs = {n: mr for n, mr in runs.items() if mr[0].tokenizer.kind == "char"}
    if not char_runs:
        raise UserError("the embedding figure labels characters: pass --runs with a char-tokenizer checkpoint")
    fig, axes = plt.subplots(1, len(char_runs), figsize=(6.5 * len(char_runs), 6), squeeze=False)
    for ax, (name, (model, _record)) in zip(axes[0], char_runs.items()):
        chars = [model.tokenizer.decode([i]) for i in range(model.config.vocab_size)]
        matrix = model.tok_emb.weight.detach().float().cpu().numpy()
        xy, explained = pca_2d(matrix)
        classes = [character_class(c) for c in chars]
        for cls in sorted(set(classes)):
            pts = np.array([p for p, k in zip(xy, classes) if k == cls])
            ax.scatter(pts[:, 0], pts[:, 1], label=cls, s=18)
        for (x, y), c in zip(xy, chars):
            ax.annotate(repr(c)[1:-1] if c.isspace() else c, (x, y), fontsize=8, xytext=(2, 2), textcoords="offset points")
        same_case = case_pairs_nearest(chars, matrix)
        ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
        ax.set_title(f"checkpoints/{name}: {len(chars)} character embeddings, PCA\n"
                     f"nearest neighbour is the other case for {same_case:.0%} of letters\n{stamp()}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        out[name] = {"explained_variance": [float(e) for e in explained], "case_pair_nearest": same_case,
                     "points": {c: [float(x), float(y)] for c, (x, y) in zip(chars, xy)}}
    save_figure(fig, Path(args.images_dir) / "embeddings.png")
    return out


# ----------------------------------------------------------------------------- loss curves

def draw_losses(args, _runs=None) -> dict:
    """Every top-level run in checkpoints/: char runs' train/val loss, and every run's val bits/char."""
    plt, out = pyplot(), {}
    for history_path in sorted(Path(args.checkpoints).glob("*/history.json")):
        run = history_path.parent
        summary = read_json(run / "summary.json") if (run / "summary.json").exists() else {}
        evals = read_json(history_path)["evals"]
        out[run.name] = {"tokenizer": summary.get("tokenizer", "char"), "params": summary.get("params"),
                         "evals": [{k: e[k] for k in ("step", "train_loss", "val_loss", "val_bpc")} for e in evals]}
    if not out:
        raise UserError(f"no run with a history.json in {args.checkpoints}; train one first")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, run) in enumerate(out.items()):
        steps, color = [e["step"] for e in run["evals"]][1:], f"C{i}"  # one colour per run in both panels
        if run["tokenizer"] == "char":
            left.plot(steps, [e["val_loss"] for e in run["evals"]][1:], marker="o", color=color, label=f"{name} val")
            left.plot(steps, [e["train_loss"] for e in run["evals"]][1:], linestyle="--", color=color,
                      label=f"{name} train")
        right.plot(steps, [e["val_bpc"] for e in run["evals"]][1:], marker="o", color=color,
                   label=f"{name} ({run['tokenizer']})")
    left.set_xlabel("step")
    left.set_ylabel("loss (nats/char)")
    left.set_title("char-level runs: train (dashed) and validation loss", fontsize=9)
    right.set_xlabel("step")
    right.set_ylabel("validation bits per character")
    right.set_title(f"every run in {Path(args.checkpoints).name}/, on the tokenizer-independent axis\n{stamp()}",
                    fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, Path(args.images_dir) / "losses.png")
    return out


def draw_reference(args, _runs=None) -> dict | None:
    """Our runs at the original project's two configs (results/train_*.json in --results-dir, as the reference
    table finds them): train and val loss at every evaluation, one panel per config, beside the original's quoted
    best val loss and its step. Where val loss turns up while train loss keeps falling, the run overfits. With no
    such run, "all" skips it (None) and the figure asked for alone is an error."""
    results = Path(args.results_dir)
    runs = {architecture: reference_runs(architecture, results) for architecture in ORIGINAL}
    if not any(runs.values()) and args.figure == "all":
        print(f"reference: no run at a reference config in {results} yet; not drawn")
        return None
    if not any(runs.values()):
        raise UserError(f"no run at a reference config in {results}; `python experiments/report.py --show reference` "
                        "says how to make one")
    plt = pyplot()
    fig, panels = plt.subplots(1, len(ORIGINAL), figsize=(12, 4.8), sharex=True, sharey=True)
    for ax, (architecture, (params, loss, step)) in zip(panels, ORIGINAL.items()):
        for i, r in enumerate(runs[architecture]):
            evals = r["evals"][1:]  # step 0's loss of ~4.2 would flatten the curves
            steps = [e["step"] for e in evals]
            ax.plot(steps, [e["val_loss"] for e in evals], marker="o", color=f"C{i}", label=f"{r['run']}: val")
            ax.plot(steps, [e["train_loss"] for e in evals], linestyle="--", color=f"C{i}", label=f"{r['run']}: train")
            ax.plot([r["best_step"]], [r["best_val_loss"]], marker="*", markersize=14, color=f"C{i}")
        ax.axhline(loss, color="gray", linestyle=":")
        ax.plot([step], [loss], marker="*", markersize=14, color="gray",
                label=f"the original's best val: {loss:.4f}, step {step} (quoted, T4)")
        where = "\n".join(textwrap.fill(f"{r['run']}: {measured_on(r)}", 100) for r in runs[architecture])
        where = where or "no run of ours yet"
        ax.set_title(f"{architecture}, {params:,} params\n{where}", fontsize=7)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    panels[0].set_ylabel("loss (nats/char)")
    fig.suptitle("the reference configs: our runs' curves (★ best val) beside the original's best", fontsize=10)
    save_figure(fig, Path(args.images_dir) / "reference.png")
    return {architecture: [{"run": r["run"], "measured_on": measured_on(r), "best_step": r["best_step"],
                            "best_val_loss": r["best_val_loss"],
                            "evals": [{k: e[k] for k in ("step", "train_loss", "val_loss")} for e in r["evals"]]}
                           for r in found] for architecture, found in runs.items()}


DRAW = {"attention": draw_attention, "rope": draw_rope, "embeddings": draw_embeddings, "losses": draw_losses,
        "reference": draw_reference}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    names = FIGURES if args.figure == "all" else [args.figure]
    runs = load_runs(args) if set(names) - FROM_RECORDS else {}
    written = {}
    for name in names:
        data = DRAW[name](args, runs)
        if data is None:  # "all" with nothing to draw for this figure yet: said by the figure
            continue
        record = {"figure": name, "date": datetime.now(timezone.utc).date().isoformat(),
                  "hardware": describe_hardware(pick_device(args.device)), "checkpoints": repo_relative(args.checkpoints),
                  "data": data}
        atomic_write_json(Path(args.results_dir) / f"{name}.json", record)
        written[name] = record
        print(f"{name}: figure(s) in {args.images_dir}, numbers in {Path(args.results_dir) / f'{name}.json'}")
    return written


if __name__ == "__main__":
    run_cli(main)
