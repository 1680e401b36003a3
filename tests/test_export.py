"""Export to transformers and GGUF: the exported model computes our function, checked by code we did not write
(transformers' AutoModelForCausalLM and AutoTokenizer, gguf's reader, llama.cpp where it is installed)."""
import json
import re

import numpy as np
import pytest
import torch

from checkpoint import load_model
from common import UserError
from conftest import ROOT, assert_user_error, load_script, run_main, run_script, tiny_sizes, tiny_train_config
from engine import generate
from trainer import train

transformers = pytest.importorskip("transformers")
EXPORT = ROOT / "src" / "export.py"
TEXT = "ROMEO:\nWhat light through yonder window breaks? It is the east, and Juliet is the sun!\n\nJULIET:\nAy me."


def tiny(architecture: str, **overrides):
    sizes = tiny_sizes()
    from model import GPTConfig
    return GPTConfig.named(architecture, **{**sizes, "n_embd": 64, **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shakespeare):
    """Tiny trained runs: modern (char), vanilla (char), modern with our own BPE, and their transformers exports."""
    root = tmp_path_factory.mktemp("export")
    data = root / "small.txt"
    data.write_text(shakespeare[:30_000])
    out = {}
    for name, config, tokenizer in (("modern", tiny("modern"), "char"), ("vanilla", tiny("vanilla"), "char"),
                                    ("bpe", tiny("modern"), "bpe:300")):
        train(config, tiny_train_config(root / name, data, max_steps=20, tokenizer=tokenizer), log=lambda *_: None)
        result = run_main(EXPORT, root / name, "--to", "hf", "--out", root / f"{name}-hf")
        assert result.returncode == 0, result.stderr
        out[name] = (root / name, root / f"{name}-hf")
    return out


def test_the_readmes_python_snippets_run_as_written(runs):
    """The README's two Python blocks, with its example folder and Hub id pointing at a tiny modern export: the
    transformers one (no code of ours) continues its prompt, and ModernGPT.from_pretrained loads the same folder."""
    _, exported = runs["modern"]
    readme = (ROOT / "README.md").read_text()
    snippets = [s.replace("exports/modern-hf", str(exported)).replace("you/tinyllm-shakespeare", str(exported))
                for s in re.findall(r"```python\n(.*?)```", readme, re.S)]
    assert len(snippets) == 2 and "AutoModelForCausalLM" in snippets[0] and "ModernGPT" in snippets[1]
    transformers_run = run_script("-c", snippets[0], cwd=ROOT)
    assert transformers_run.returncode == 0 and transformers_run.stdout.startswith("ROMEO:"), transformers_run.stderr
    tinyllm_run = run_script("-c", snippets[1] + "print(type(model).__name__, model.num_params())", cwd=ROOT)
    assert tinyllm_run.returncode == 0, tinyllm_run.stderr
    assert tinyllm_run.stdout.split() == ["ModernGPT", str(load_model(runs["modern"][0])[0].num_params())]


@pytest.mark.parametrize("name, model_type", [("modern", "llama"), ("vanilla", "gpt2"), ("bpe", "llama")])
def test_transformers_computes_our_logits_and_tokens(runs, name, model_type):
    run, exported = runs[name]
    ours, _ = load_model(run)
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == model_type and hf.config.model_type == model_type
    assert all(config[k] is None for k in ("bos_token_id", "eos_token_id", "pad_token_id"))
    # the tokenizer: the same ids, and the same text back, newlines and spaces included
    ids = tokenizer(TEXT)["input_ids"]
    assert ids == ours.tokenizer.encode(TEXT) and tokenizer.decode(ids) == TEXT
    # the model: logits equal to 1e-4 for prompts up to block_size
    block = ours.config.block_size
    for length in (1, 5, block):
        x = torch.tensor([ids[:length]])
        with torch.no_grad():
            assert torch.allclose(hf(x).logits, ours(x)[0], atol=1e-4), length
    # greedy continuations identical within block_size
    prompt = torch.tensor([ids[:4]])
    theirs = hf.generate(prompt, do_sample=False, max_new_tokens=block - 4, min_new_tokens=block - 4)
    assert torch.equal(theirs, generate(ours, prompt, block - 4, temperature=0.0))


def test_a_character_the_model_never_saw_is_refused_by_us_and_dropped_by_transformers(runs):
    """What the README says of a char model's export: transformers' tokenizer drops an unseen character (its BPE has no
    unknown token); ours refuses it. The characters around it keep our ids."""
    run, exported = runs["modern"]
    ours, _ = load_model(run)
    theirs = transformers.AutoTokenizer.from_pretrained(exported)
    assert "7" not in ours.tokenizer.stoi
    assert theirs("ROMEO: 7 is")["input_ids"] == ours.tokenizer.encode("ROMEO:  is")
    with pytest.raises((KeyError, ValueError)):
        ours.tokenizer.encode("ROMEO: 7 is")


def test_the_gpt2_tokenizer_becomes_gpt2s_byte_level_bpe(tmp_path):
    """A gpt2-tokenizer checkpoint exports GPT-2's tokenizer, rebuilt from tiktoken's ranks (merges recovered)."""
    from convert import hf_tokenizer_files
    from tokenizer import TiktokenTokenizer
    ours = TiktokenTokenizer("gpt2")
    for name, text in hf_tokenizer_files(ours, 256).items():
        (tmp_path / name).write_text(text)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = TEXT + " Ünïcödé — 日本語 🎭 naïve  \t\n x"
    assert theirs(text)["input_ids"] == ours.encode(text) and theirs.decode(ours.encode(text)) == text
    assert theirs.eos_token == "<|endoftext|>" and theirs.convert_tokens_to_ids("<|endoftext|>") == 50256


def test_a_published_folder_loads_back_into_our_model(runs):
    run, exported = runs["modern"]
    from model_modern import ModernGPT
    ours, _ = load_model(run)
    back = ModernGPT.from_pretrained(exported)
    x = torch.tensor([ours.tokenizer.encode(TEXT[:16])])
    assert torch.equal(back(x)[0], ours(x)[0]) and back.tokenizer.encode(TEXT) == ours.tokenizer.encode(TEXT)


@pytest.mark.parametrize("gguf_type, tolerance", [("f32", 0.0), ("f16", 1e-3), ("q8_0", 2e-2)])
def test_gguf_holds_our_weights_and_llama_cpp_metadata(runs, tmp_path, gguf_type, tolerance):
    gguf = pytest.importorskip("gguf")
    from convert import gguf_tensors
    run, _ = runs["modern"]
    ours, _ = load_model(run)
    path = tmp_path / "m.gguf"
    assert run_main(EXPORT, run, "--to", "gguf", "--out", path, "--gguf-type", gguf_type).returncode == 0
    reader = gguf.GGUFReader(path)
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    c = ours.config
    assert field("general.architecture") == "llama" and field("llama.context_length") == c.block_size
    assert (field("llama.embedding_length"), field("llama.block_count"), field("llama.attention.head_count")) == (
        c.n_embd, c.n_layer, c.n_head)
    assert field("llama.rope.dimension_count") == c.n_embd // c.n_head and field("llama.rope.freq_base") == c.rope_theta
    tokens, chars = field("tokenizer.ggml.tokens"), ours.tokenizer.chars
    assert tokens[chars.index(" ")] == "\u2581" and tokens[chars.index("\n")] == "\n"
    assert tokens[chars.index("R")] == "R" and tokens[c.vocab_size:] == ["<unk>", "<s>", "</s>"]
    assert [field(f"tokenizer.ggml.{k}_token_id") for k in ("unknown", "bos", "eos")] == [c.vocab_size + i for i in range(3)]
    assert field("tokenizer.ggml.model") == "t5" and field("tokenizer.ggml.remove_extra_whitespaces") is False
    assert field("tokenizer.ggml.add_bos_token") is False and field("tokenizer.ggml.add_space_prefix") is False
    expected = gguf_tensors(ours)
    assert {t.name for t in reader.tensors} == set(expected)
    for t in reader.tensors:
        weights = gguf.quants.dequantize(t.data, t.tensor_type).reshape(expected[t.name].shape)
        assert np.allclose(weights, expected[t.name].numpy(), atol=tolerance), t.name
    assert np.array_equal(weights.shape, expected[t.name].shape)


def test_a_bpe_gguf_holds_a_byte_level_vocabulary_with_its_merges(runs, tmp_path):
    gguf = pytest.importorskip("gguf")
    from convert import byte_level_vocab_and_merges
    run, _ = runs["bpe"]
    ours, _ = load_model(run)
    path = tmp_path / "b.gguf"
    assert run_main(EXPORT, run, "--to", "gguf", "--out", path).returncode == 0
    reader = gguf.GGUFReader(path)
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    n = ours.config.vocab_size
    assert (field("tokenizer.ggml.model"), field("tokenizer.ggml.pre")) == ("gpt2", "gpt-2")
    vocab, merges = byte_level_vocab_and_merges(ours.tokenizer)
    tokens = field("tokenizer.ggml.tokens")
    assert tokens[:n] == sorted(vocab, key=vocab.get) and tokens[n:] == ["<|endoftext|>"]
    assert field("tokenizer.ggml.merges") == [f"{a} {b}" for a, b in merges]
    assert field("tokenizer.ggml.bos_token_id") == field("tokenizer.ggml.eos_token_id") == n
    embedding = next(t for t in reader.tensors if t.name == "token_embd.weight").data.reshape(n + 1, -1)
    assert np.array_equal(embedding[:n], ours.tok_emb.weight.detach().numpy()) and not embedding[n].any()


def test_a_cl100k_checkpoint_is_refused_not_exported_with_gpt2s_split(runs):
    from convert import check_exportable
    ours, _ = load_model(runs["bpe"][0])

    class Cl100k:  # its ranks need a download; the refusal needs only its name
        kind, name = "tiktoken", "cl100k_base"
    ours.tokenizer = Cl100k()
    for to in ("hf", "gguf"):
        with pytest.raises(UserError, match="pre-split its text with GPT-2's regex, not cl100k_base's"):
            check_exportable(ours, to)


@pytest.mark.parametrize("name", ["modern", "bpe"])
def test_llama_cpp_generates_our_greedy_tokens(runs, tmp_path, name):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install "
                                    "llama-cpp-python builds llama.cpp from source: several minutes)")
    run, _ = runs[name]
    ours, _ = load_model(run)
    path = tmp_path / "m.gguf"
    assert run_main(EXPORT, run, "--to", "gguf", "--out", path).returncode == 0
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=ours.config.block_size, logits_all=True, verbose=False)
    text = TEXT + (" Ünïcödé — 日本語 🎭  \t x" if name == "bpe" else "")  # bytes a char vocabulary lacks
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == ours.tokenizer.encode(text)
    assert llm.detokenize(ours.tokenizer.encode(text)).decode() == text
    prompt = "ROMEO:"
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=False)
    assert ids == ours.tokenizer.encode(prompt)
    n = ours.config.block_size - len(ids)
    theirs = []
    for token in llm.generate(ids, temp=0.0, top_k=1):
        theirs.append(token)
        if len(theirs) == n:
            break
    mine = generate(ours, torch.tensor([ids]), n, temperature=0.0)[0, len(ids):].tolist()
    assert theirs == mine
    window = ids + mine  # a full block_size window: llama.cpp's logits at every position against ours
    llm.reset()
    llm.eval(window)
    with torch.no_grad():
        expected = ours(torch.tensor([window]))[0][0]
    got = torch.tensor(llm.scores[:len(window)])[:, :ours.config.vocab_size]
    assert torch.allclose(got, expected, atol=1e-3), (got - expected).abs().max()


