"""Swap 2: the ReLU FFN -> SwiGLU (hidden 2/3 * 4d so the parameter count stays ~equal), plus a third arm,
ReLU^2 (nanochat / modded-nanogpt's choice), at exactly the vanilla parameter count.

    python -u experiments/swap2_swiglu.py --preset ab-cpu
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from abtest import run_swap  # noqa: E402
from common import run_cli  # noqa: E402


def main(argv=None):
    return run_swap("swap2_swiglu", "Swap 2: ReLU vs SwiGLU vs ReLU²",
                    {"vanilla": {}, "swiglu": {"ffn": "swiglu"}, "relu2": {"ffn": "relu2"}}, argv)


if __name__ == "__main__":
    run_cli(main)
