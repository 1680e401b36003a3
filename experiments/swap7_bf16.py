"""Swap 7: fp32 -> bf16 autocast for training, on the CPU recipe (`--preset cpu`) — does the faster precision cost
loss? (src/device.py picks bf16 by itself where the CPU runs it natively; this measures what that choice costs.)

    python -u experiments/swap7_bf16.py --preset cpu     # 3 seeds of the CPU recipe per arm, at equal steps
    python -u experiments/swap7_bf16.py --preset cpu --seeds 2 --max-steps 1000 --eval-interval 250   # a shorter check
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from abtest import run_swap  # noqa: E402
from common import run_cli  # noqa: E402
from model import GPTConfig  # noqa: E402


def main(argv=None):
    # equal steps: without the preset's --max-time, which would stop the slower fp32 arm before its schedule ends
    arms = {"fp32": {"dtype": "fp32", "max_time": 0.0}, "bf16": {"dtype": "bf16", "max_time": 0.0}}
    return run_swap("swap7_bf16", "Swap 7: fp32 vs bf16 autocast", arms, argv, base=GPTConfig.named("modern"),
                    presets=("cpu", "ab-cpu"))


if __name__ == "__main__":
    run_cli(main)
