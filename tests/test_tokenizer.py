"""The corpus (data.py: loading, split, batches) and the char tokenizer."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import data
import tokenizer as tk
from common import UserError
from conftest import ROOT


def test_char_tokenizer_round_trip_and_vocab(shakespeare):
    tok = tk.CharTokenizer.from_text(shakespeare)
    assert tok.vocab_size == 65
    sample = shakespeare[:5000]
    assert tok.decode(tok.encode(sample)) == sample
    assert tk.tokenizer_from_dict(tok.to_dict()).encode("ROMEO:") == tok.encode("ROMEO:")


def test_unknown_characters_raise_value_error_naming_them(shakespeare):
    tok = tk.CharTokenizer.from_text(shakespeare)
    with pytest.raises(ValueError, match="'@'"):
        tok.encode("hello @ world")


def test_split_sizes_of_tiny_shakespeare(shakespeare):
    assert len(shakespeare) == 1_115_394
    ids = data.encode_corpus(tk.CharTokenizer.from_text(shakespeare), shakespeare)
    train, val = data.train_val_split(ids, block_size=256)
    assert (len(train), len(val)) == (1_003_854, 111_540)


def test_validation_ids_are_trainings_split_and_skip_characters_a_char_model_never_saw(shakespeare):
    tok = tk.CharTokenizer.from_text(shakespeare)
    expected = data.train_val_split(data.encode_corpus(tok, shakespeare), block_size=256)[1]
    assert torch.equal(data.validation_ids(tok, shakespeare, 256), expected)
    foreign = "@" + shakespeare[:10_000].replace("e", "e€")  # characters outside its vocabulary, anywhere
    assert torch.equal(data.validation_ids(tok, foreign, 64),
                       data.train_val_split(data.encode_corpus(tok, shakespeare[:10_000]), block_size=64)[1])


def test_too_short_data_is_a_user_error():
    with pytest.raises(UserError, match="too short"):
        data.train_val_split(np.arange(100), block_size=64)


def test_get_batch_is_seeded_and_targets_are_shifted_inputs():
    tokens = torch.arange(1000)
    starts_a = data.sample_starts(len(tokens), 8, 4, torch.Generator().manual_seed(1))
    starts_b = data.sample_starts(len(tokens), 8, 4, torch.Generator().manual_seed(1))
    assert torch.equal(starts_a, starts_b)
    x, y = data.get_batch(tokens, starts_a, 8)
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    assert int(starts_a.max()) <= 1000 - 9


def test_load_text_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        data.load_text(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        data.load_text(bad)


def test_a_file_saved_on_windows_reads_as_the_same_text(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    windows = tmp_path / "windows.txt"
    windows.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())  # byte-order mark, CRLF
    assert data.load_text(windows) == text


def test_missing_default_file_offline_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEFAULT_DATA", tmp_path / "input.txt")
    monkeypatch.setattr(data, "DATA_URL", "http://127.0.0.1:9/input.txt")  # nothing listens there
    with pytest.raises(UserError, match="put the text file at"):
        data.load_text(None)
    assert not (tmp_path / "input.txt").exists()


def test_download_checks_the_checksum(tmp_path, monkeypatch):
    source = tmp_path / "fake.txt"
    source.write_text("not shakespeare")
    monkeypatch.setattr(data, "DEFAULT_DATA", tmp_path / "input.txt")
    monkeypatch.setattr(data, "DATA_URL", source.as_uri())
    with pytest.raises(UserError, match="sha256"):
        data.load_text(None)
    assert not (tmp_path / "input.txt").exists()


def test_importing_the_tokenizer_reads_no_file(tmp_path):
    # pathlib first: Python 3.10's pathlib keeps io.open as a class attribute, where a spy would become a method
    code = ("import builtins, io, pathlib, sys; sys.path.insert(0, sys.argv[1]); opened = []\n"
            "real = io.open\n"
            "def spy(f, *a, **k):\n    opened.append(str(f)); return real(f, *a, **k)\n"
            "builtins.open = io.open = spy\n"
            "import tokenizer, data\n"
            "assert not [p for p in opened if 'input.txt' in p or p.endswith('.u16')], opened")
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "src")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_tiny_shakespeare_is_recognised_by_its_content_not_its_path(shakespeare):
    """A model card says Tiny Shakespeare only for the text whose sha256 is the download's checksum: an excerpt,
    or the same text edited, is another text."""
    from data import describe_text, is_tiny_shakespeare
    assert is_tiny_shakespeare(describe_text(shakespeare)) and describe_text(shakespeare)["chars"] == len(shakespeare)
    assert not is_tiny_shakespeare(describe_text(shakespeare[:30_000]))
    assert not is_tiny_shakespeare(describe_text(shakespeare + "\n")) and not is_tiny_shakespeare(None)