def test_llama_cpp_reads_gpt2s_tokenizer_as_tiktoken_does(tmp_path):
    """GPT-2's 50,257 tokens, merges recovered from tiktoken's ranks, in llama.cpp's own BPE: the same ids for text
    with contractions, numbers, whitespace runs and multi-byte characters, the same text back, and <|endoftext|>
    as its end of text. An untrained model: only the vocabulary is read."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from convert import save_gguf
    from model import GPT
    from tokenizer import TiktokenTokenizer
    model = GPT(tiny("modern", n_layer=1, vocab_size=50257))
    model.tokenizer = TiktokenTokenizer("gpt2")
    path = tmp_path / "gpt2.gguf"
    save_gguf(path, model, "f32", "tiny")
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    text = TEXT + " I'll pay 12345 men?  Ünïcödé — 日本語 🎭\n\t end   x"
    ids = model.tokenizer.encode(text)
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == ids
    assert llm.detokenize(ids).decode() == text and llm.token_eos() == 50256


def test_llama_cpp_reads_a_character_the_model_never_saw_as_unknown(runs, tmp_path):
    """A digit or an accent typed into llama-cli's prompt for a Shakespeare model: with SentencePiece's "llama"
    vocabulary llama.cpp spelled it as byte tokens, which a char vocabulary lacks, and aborted the process
    (SIGABRT). The unigram vocabulary reads it (a run of them) as <unk> and generation goes on. In a process of its own, which an
    abort would kill instead of the test run."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    import subprocess
    import sys
    run, _ = runs["modern"]
    ours, _ = load_model(run)
    path = tmp_path / "m.gguf"
    assert run_main(EXPORT, run, "--to", "gguf", "--out", path).returncode == 0
    code = ("import sys, llama_cpp\n"
            "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, verbose=False)\n"
            "ids = llm.tokenize('First 2é:'.encode(), add_bos=False, special=False)\n"
            "print(ids, [token for _, token in zip(range(5), llm.generate(ids, temp=0.0, top_k=1))])")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-500:]
    ids, generated = json.loads("[" + result.stdout.strip().replace("] [", "], [") + "]")
    unknown = ours.config.vocab_size  # the first token after ours
    assert ids == ours.tokenizer.encode("First ") + [unknown] + ours.tokenizer.encode(":")  # a run: one <unk>
    assert len(generated) == 5


