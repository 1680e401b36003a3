"""Swap 6: the cosine schedule -> warmup-stable-decay (WSD), on ModernGPT.

Both warm up linearly over the same steps. Cosine then decays from lr to min_lr over the whole run; WSD holds lr
and falls linearly to zero over the last 20% of the steps (nanochat and modded-nanogpt train this way).

    python -u experiments/swap6_schedule.py --preset ab-cpu   # 3 seeds, sized for a CPU
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from abtest import run_swap  # noqa: E402
from common import run_cli  # noqa: E402
from model import GPTConfig  # noqa: E402

WARMUP = 50


def main(argv=None):
    return run_swap("swap6_schedule", "Swap 6: cosine vs warmup-stable-decay",
                    {"cosine": {"schedule": "cosine", "warmup_steps": WARMUP, "min_lr": 1e-4},
                     "wsd": {"schedule": "wsd", "warmup_steps": WARMUP, "decay_fraction": 0.2}},
                    argv, base=GPTConfig.named("modern"))


if __name__ == "__main__":
    run_cli(main)
