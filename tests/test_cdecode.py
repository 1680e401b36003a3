"""The C decoding step (src/cdecode.c) computes what the PyTorch model computes: with fp32 weights the fp32 model
itself, with int8 weights the fp32 model holding those weights."""
import pytest
import torch

from cdecode import CDecoder, find_c_compiler
from checkpoint import save_model_folder
from conftest import ROOT, run_main, tiny_model_config
from engine import Cache, generate
from model import GPT
from quantize import dequantize, quantize_int8

pytestmark = [pytest.mark.skipif(find_c_compiler() is None, reason="the C step needs a C compiler"),
              pytest.mark.multithreaded]  # the C loops split rows across threads


def modern_fp32(seed=0, **overrides):
    """A tiny modern model. Widths that are not multiples of the vector length (40 wide, heads of 20, hidden 64)
    run the C loops' remainders too."""
    torch.manual_seed(seed)
    sizes = {**dict(vocab_size=11, n_embd=40, n_head=2, block_size=8), **overrides}
    return GPT(tiny_model_config(pos="rope", norm="rmsnorm", ffn="swiglu", attn_proj_bias=False, **sizes)).eval()


def modern_int8(seed=0, **overrides):
    return quantize_int8(modern_fp32(seed, **overrides))


VECTOR_CODE = {  # cdecode.c's three code paths, each built where this CPU runs it (the default: -march=native)
    "native": None,
    "avx2": ["-O3", "-mavx2", "-mfma", "-fopenmp"],  # the AVX2 loops, also on an AVX-512 machine
    "plain": ["-O3", "-fopenmp"],  # no -march: the plain loops an Arm or older x86 CPU gets
}


@pytest.fixture(params=VECTOR_CODE)
def vector_code(request, tmp_path, monkeypatch):
    """Builds of the C step with each of its code paths that this CPU can run, in a cache folder of the test's own."""
    import cdecode
    from device import cpu_flags
    flags = VECTOR_CODE[request.param]
    if request.param == "avx2" and not {"avx2", "fma"} <= cpu_flags():
        pytest.skip("this CPU has no AVX2 and FMA")
    if flags is not None:
        monkeypatch.setenv("TINYLLM_CACHE_DIR", str(tmp_path))
        monkeypatch.setattr(cdecode, "FLAG_SETS", (flags, [f for f in flags if f != "-fopenmp"]))
    return request.param


@pytest.mark.parametrize("weights", ["fp32", "int8"])
@torch.inference_mode()
def test_c_step_gives_the_logits_of_the_pytorch_model_through_its_caches(weights, vector_code):
    """30 tokens through a cache of 8 slots: the ring buffer wraps around three times. Each of cdecode.c's code
    paths (AVX-512, AVX2, plain loops) where this CPU runs it: a machine uses only one of them."""
    model = modern_int8() if weights == "int8" else modern_fp32()
    reference = dequantize(model) if weights == "int8" else model
    tokens = torch.randint(0, 11, (1, 30))
    cache = Cache(reference)
    decoder = CDecoder(model)
    for t in range(tokens.size(1)):
        expected = reference(tokens[:, t:t + 1], cache=cache)[0][:, -1]
        got = decoder.feed(tokens[0, t])
        assert torch.allclose(got, expected, atol=1e-5), (t, (got - expected).abs().max())
    assert torch.allclose(decoder.start(tokens[:, :3]), reference(tokens[:, :3])[0][:, -1], atol=1e-5)


def test_generate_with_the_c_engine_gives_the_tokens_of_the_pytorch_model():
    """Greedy decoding past the block size (the prompt itself is longer than it), as generate() runs it: 200 tokens
    with fp32 weights identical to eager fp32 (the default path), and int8 identical to its dequantized model."""
    model = modern_fp32(seed=2, vocab_size=65, n_embd=64, n_head=4, block_size=16)
    prompt = torch.randint(0, 65, (1, 20))
    assert torch.equal(generate(model, prompt, 200, temperature=0.0, engine="c"),
                       generate(model, prompt, 200, temperature=0.0, engine="eager"))
    assert torch.equal(generate(model, prompt, 50, temperature=0.0, engine="auto"),
                       generate(model, prompt, 50, temperature=0.0, engine="eager"))
    model = modern_int8(seed=1)
    prompt = torch.randint(0, 11, (1, 12))
    assert torch.equal(generate(model, prompt, 40, temperature=0.0, engine="c"),
                       generate(dequantize(model), prompt, 40, temperature=0.0))
    generator = torch.Generator().manual_seed(3)
    sampled = generate(model, prompt, 20, temperature=1.0, top_k=5, engine="c", generator=generator)
    assert sampled.shape == (1, 32) and sampled[:, :12].equal(prompt)


