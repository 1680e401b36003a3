"""Train ModernGPT on GPT-2 BPE tokens (tiktoken, 50,257-token vocabulary; 29.9M params at the reference size).

    python -u training/train_bpe.py                  # reference: micro-batch 16 x 4 accumulation, lr 1e-4, clip 1.0, 3000 steps
    python -u training/train_bpe.py --preset bpe-cpu # a few minutes on a laptop CPU
    python -u training/train_bpe.py --tokenizer bpe:1024   # our own small BPE vocabulary (src/bpe.py)

Losses with different tokenizers are not comparable (a BPE token carries ~3 characters); the bits per
character logged next to the loss are.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from cli import training_main  # noqa: E402
from common import run_cli  # noqa: E402
from data import load_text  # noqa: E402
from tokenizer import CharTokenizer, build_tokenizer  # noqa: E402

EXAMPLE = "ROMEO:\nTo be, or not to be"


def compare_tokenizers(model_config, train_config) -> list[str]:
    """How the char and the chosen subword tokenizer cut the same line (printed before training starts): a line of
    Shakespeare, or the start of the training text where that has other characters (a user's own text)."""
    text = load_text(train_config.data)
    example = EXAMPLE if set(EXAMPLE) <= set(text) else text[:len(EXAMPLE)]
    char, bpe = CharTokenizer.from_text(text), build_tokenizer(train_config.tokenizer, text)
    char_ids, bpe_ids = char.encode(example), bpe.encode(example)
    return [f"tokenizer comparison for {example!r}:",
            f"  char ({char.vocab_size} symbols): {len(char_ids)} tokens {char_ids}",
            f"  {bpe.name} ({bpe.vocab_size:,} symbols): {len(bpe_ids)} tokens {bpe_ids}",
            f"  pieces: {[bpe.decode([i]) for i in bpe_ids]}",
            f"  compression: {len(char_ids) / len(bpe_ids):.2f} characters per token"]


def main(argv=None, record_results=True):
    return training_main(__doc__.strip().splitlines()[0], "bpe", ("bpe-cpu",), argv,
                         before_training=compare_tokenizers, record_results=record_results)


if __name__ == "__main__":
    run_cli(main)
