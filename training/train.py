"""Train the vanilla GPT (the reference: 10.8M params, LayerNorm, ReLU FFN, learned positions).

    python -u training/train.py                 # reference config, 5000 steps (GPU recommended)
    python -u training/train.py --preset cpu    # the CPU recipe: stops within 10 minutes (its --max-time)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from cli import training_main  # noqa: E402
from common import run_cli  # noqa: E402


def main(argv=None, record_results=True):
    return training_main(__doc__.strip().splitlines()[0], "vanilla", ("cpu",), argv, record_results=record_results)


if __name__ == "__main__":
    run_cli(main)
