"""Swap 9: weight decay on every weight -> on the matrices only, on ModernGPT at the CPU recipe (`--preset cpu`).

torch's AdamW decays every parameter it is given, and so did our training loop. nanoGPT, litgpt and most LLM code
decay only the 2-D weights (linear layers, the embedding) and leave the RMSNorm gains and the biases alone. At the
CPU recipe's decay of 0.3 the difference could matter: decay pulls every gain toward 0, which switches its feature
off, and the gradient has to push it back up at every step.

    python -u experiments/swap9_decay.py --preset cpu   # 3 seeds per arm at equal steps: six runs of the CPU recipe
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from abtest import AB_PRESETS, run_swap  # noqa: E402
from common import run_cli  # noqa: E402
from model import GPTConfig  # noqa: E402


def main(argv=None):
    # equal steps: without the preset's --max-time, which could stop one arm before its schedule ends
    arms = {"all": {"weight_decay_on": "all", "max_time": 0.0}, "matrices": {"weight_decay_on": "matrices", "max_time": 0.0}}
    return run_swap("swap9_decay", "Swap 9: weight decay on every weight vs on the matrices only", arms, argv,
                    base=GPTConfig.named("modern"), presets=(*AB_PRESETS, "cpu"))


if __name__ == "__main__":
    run_cli(main)