def test_llama_cpp_reads_a_char_vocabulary_of_any_script_as_we_do(tmp_path):
    """A char vocabulary of a user's own text, not only Shakespeare's ASCII: accents, CJK, an emoji, tab, carriage
    return, no-break and line separators, control characters and text that looks like special tokens, each its own
    token in llama.cpp's unigram vocabulary, with our ids and our text back. An untrained model."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from convert import save_gguf
    from model import GPT
    from tokenizer import CharTokenizer
    text = TEXT + " Ünïcödé — 日本語 🎭\t\r\n\u00a0\u2028\x01\x7f <s></s><unk>[INST]  x"
    model = GPT(tiny("modern", n_layer=1))
    model.tokenizer = CharTokenizer.from_text(text)
    path = tmp_path / "char.gguf"
    save_gguf(path, model, "f32", "tiny")
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    ids = model.tokenizer.encode(text)
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == ids
    assert llm.detokenize(ids).decode() == text


@pytest.mark.parametrize("char", ["\u2581", "\x00"])
def test_a_char_vocabulary_llama_cpp_cannot_hold_is_refused_for_gguf_only(char):
    """llama.cpp reads '▁' as a space (ours would come back as ' '; with a space in the vocabulary too, it aborted)
    and a NUL as an unknown character: a GGUF of such a vocabulary is refused before anything is written.
    transformers' tokenizer holds both, so --to hf still exports it, with our ids."""
    from tokenizers import Tokenizer

    from convert import check_exportable, hf_tokenizer_files
    from model import GPT
    from tokenizer import CharTokenizer
    text = f"a b{char}c\n"
    model = GPT(tiny("modern", n_layer=1))
    model.tokenizer = CharTokenizer.from_text(text)
    with pytest.raises(UserError, match=re.escape(f"cannot hold the character(s) {char!r}") + ".*--to hf"):
        check_exportable(model, "gguf")
    check_exportable(model, "hf")
    hf = Tokenizer.from_str(hf_tokenizer_files(model.tokenizer, 16)["tokenizer.json"])
    assert hf.encode(text).ids == model.tokenizer.encode(text) and hf.decode(hf.encode(text).ids) == text


