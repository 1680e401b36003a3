"""Swap 3: learned position embeddings -> RoPE.

Also tests the claim that RoPE generalises past the training length: the RoPE model's val loss on
windows of 2 x block_size, (a) with sliding-window attention (what the KV cache does: each layer sees
block_size tokens back) and (b) with full attention over all 2 x block_size tokens, next to its loss at
block_size. The learned-position model cannot run past block_size at all.

    python -u experiments/swap3_rope.py --preset ab-cpu
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

from abtest import mean_std, plus_minus, run_swap  # noqa: E402
from checkpoint import load_model  # noqa: E402
from common import run_cli  # noqa: E402
from device import pick_device  # noqa: E402
from data import encode_corpus, get_batch, load_text, sample_starts, train_val_split  # noqa: E402


@torch.no_grad()
def long_context_loss(model, val: torch.Tensor, length: int, window, iters: int, batch: int) -> float:
    """Val loss on windows of `length` tokens, each token attending at most `window` back (None: all of them)."""
    generator = torch.Generator().manual_seed(1234)
    total = 0.0
    model.attention_window = window
    for _ in range(iters):
        x, y = get_batch(val, sample_starts(len(val), length, batch, generator), length)
        total += model(x, y)[1].item()
    model.attention_window = model.config.block_size
    return total / iters


def length_generalisation(args, model_config, tc, seeds, results) -> dict:
    device = pick_device(args.device)
    block = model_config.block_size
    rows = {"at_block_size": [], "2x_sliding_window": [], "2x_full_attention": []}
    for seed in range(seeds):
        model, record = load_model(Path(args.runs_dir) / "swap3_rope" / "rope" / f"seed{seed}" / "best", device=device)
        ids = encode_corpus(model.tokenizer, load_text(args.data))
        val = train_val_split(ids, 2 * block)[1].to(device)
        kw = dict(iters=tc.eval_iters, batch=max(1, tc.batch_size // 2))
        rows["at_block_size"].append(long_context_loss(model, val, block, None, **kw))
        rows["2x_sliding_window"].append(long_context_loss(model, val, 2 * block, block, **kw))
        rows["2x_full_attention"].append(long_context_loss(model, val, 2 * block, None, **kw))
    summary = {k: mean_std(v) for k, v in rows.items()}
    print(f"RoPE val loss by context length (block_size {block}): " +
          ", ".join(f"{k} {plus_minus(v, seeds)}" for k, v in summary.items()))
    return {"length_generalisation": {"block_size": block, **summary}}


def main(argv=None):
    return run_swap("swap3_rope", "Swap 3: learned positions vs RoPE",
                    {"vanilla": {}, "rope": {"pos": "rope"}}, argv, extra_fn=length_generalisation)


if __name__ == "__main__":
    run_cli(main)
