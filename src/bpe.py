"""A from-scratch byte-level BPE tokenizer trainer, with tiktoken doing the fast encoding.

Training (what GPT-2's tokenizer went through, on our corpus):
1. Pre-split the text with GPT-2's regex (words with their leading space, numbers, punctuation runs,
   whitespace), so merges never cross a word boundary.
2. Count each distinct chunk once, with its frequency: Tiny Shakespeare has ~1M characters but only
   ~25k distinct chunks, so every pass is over chunks, not characters.
3. Repeat: merge the most frequent adjacent pair of ids into a new id. Pair counts are updated
   incrementally (only chunks containing the merged pair change), and a heap finds the next best pair.
   Ties go to the smallest pair, so training is deterministic.

The merges become a `tiktoken.Encoding` (rank = merge order, bytes 0-255 first), so encoding a megabyte
takes milliseconds. `reference_encode` is the slow, obvious encoder the tests check tiktoken against.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

from common import REPO_ROOT, UserError, atomic_write_json

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def split_chunks(text: str, pattern: str = GPT2_PATTERN) -> Counter:
    import regex  # installed with tiktoken; supports \p{L}
    return Counter(m.encode("utf-8") for m in regex.findall(pattern, text))


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of `pair` in ids, left to right, by new_id."""
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def train_merges(text: str, vocab_size: int, pattern: str = GPT2_PATTERN, log=None) -> list[tuple[int, int]]:
    """Learn vocab_size - 256 merges; returns them in order as (left id, right id)."""
    if vocab_size < 256:
        raise UserError(f"a byte-level BPE vocabulary needs at least 256 tokens, got {vocab_size}")
    chunk_counts = split_chunks(text, pattern)
    words = [list(chunk) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> chunks that contain it
    for w, (ids, freq) in enumerate(zip(words, freqs)):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += freq
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges, start = [], time.perf_counter()
    pieces = [bytes([i]) for i in range(256)]
    known = set(pieces)
    n_merges = vocab_size - 256
    while len(merges) < n_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg_count or neg_count == 0:
            continue  # stale heap entry: the count changed since it was pushed
        piece = pieces[pair[0]] + pieces[pair[1]]
        if piece in known:  # same bytes reachable by another split: a token must have one id (tiktoken)
            pair_counts[pair] = 0
            continue
        known.add(piece)
        pieces.append(piece)
        new_id = 256 + len(merges)
        merges.append(pair)
        changed = set()
        for w in list(where[pair]):
            ids, freq = words[w], freqs[w]
            for p in zip(ids, ids[1:]):  # take the chunk's old pairs out...
                pair_counts[p] -= freq
                changed.add(p)
            merged = merge_pair(ids, pair, new_id)
            words[w] = merged
            for p in zip(merged, merged[1:]):  # ...and its new pairs in
                pair_counts[p] += freq
                where[p].add(w)
                changed.add(p)
        del where[pair]
        for p in changed:
            if pair_counts[p] > 0 and p != pair:
                heapq.heappush(heap, (-pair_counts[p], p))
        if log and (len(merges) % 256 == 0 or len(merges) == n_merges):
            log(f"  bpe: {len(merges)}/{n_merges} merges ({time.perf_counter() - start:.1f}s)")
    return merges


def token_bytes(merges: list[tuple[int, int]]) -> list[bytes]:
    vocab = [bytes([i]) for i in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    return vocab


def reference_encode(text: str, merges: list[tuple[int, int]], pattern: str = GPT2_PATTERN) -> list[int]:
    """The slow, obvious encoder: in each chunk, apply the earliest-learned merge present, repeatedly."""
    import regex
    rank = {pair: i for i, pair in enumerate(merges)}
    out = []
    for chunk in regex.findall(pattern, text):
        ids = list(chunk.encode("utf-8"))
        while len(ids) > 1:
            best = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, float("inf")))
            if best not in rank:
                break
            ids = merge_pair(ids, best, 256 + rank[best])
        out.extend(ids)
    return out


class BPETokenizer:
    """Our trained merges behind the tokenizer interface; encoding and decoding run in tiktoken."""

    kind = "bpe"

    def __init__(self, merges: list[tuple[int, int]], pattern: str = GPT2_PATTERN):
        import tiktoken
        self.merges = [tuple(m) for m in merges]
        self.pattern = pattern
        ranks = {piece: i for i, piece in enumerate(token_bytes(self.merges))}
        self.encoding = tiktoken.Encoding(name=f"tinyllm-bpe{len(ranks)}", pat_str=pattern,
                                          mergeable_ranks=ranks, special_tokens={})

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    @property
    def name(self) -> str:
        return f"bpe:{self.vocab_size}"

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode_bytes(self, ids) -> bytes:
        return self.encoding.decode_bytes([int(i) for i in ids])

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"type": "bpe", "pattern": self.pattern, "merges": [list(m) for m in self.merges]}

    @classmethod
    def from_dict(cls, spec: dict) -> "BPETokenizer":
        """From a checkpoint's record; merges are checked (each pair refers to ids that exist before it)."""
        merges, pattern = spec.get("merges"), spec.get("pattern", GPT2_PATTERN)
        ok = isinstance(merges, list) and isinstance(pattern, str) and all(
            isinstance(m, list) and len(m) == 2 and all(type(i) is int and 0 <= i < 256 + n for i in m)
            for n, m in enumerate(merges))
        if not ok:
            raise UserError("the checkpoint's BPE tokenizer is damaged: 'merges' must be pairs of earlier token ids")
        try:
            return cls([tuple(m) for m in merges], pattern)
        except ValueError as err:  # tiktoken: a bad pattern, or merges that repeat a token
            raise UserError(f"the checkpoint's BPE tokenizer is damaged: {err}") from None


def train_bpe_tokenizer(text: str, vocab_size: int, cache_dir: Path | None = REPO_ROOT / "data" / "tokenizers",
                        train_fraction: float = 0.9, log=print) -> BPETokenizer:
    """Train on the training split only (the validation text stays unseen), cached by text and size."""
    train_text = text[:int(train_fraction * len(text))]
    key = hashlib.sha256(train_text.encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"bpe-{vocab_size}-{key}.json" if cache_dir else None
    if path is not None and path.exists():
        return BPETokenizer.from_dict(json.loads(path.read_text()))
    if log:
        log(f"training a {vocab_size}-token byte-level BPE on {len(train_text):,} characters...")
    tokenizer = BPETokenizer(train_merges(train_text, vocab_size, log=log))
    if path is not None:
        try:
            atomic_write_json(path, tokenizer.to_dict())
        except OSError:
            pass
    return tokenizer