@pytest.mark.parametrize("name", ["modern", "bpe"])
def test_llama_cpp_check_compares_f32_and_q8_0_without_dying(runs, tmp_path, name):
    """experiments/llama_cpp_check.py end to end, for a char and a BPE model. On a CPU with AMX, llama.cpp's q8_0
    kernels died of SIGSEGV on multi-token evaluation: the script must still finish, with that row measured on
    llama.cpp's plain CPU path."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    run, _ = runs[name]
    result = load_script(ROOT / "experiments" / "llama_cpp_check.py").main(
        ["--checkpoint", str(run), "--prompt", "ROMEO:", "--results-dir", str(tmp_path)])
    f32, q8_0 = result["gguf"]["f32"], result["gguf"]["q8_0"]
    assert f32["tokenizes_prompt_to_our_ids"] and f32["max_logit_difference"] < 1e-3
    assert f32["greedy_identical_within_block"] == f32["greedy_tokens_within_block"]
    assert 0 < q8_0["max_logit_difference"] < 0.5  # 8-bit weights: close, not equal
    written = json.loads((tmp_path / "llama_cpp.json").read_text())
    assert written["gguf"]["q8_0"] == q8_0
    assert written["special_tokens"] == (["<unk>", "<s>", "</s>"] if name == "modern" else ["<|endoftext|>"])


def test_llama_cpp_check_refuses_a_vanilla_checkpoint_before_needing_llama_cpp(runs, tmp_path):
    result = run_main(ROOT / "experiments" / "llama_cpp_check.py", "--checkpoint", runs["vanilla"][0],
                      "--results-dir", tmp_path)
    assert_user_error(result, "computes GELU where ours computes ReLU")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("problem", ["missing weights", "vanilla to gguf", "exists", "not ours", "unwritable"])
def test_bad_exports_are_one_line_and_leave_nothing(runs, tmp_path, problem):
    run, _ = runs["modern"]
    args = [run, "--to", "hf", "--out", tmp_path / "out"]
    if problem == "missing weights":
        import shutil
        shutil.copytree(run / "best", tmp_path / "broken")
        (tmp_path / "broken" / "model.safetensors").unlink()
        args, needle = [tmp_path / "broken", "--to", "hf", "--out", tmp_path / "out"], "model.safetensors"
    elif problem == "vanilla to gguf":
        args, needle = [runs["vanilla"][0], "--to", "gguf", "--out", tmp_path / "out"], "computes GELU where ours computes ReLU"
    elif problem == "exists":
        (tmp_path / "out").mkdir()
        needle = "--force"
    elif problem == "not ours":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "thesis.tex").write_text("mine")
        args, needle = [*args, "--force"], "not an earlier export"
    else:
        (tmp_path / "file").write_text("x")
        args, needle = [run, "--to", "hf", "--out", tmp_path / "file" / "out"], "cannot write"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert_user_error(run_main(EXPORT, *args), needle)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "a failed export left something behind"


def test_every_exported_file_is_as_readable_as_any_file_the_user_writes(runs):
    """The weights too: an export is made to be shared, and safetensors' save_file writes owner-only files."""
    import os
    import stat
    _, exported = runs["modern"]
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in exported.iterdir()}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask), modes


def test_force_replaces_an_earlier_export(runs, tmp_path):
    run, _ = runs["vanilla"]
    for _ in range(2):
        assert run_main(EXPORT, run, "--to", "hf", "--out", tmp_path / "out", "--force").returncode == 0
    assert (tmp_path / "out" / "config.json").exists()
    assert not [p for p in tmp_path.iterdir() if ".tinyllm-tmp-" in p.name]


def test_help_documents_both_targets():
    result = run_main(EXPORT, "--help")
    assert result.returncode == 0
    assert "--to hf" in result.stdout and "--to gguf" in result.stdout and "LlamaForCausalLM" in result.stdout
    assert "(default: f32)" in result.stdout
