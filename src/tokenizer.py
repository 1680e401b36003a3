"""Text in, integer ids out: the corpus loader, the tokenizers and the batch sampler.

Two tokenizers share one tiny interface (`encode`, `decode`, `vocab_size`, `to_dict`):
- `CharTokenizer`: one id per distinct character (65 for Tiny Shakespeare). Nothing to learn, tiny
  embedding table, but long sequences.
- `TiktokenTokenizer`: GPT-2's byte-level BPE (50,257 ids) or any other tiktoken encoding: ~3.3x
  fewer tokens per text, but a huge embedding table for a 1 MB corpus.
Every checkpoint stores `tokenizer.to_dict()`, so generation never needs the data file again.
Importing this module reads no file and touches no network.
"""
from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import numpy as np
import torch

from common import REPO_ROOT, UserError, atomic_write_bytes

DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DATA_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DEFAULT_DATA = REPO_ROOT / "data" / "input.txt"
TRAIN_FRACTION = 0.9


# ----------------------------------------------------------------------------- corpus

def download_shakespeare(path: Path = DEFAULT_DATA) -> None:
    """Fetch Tiny Shakespeare, check its sha256, write it atomically. Offline: one clear error."""
    try:
        with urllib.request.urlopen(DATA_URL, timeout=30) as response:
            payload = response.read()
    except OSError as err:
        raise UserError(f"{path} is missing and Tiny Shakespeare could not be downloaded ({err}); "
                        f"put the text file at {path} or pass --data PATH") from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != DATA_SHA256:
        raise UserError(f"downloaded Tiny Shakespeare has sha256 {digest[:12]}..., expected {DATA_SHA256[:12]}...; "
                        f"put the right file at {path}")
    atomic_write_bytes(path, payload)


def load_text(path: str | Path | None = None) -> str:
    """The training text: `path`, or data/input.txt (downloaded on first use when missing)."""
    if path is None or Path(path).resolve() == DEFAULT_DATA.resolve():
        path = DEFAULT_DATA
        if not path.exists():
            download_shakespeare(path)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} not found; pass --data with an existing UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"data file {path} is not UTF-8 text (bad byte at offset {err.start}); convert it to UTF-8") from None


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
    """Rebuild the tokenizer stored in a checkpoint's config.json."""
    kind = spec.get("type")
    if kind == "char":
        return CharTokenizer(spec["chars"])
    if kind == "tiktoken":
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


# ----------------------------------------------------------------------------- encoded data

def encode_corpus(tokenizer, text: str, cache_dir: Path | None = REPO_ROOT / "data") -> np.ndarray:
    """Encode the whole text once. Subword encodings are cached as a uint16 file under data/, keyed by
    the text's checksum and the tokenizer, so later runs map it instead of re-encoding."""
    if tokenizer.kind == "char" or cache_dir is None:
        return np.asarray(tokenizer.encode(text), dtype=np.int64)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    tok_key = hashlib.sha256(repr(sorted(tokenizer.to_dict().items())).encode()).hexdigest()[:8]
    path = Path(cache_dir) / f"corpus-{digest}-{tokenizer.name.replace(':', '')}-{tok_key}.u16"
    if tokenizer.vocab_size > 2**16:
        raise UserError(f"vocabulary of {tokenizer.vocab_size} does not fit the uint16 corpus cache")
    if path.exists():
        return np.memmap(path, dtype=np.uint16, mode="r").astype(np.int64)
    ids = np.asarray(tokenizer.encode(text), dtype=np.uint16)
    try:
        atomic_write_bytes(path, ids.tobytes())
    except OSError:
        pass  # a read-only data folder only costs the cache
    return ids.astype(np.int64)


def train_val_split(ids: np.ndarray, block_size: int, fraction: float = TRAIN_FRACTION):
    """First 90% for training, last 10% for validation; both must hold at least one full block."""
    n_train = int(fraction * len(ids))
    train, val = torch.from_numpy(np.ascontiguousarray(ids[:n_train])), torch.from_numpy(np.ascontiguousarray(ids[n_train:]))
    shortest = min(len(train), len(val))
    if shortest <= block_size:
        need = int((block_size + 1) / (1 - fraction)) + 1
        raise UserError(f"data too short: the {'train' if len(train) <= block_size else 'validation'} split has "
                        f"{shortest} tokens, fewer than block_size + 1 = {block_size + 1}; use a text of at least "
                        f"~{need} tokens or a smaller --block-size")
    return train, val


def sample_starts(n_tokens: int, block_size: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` random window starts, drawn from a generator the caller owns (so runs are reproducible
    and resumable: saving the generator's state saves the data position)."""
    return torch.randint(n_tokens - block_size, (count,), generator=generator)


def get_batch(data: torch.Tensor, starts: torch.Tensor, block_size: int):
    """Inputs x and next-token targets y for windows starting at `starts` (data may live on the GPU)."""
    offsets = torch.arange(block_size + 1, device=data.device)
    windows = data[starts.to(data.device)[:, None] + offsets]
    return windows[:, :-1], windows[:, 1:]
