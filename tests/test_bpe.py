"""Subword tokenizers: GPT-2's through tiktoken, our own BPE trainer, the corpus cache, bits per character."""
import json
import math

import numpy as np
import pytest

import data
import tokenizer as tk
from bpe import BPETokenizer, reference_encode, train_merges
from conftest import ROOT, TINY_FLAGS, run_main, run_script, tiny_model_config, tiny_train_config
from trainer import train


def test_gpt2_tokenizer_round_trip_and_checkpoint_spec():
    tok = tk.TiktokenTokenizer("gpt2")
    assert tok.vocab_size == 50257
    text = "ROMEO:\nTo be, or not to be"
    assert tok.decode(tok.encode(text)) == text and len(tok.encode(text)) < len(text) / 2
    assert tk.tokenizer_from_dict(tok.to_dict()).encode(text) == tok.encode(text)


def test_corpus_cache_is_written_once_and_reused(tmp_path):
    tok = tk.TiktokenTokenizer("gpt2")
    text = "Now is the winter of our discontent " * 50
    first = data.encode_corpus(tok, text, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.u16"))
    assert len(files) == 1 and np.array_equal(np.fromfile(files[0], dtype=np.uint16), first)
    files[0].write_bytes(np.asarray(first[::-1], dtype=np.uint16).tobytes())  # proves the cache is read back
    assert np.array_equal(data.encode_corpus(tok, text, cache_dir=tmp_path), first[::-1])


class WideVocabTokenizer:
    """A stand-in for a tiktoken encoding with more than 65,536 ids (cl100k_base's 100,277): word i -> id 69,000 + i."""
    kind, name, vocab_size = "tiktoken", "wide", 70_000

    def encode(self, text):
        return [69_000 + len(word) for word in text.split()]

    def to_dict(self):
        return {"type": "tiktoken", "encoding": self.name}


def test_corpus_cache_keeps_ids_beyond_uint16(tmp_path):
    text = "a bb ccc dddd " * 10
    first = data.encode_corpus(WideVocabTokenizer(), text, cache_dir=tmp_path)
    assert first.tolist() == [69_001, 69_002, 69_003, 69_004] * 10  # none wrapped around 65,536
    (cache,) = tmp_path.glob("*.u32")
    cache.write_bytes(np.asarray(first[::-1], dtype=np.uint32).tobytes())  # proves the cache is read back as uint32
    assert np.array_equal(data.encode_corpus(WideVocabTokenizer(), text, cache_dir=tmp_path), first[::-1])


def test_learned_merges_on_a_hand_checkable_corpus():
    # chunks: "aaab" x1 -> pairs (a,a) x2, (a,b) x1; " ab" x2 -> ( ,a) x2, (a,b) x2
    merges = train_merges("aaab ab ab", 259)
    a, b, sp = ord("a"), ord("b"), ord(" ")
    # (a,b) occurs 3 times, more than (a,a) (2) and ( ,a) (2): merged first -> 256
    assert merges[0] == (a, b)
    # now "aa"+"ab" and " "+"ab": (a,a)=1, (a,256)=1, ( ,256)=2 -> ( ,256) next -> 257
    assert merges[1] == (sp, 256)
    # ties between (a,a) and (a,256), both 1: the smaller pair wins deterministically
    assert merges[2] == (a, a)


def test_tiktoken_encoding_matches_our_reference_encoder_on_real_text(shakespeare):
    merges = train_merges(shakespeare[:200_000], 512)
    tok = BPETokenizer(merges)
    sample = shakespeare[500_000:520_000]
    assert tok.encode(sample) == reference_encode(sample, merges)
    assert tok.vocab_size == 512


def test_round_trip_of_arbitrary_unicode_including_split_characters(shakespeare):
    tok = BPETokenizer(train_merges(shakespeare[:100_000], 400))
    text = "Ünïcödé — 日本語 テキスト 🎭🗡️ naïve café \u200b\t\n  ROMEO: ∑∫√"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    raw = b"".join(tok.decode_bytes([i]) for i in ids)  # tokens may cut a character in the middle...
    assert raw == text.encode("utf-8")                  # ...but the bytes are exact
    spec = json.loads(json.dumps(tok.to_dict()))
    assert BPETokenizer.from_dict(spec).encode(text) == ids


def test_bits_per_char_of_a_bpe_run_uses_the_real_character_count(tmp_path, small_text):
    summary = train(tiny_model_config(), tiny_train_config(tmp_path / "run", small_text, max_steps=24, tokenizer="gpt2",
                                                           eval_interval=12), log=lambda *_: None)
    text = small_text.read_text()
    tok = tk.TiktokenTokenizer("gpt2")
    ids = tok.encode(text)
    val = ids[int(0.9 * len(ids)):]
    chars_per_token = len(tok.decode(val)) / len(val)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    for e in history["evals"]:
        assert e["val_bpc"] == pytest.approx(e["val_loss"] / chars_per_token / math.log(2), rel=1e-12)
    assert history["evals"][-1]["val_loss"] < history["evals"][0]["val_loss"] - 0.5  # it learns
    assert summary["vocab_size"] == 50257


@pytest.mark.parametrize("tokenizer", ["gpt2", "bpe:300"])
def test_bpe_checkpoint_generates_through_the_cli(tmp_path, small_text, tokenizer):
    out = tmp_path / "bpe"
    result = run_script(ROOT / "training" / "train_bpe.py", *TINY_FLAGS, "--max-steps", "10", "--eval-interval", "10",
                        "--grad-accum", "2", "--tokenizer", tokenizer, "--data", small_text, "--out-dir", out)
    assert result.returncode == 0, result.stderr
    assert "tokenizer comparison" in result.stdout and "characters per token" in result.stdout
    small_text.unlink()  # generation must need nothing but the checkpoint
    gen = run_script(ROOT / "src" / "generate.py", "--checkpoint", out, "--prompt", "KING", "--tokens", "20",
                     "--seed", "0")
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("KING") and len(gen.stdout) > len("KING") + 10


def test_the_tokenizer_comparison_cuts_a_line_of_the_users_own_text(tmp_path):
    """train_bpe.py prints how both tokenizers cut a line of Shakespeare before training; on a text without its
    characters (Greek here) the char vocabulary could not encode that line, and the run died in a traceback. It
    now cuts the start of the training text."""
    data = tmp_path / "greek.txt"
    data.write_text("ΑΝΤΙΓΟΝΗ:\nὦ κοινὸν αὐτάδελφον Ἰσμήνης κάρα,\n" * 300, encoding="utf-8")
    result = run_main(ROOT / "training" / "train_bpe.py", *TINY_FLAGS, "--max-steps", "2", "--eval-interval", "2",
                      "--tokenizer", "bpe:260", "--data", data, "--out-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "tokenizer comparison for 'ΑΝΤΙΓΟΝΗ:\\nὦ κοινὸν" in result.stdout
