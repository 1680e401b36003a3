"""Swap 8: the whole modernisation at once, vanilla GPT -> ModernGPT (RMSNorm + SwiGLU + RoPE, no attention
output bias), at the CPU recipe's own size (`--preset cpu`): do the three swaps, each measured alone at the smaller
ab-cpu size (swaps 1-3), still pay together at the size our CPU models are trained at?

    python -u experiments/swap8_modern.py --preset cpu   # 3 seeds per arm at equal steps: six runs of the CPU recipe
    python -u experiments/swap8_modern.py                # the reference size, 2000 steps (a GPU)

The README's run table has one seed of each model at this preset; this measures the gap against the spread
over seeds. Both arms train what `--dtype auto` and `--compile auto` pick here, as the training scripts do.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from abtest import AB_PRESETS, run_swap  # noqa: E402
from common import run_cli  # noqa: E402
from model import CONFIGS  # noqa: E402


def main(argv=None):
    # equal steps: without the preset's --max-time, which would stop a slower arm before its schedule ends
    arms = {"vanilla": {**CONFIGS["vanilla"], "max_time": 0.0}, "modern": {**CONFIGS["modern"], "max_time": 0.0}}
    return run_swap("swap8_modern", "Swap 8: vanilla GPT vs ModernGPT", arms, argv, presets=(*AB_PRESETS, "cpu"))


if __name__ == "__main__":
    run_cli(main)
