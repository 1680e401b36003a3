"""Text in, integer ids out: the tokenizers.

Three tokenizers share one tiny interface (`encode`, `decode`, `vocab_size`, `name`, `to_dict`):
- `CharTokenizer`: one id per distinct character (65 for Tiny Shakespeare). Nothing to learn, tiny
  embedding table, but long sequences.
- `TiktokenTokenizer`: GPT-2's byte-level BPE (50,257 ids) or any other tiktoken encoding: ~3.3x
  fewer tokens per text, but a huge embedding table for a 1 MB corpus.
- `bpe.BPETokenizer`: our own byte-level BPE, trained on the corpus (`--tokenizer bpe:N`).
Every checkpoint stores `tokenizer.to_dict()`, so generation never needs the data file again.
Reading the corpus, splitting and batching it is data.py's job.
"""
from __future__ import annotations

from common import UserError


# ----------------------------------------------------------------------------- tokenizers

class CharTokenizer:
    """Character-level: the vocabulary is the sorted set of characters in the training text."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = "".join(chars)
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def name(self) -> str:
        return "char"

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            shown = "".join(unknown[:20])
            raise ValueError(f"characters not in the vocabulary: {shown!r}; the model knows only: {self.chars!r}")
        return [self.stoi[ch] for ch in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict:
        return {"type": "char", "chars": self.chars}


class TiktokenTokenizer:
    """A tiktoken encoding (GPT-2's by default) behind the same interface as CharTokenizer."""

    kind = "tiktoken"

    def __init__(self, encoding_name: str = "gpt2"):
        import tiktoken  # imported lazily: char-only users never pay for it

        known = tiktoken.list_encoding_names()
        if encoding_name not in known:  # a typo, not a cache problem: say what the names are
            raise UserError(f"unknown tokenizer {encoding_name!r}; choose char, bpe:<vocab_size> (ours, trained on "
                            f"the data) or a tiktoken encoding: {', '.join(known)}")
        try:
            self.encoding = tiktoken.get_encoding(encoding_name)
        except Exception as err:  # tiktoken raises plain Exceptions for network/cache problems
            raise UserError(f"could not load the tiktoken encoding {encoding_name!r} ({err}); "
                            "set TIKTOKEN_CACHE_DIR to a cache that has it, or go online once") from None
        self.encoding_name = encoding_name

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    @property
    def name(self) -> str:
        return self.encoding_name

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.encoding.decode([int(i) for i in ids])

    def pieces(self, ids) -> list[str]:
        return [self.encoding.decode_single_token_bytes(int(i)).decode("utf-8", "replace") for i in ids]

    def to_dict(self) -> dict:
        return {"type": "tiktoken", "encoding": self.encoding_name}


def tokenizer_from_dict(spec: dict):
    """Rebuild the tokenizer stored in a checkpoint's config.json (every field checked: it may be hand-edited)."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "char":
        chars = spec.get("chars")
        if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars):
            raise UserError("the checkpoint's char tokenizer is damaged: 'chars' must be a string of distinct characters")
        return CharTokenizer(chars)
    if kind == "tiktoken":
        if not isinstance(spec.get("encoding"), str):
            raise UserError("the checkpoint's tiktoken tokenizer is damaged: 'encoding' must be a name")
        return TiktokenTokenizer(spec["encoding"])
    if kind == "bpe":
        from bpe import BPETokenizer
        return BPETokenizer.from_dict(spec)
    raise UserError(f"unknown tokenizer type {kind!r} in checkpoint")


def bpe_vocab_size(name: str) -> int | None:
    """The N of `bpe:N` (None for other names); a clear error for a malformed one."""
    if not name.startswith("bpe:"):
        return None
    try:
        vocab_size = int(name.split(":", 1)[1])
    except ValueError:
        raise UserError(f"--tokenizer {name!r}: the vocabulary size after 'bpe:' must be an integer") from None
    if vocab_size < 256:
        raise UserError(f"--tokenizer {name!r}: a byte-level BPE needs at least 256 tokens (one per byte)")
    return vocab_size


def build_tokenizer(name: str, text: str):
    """`--tokenizer char|gpt2|bpe:<vocab_size>` -> a tokenizer (trained on `text` where needed)."""
    if name == "char":
        return CharTokenizer.from_text(text)
    vocab_size = bpe_vocab_size(name)
    if vocab_size is not None:
        from bpe import train_bpe_tokenizer
        return train_bpe_tokenizer(text, vocab_size)
    return TiktokenTokenizer(name)
