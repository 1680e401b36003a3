"""Swap 1: LayerNorm -> RMSNorm in the vanilla GPT (everything else unchanged).

Also times the two norms alone (forward + backward, median of repeats): RMSNorm's claim is that it is
cheaper (no mean subtraction, no bias), so we measure it rather than repeat it.

    python -u experiments/swap1_rmsnorm.py --preset ab-cpu   # 3 seeds, sized for a CPU
    python -u experiments/swap1_rmsnorm.py                   # the reference size, 2000 steps
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

from abtest import run_swap  # noqa: E402
from common import run_cli  # noqa: E402
from device import pick_device  # noqa: E402
from measure import median_seconds  # noqa: E402
from modernize import RMSNorm  # noqa: E402


def time_norms(args, model, tc, seeds, results, repeats: int = 30) -> dict:
    """Median forward+backward time of each norm on one training batch of activations."""
    device = pick_device(args.device)
    x = torch.randn(tc.batch_size * model.block_size, model.n_embd, device=device, requires_grad=True)
    timings = {}
    for label, norm in (("layernorm", torch.nn.LayerNorm(model.n_embd)), ("rmsnorm", RMSNorm(model.n_embd))):
        norm = norm.to(device)
        timings[label] = median_seconds(lambda: norm(x).sum().backward(), repeats, device, warmup=5) * 1e3
    print(f"norm alone, fwd+bwd on {tuple(x.shape)}: LayerNorm {timings['layernorm']:.3f} ms, "
          f"RMSNorm {timings['rmsnorm']:.3f} ms (median of {repeats})")
    return {"norm_timing_ms": {**timings, "shape": list(x.shape), "repeats": repeats}}


def main(argv=None):
    return run_swap("swap1_rmsnorm", "Swap 1: LayerNorm vs RMSNorm",
                    {"vanilla": {}, "rmsnorm": {"norm": "rmsnorm"}}, argv, extra_fn=time_norms)


if __name__ == "__main__":
    run_cli(main)
