"""The corpus: download with a checksum, read, encode once (cached), split 90/10, and sample batches.

Importing this module reads no file and touches no network: everything happens when a function is called.
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


# ----------------------------------------------------------------------------- the text

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
    """The training text: `path`, or data/input.txt (downloaded on first use when missing). A file saved by a Windows
    editor reads as the same text: a leading byte-order mark is dropped (it marks the encoding; kept, it would be a
    token of the vocabulary and of the samples) and CRLF line ends read as newlines."""
    if path is None or Path(path).resolve() == DEFAULT_DATA.resolve():
        path = DEFAULT_DATA
        if not path.exists():
            download_shakespeare(path)
    if not str(path).strip():
        raise UserError("--data is empty; pass --data with an existing UTF-8 text file")
    path = Path(path)
    if not path.is_file():
        what = ("is a folder, not a file" if path.is_dir() else
                "is not a regular file" if path.exists() else "not found")  # e.g. /dev/null, a pipe
        raise UserError(f"data file {path} {what}; pass --data with an existing UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"data file {path} is not UTF-8 text (bad byte at offset {err.start}); convert it to UTF-8") from None
    except OSError as err:
        raise UserError(f"cannot read data file {path}: {err.strerror or err}") from None


def describe_text(text: str) -> dict:
    """Which text a run trained on, as its records keep it: the sha256 of its UTF-8 bytes (Tiny Shakespeare's is
    DATA_SHA256) and its length in characters. A path says where a file was, not what it held."""
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "chars": len(text)}


def is_tiny_shakespeare(text_record: dict | None) -> bool:
    return bool(text_record) and text_record.get("sha256") == DATA_SHA256


# ----------------------------------------------------------------------------- encoded, split, batched

def encode_corpus(tokenizer, text: str, cache_dir: Path | None = REPO_ROOT / "data") -> np.ndarray:
    """Encode the whole text once. Subword encodings are cached as a file under data/, keyed by the text's
    checksum and the tokenizer, so later runs map it instead of re-encoding: uint16 ids (.u16) where the
    vocabulary fits, as GPT-2's 50,257 does, else uint32 (.u32: cl100k_base, o200k_base)."""
    if tokenizer.kind == "char" or cache_dir is None:
        return np.asarray(tokenizer.encode(text), dtype=np.int64)
    digest = describe_text(text)["sha256"][:16]
    tok_key = hashlib.sha256(repr(sorted(tokenizer.to_dict().items())).encode()).hexdigest()[:8]
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    suffix = "u16" if dtype is np.uint16 else "u32"
    path = Path(cache_dir) / f"corpus-{digest}-{tokenizer.name.replace(':', '')}-{tok_key}.{suffix}"
    if path.exists():
        return np.memmap(path, dtype=dtype, mode="r").astype(np.int64)
    ids = np.asarray(tokenizer.encode(text), dtype=dtype)
    try:
        atomic_write_bytes(path, ids.tobytes())
    except OSError:
        pass  # a read-only data folder only costs the cache
    return ids.astype(np.int64)


def train_val_split(ids: np.ndarray, block_size: int, fraction: float = TRAIN_FRACTION):
    """First 90% for training, last 10% for validation; both must hold at least one full block."""
    n_train = int(fraction * len(ids))
    train, val = torch.from_numpy(np.ascontiguousarray(ids[:n_train])), torch.from_numpy(np.ascontiguousarray(ids[n_train:]))
    split, shortest = min((("train", len(train)), ("validation", len(val))), key=lambda pair: pair[1])
    if shortest <= block_size:
        need = int((block_size + 1) / (1 - fraction)) + 1
        raise UserError(f"data too short: the {split} split has {shortest} tokens, fewer than block_size + 1 = "
                        f"{block_size + 1}; use a text of at least ~{need} tokens or a smaller --block-size")
    return train, val


def validation_ids(tokenizer, text: str, block_size: int) -> torch.Tensor:
    """The validation split of `text` in a trained model's tokens, as training split it, for scripts that score or
    compare a checkpoint. A char tokenizer skips the characters it has never seen (a model of another text);
    a subword one encodes any text."""
    if tokenizer.kind == "char":
        text = "".join(ch for ch in text if ch in tokenizer.stoi)
    return train_val_split(encode_corpus(tokenizer, text), block_size)[1]


def sample_starts(n_tokens: int, block_size: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` random window starts, drawn from a generator the caller owns (so runs are reproducible
    and resumable: saving the generator's state saves the data position)."""
    return torch.randint(n_tokens - block_size, (count,), generator=generator)


def get_batch(data: torch.Tensor, starts: torch.Tensor, block_size: int):
    """Inputs x and next-token targets y for windows starting at `starts` (data may live on the GPU)."""
    offsets = torch.arange(block_size + 1, device=data.device)
    windows = data[starts.to(data.device)[:, None] + offsets]
    return windows[:, :-1], windows[:, 1:]