def test_c_step_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="modern architecture"):
        CDecoder(quantize_int8(GPT(tiny_model_config())))
    modern = GPT(tiny_model_config(pos="rope", norm="rmsnorm", ffn="swiglu", attn_proj_bias=False))
    with pytest.raises(ValueError, match="fp32 or int8"):
        CDecoder(modern.to(torch.bfloat16))
    with pytest.raises(ValueError, match="batch 1"):
        generate(modern_int8(), torch.zeros(2, 1, dtype=torch.long), 3, engine="c")
    with pytest.raises(ValueError, match="use_cache"):
        generate(modern_int8(), torch.zeros(1, 1, dtype=torch.long), 3, engine="c", use_cache=False)


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    import cdecode
    monkeypatch.setenv("TINYLLM_CACHE_DIR", str(tmp_path))
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(cdecode, "SOURCE", broken)
    with pytest.raises(RuntimeError, match="could not build broken.c"):
        cdecode.build_library()
    assert list(tmp_path.iterdir()) == [broken]
    monkeypatch.setattr(cdecode, "SOURCE", ROOT / "src" / "cdecode.c")

    def ctrl_c_while_compiling(*args, **kwargs):
        raise KeyboardInterrupt
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cdecode.subprocess, "run", ctrl_c_while_compiling)
        with pytest.raises(KeyboardInterrupt):
            cdecode.build_library()
    assert list(tmp_path.iterdir()) == [broken]  # no partial library left in the cache
    built = cdecode.build_library()
    assert built.parent == tmp_path and cdecode.build_library() == built  # built once, then reused


def test_a_library_built_for_one_cpu_is_not_loaded_on_another(tmp_path, monkeypatch):
    """-march=native code from an AVX-512 machine dies of SIGILL on an AVX2 one: the cache key names the CPU's flags
    (a shared home folder, or a virtual machine moved to another CPU under the same host name, would mix them)."""
    import cdecode
    import device
    monkeypatch.setenv("TINYLLM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "avx512f", "fma"})
    avx512 = cdecode.build_library()
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "fma"})
    avx2 = cdecode.build_library()
    assert avx2 != avx512 and sorted(tmp_path.iterdir()) == sorted([avx2, avx512])
    assert cdecode.build_library() == avx2


def test_generate_cli_with_the_c_engine(tmp_path):
    model = modern_int8()
    from tokenizer import CharTokenizer
    model.tokenizer = CharTokenizer.from_text("abcdefghij\n")
    fp32 = dequantize(model)
    save_model_folder(tmp_path / "run", fp32, fp32.tokenizer, {})
    result = run_main(ROOT / "src" / "generate.py", "--checkpoint", tmp_path / "run", "--prompt", "abc", "--tokens",
                      "30", "--temp", "0", "--dtype", "int8", "--engine", "c", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("abc") and len(result.stdout.rstrip("\n")) == 33


def test_a_token_outside_the_vocabulary_is_refused_before_c_reads_it():
    decoder = CDecoder(modern_int8())
    for token in (-1, 11):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            decoder.feed(token)


def test_an_unwritable_build_folder_is_one_clear_error(tmp_path, monkeypatch):
    import cdecode
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TINYLLM_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(RuntimeError, match="set TINYLLM_CACHE_DIR to a writable folder"):
        cdecode.build_library()


def test_auto_says_when_this_machine_cannot_run_the_c_step(tmp_path, monkeypatch):
    """Without a C compiler (or with an unwritable build folder) `--engine auto` decoded with eager PyTorch, several
    times slower, without a word. It still does, with one line on stderr saying so and why; the text is the same."""
    import cdecode
    model = modern_fp32()
    from tokenizer import CharTokenizer
    model.tokenizer = CharTokenizer.from_text("abcdefghij\n")
    save_model_folder(tmp_path / "run", model, model.tokenizer, {})
    args = (ROOT / "src" / "generate.py", "--checkpoint", tmp_path / "run", "--prompt", "abc", "--tokens", "20",
            "--temp", "0", "--device", "cpu")
    with_c = run_main(*args)
    assert with_c.returncode == 0 and "--engine auto" not in with_c.stderr, with_c.stderr
    monkeypatch.setattr(cdecode, "find_c_compiler", lambda: None)
    without = run_main(*args)
    assert without.returncode == 0 and without.stdout == with_c.stdout, without.stderr
    assert "[--engine auto: eager PyTorch, several times slower than the C step, which cannot run here: the C decoder " \
           "needs a C compiler" in without.stderr
