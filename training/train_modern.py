"""Train ModernGPT (RMSNorm, SwiGLU, RoPE; 10.6M params), keeping the best checkpoint, with early stopping.

    python -u training/train_modern.py                 # reference config: dropout 0.3, 5000 steps
    python -u training/train_modern.py --preset cpu    # the CPU recipe: stops within 10 minutes (its --max-time)
    python -u training/train_modern.py --preset demo   # what src/generate.py --demo trains: within two minutes
    python -u training/train_modern.py --patience 4    # stop after 4 evaluations without improvement
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from cli import training_main  # noqa: E402
from common import run_cli  # noqa: E402


def main(argv=None, record_results=True):
    return training_main(__doc__.strip().splitlines()[0], "modern", ("cpu", "demo"), argv, record_results=record_results)


if __name__ == "__main__":
    run_cli(main)
