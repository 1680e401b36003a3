"""Inference: the KV cache of all layers, prefill and the one-token step, sampling, and three ways to run a step.

model.py computes logits for a sequence. Generating text one token at a time is this file's job:
- `Cache`: one modernize.KVCache per layer and the position of the next token. The prompt is prefilled once;
  each step then feeds only the newest token, so a token costs one token's work instead of the whole window's.
- `sample_next`: temperature, top-k and top-p (nucleus) sampling from the last logits, seeded.
- Decoders run the cached step, each behind the same two calls, `start(prompt) -> logits` and
  `feed(token) -> logits`:
    eager    `EagerDecoder`: PyTorch, op by op;
    compile  `CompiledDecoder`: the step through torch.compile, every shape fixed (`StaticCache`), so one graph
             serves every step;
    c        cdecode.CDecoder: the whole step in one C call (src/cdecode.c), batch 1, modern models with fp32 or
             int8 weights on a CPU;
    auto     the C step where it can run, else eager (`choose_engine`): the default of src/generate.py.
  All of them compute the same function as the model run without a cache over its attention window
  (tests/test_engine.py, tests/test_cdecode.py).
- `generate`: the loop. `generate_text`: text in, text out, streamed.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from attention import attention_scores
from checks import check_float, check_int
from common import UserError
from device import DTYPES, Precision, cpp_compiler, cpu_bf16_reason, torch_compile
from modernize import KVCache

ENGINES = ("auto", "eager", "compile", "c")
WEIGHTS = ("fp32", "bf16", "fp16", "int8")  # weights a model can decode with (see prepare_weights, choose_weights)


# ----------------------------------------------------------------------------- sampling

def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    check_float(temperature, "temperature", minimum=0.0)
    if top_k is not None:
        check_int(top_k, "top_k", minimum=1)
    if top_p is not None:
        check_float(top_p, "top_p", above=0.0, maximum=1.0)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token from (B, vocab) logits. temperature 0 = greedy; top_k keeps the k likeliest
    (clamped to the vocab); top_p keeps the smallest set whose probability reaches p (nucleus)."""
    if temperature < torch.finfo(torch.float32).tiny:  # 0, or too small to divide by in fp32: greedy either way
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float()
    # shifted so that the largest is 0 before dividing: a tiny temperature then sends the others to -inf, where
    # unshifted logits would overflow to +-inf and softmax would return NaN
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > top_p  # tokens wholly beyond the nucleus; the first always stays
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


# ----------------------------------------------------------------------------- caches

def cache_dtype(model) -> torch.dtype | None:
    """On a CPU the cache stays fp32 even for 16-bit weights: CPUs without native bf16 arithmetic run attention
    over bf16 keys about 2x slower, and the cache is small. Elsewhere: the dtype of the keys."""
    return torch.float32 if model.tok_emb.weight.device.type == "cpu" else None


class Cache:
    """The keys and values of every layer, and the absolute position of the next token."""

    def __init__(self, model):
        c = model.config
        self.layers = [KVCache(c.block_size, cache_dtype(model)) for _ in range(c.n_layer)]
        self.max_positions = c.block_size if c.pos == "learned" else None  # learned positions stop there

    @property
    def length(self) -> int:
        return self.layers[0].length

    def positions(self, T: int, device):
        """(absolute positions of the next T tokens, the end of that span) for model.forward."""
        start = self.length
        if self.max_positions is not None and start + T > self.max_positions:
            raise ValueError(f"position {start + T} is past block_size {self.max_positions} "
                             "(learned position embeddings stop there)")
        return torch.arange(start, start + T, device=device), start + T


class StaticKVCache:
    """One layer's cache with every shape fixed, for the compiled step: the whole buffer is attended with a mask
    of the filled slots, and the position is a tensor (a Python int would recompile the graph at every step)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, position: torch.Tensor):
        self.k, self.v, self.position = k, v, position
        self.slots = torch.arange(k.size(2), device=k.device)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        slot = self.position % self.k.size(2)
        self.k.index_copy_(2, slot, k.to(self.k.dtype))
        self.v.index_copy_(2, slot, v.to(self.v.dtype))
        # one query, written out: SDPA's CPU kernel spends most of each call setting up for a single query,
        # while torch.compile fuses these lines into the surrounding kernels
        scores = attention_scores(q.to(self.k.dtype), self.k).masked_fill(~(self.slots <= self.position), float("-inf"))
        return scores.softmax(dim=-1) @ self.v


class StaticCache:
    """All layers' StaticKVCache, filled from an eager Cache after the prefill; `position` is advanced in place."""

    def __init__(self, cache: Cache):
        device = cache.layers[0].k.device
        self.position = torch.tensor([cache.length], device=device)
        self.layers = [StaticKVCache(layer.k, layer.v, self.position) for layer in cache.layers]

    def positions(self, T: int, device):
        return self.position, None  # the caller reserved the RoPE table; no Python int enters the graph


# ----------------------------------------------------------------------------- decoders

def prefill(model, prompt: torch.Tensor, cache: Cache) -> torch.Tensor:
    """Fill a fresh cache with `prompt`: one causal pass over the first block_size tokens, then one token at a
    time (exact, since the cache slides). Returns the logits (B, vocab) after the last token."""
    first = prompt[:, :model.config.block_size]
    logits = model(first, cache=cache)[0]
    for t in range(first.size(1), prompt.size(1)):
        logits = model(prompt[:, t:t + 1], cache=cache)[0]
    return logits[:, -1]


class EagerDecoder:
    """The cached step in PyTorch, op by op. Learned positions end at block_size: past it, the last block_size
    tokens are prefilled again (what the model without a cache computes there too)."""

    def __init__(self, model):
        self.model = model

    def start(self, prompt: torch.Tensor) -> torch.Tensor:
        self.cache = Cache(self.model)
        self.recent = prompt[:, -self.model.config.block_size:]  # learned positions: the window to re-encode
        return prefill(self.model, prompt, self.cache)

    def feed(self, token: torch.Tensor) -> torch.Tensor:
        """token (B, 1) -> the logits (B, vocab) for the position after it."""
        block = self.model.config.block_size
        if self.model.rope is None:
            self.recent = torch.cat([self.recent, token], dim=1)[:, -block:]
            if self.cache.length >= block:
                self.cache = Cache(self.model)
                return prefill(self.model, self.recent, self.cache)
        return self.model(token, cache=self.cache)[0][:, -1]


def _static_step(model, token: torch.Tensor, cache: StaticCache) -> torch.Tensor:
    return model(token, cache=cache)[0][:, -1]


_compiled_steps = {}  # device type -> the compiled step


def compiled_step(device: torch.device):
    """torch.compile of one fixed-shape step, built once per process and device type: one graph fuses each
    layer's small ops (norms, RoPE, attention for one query, residual adds) that otherwise cost more per token
    than the matrix products. On a CPU the graph is driven from C++ (cpp_wrapper), not from Python."""
    if device.type not in _compiled_steps:
        options = {"cpp_wrapper": True} if device.type == "cpu" else None
        _compiled_steps[device.type] = torch_compile(_static_step, fullgraph=True, options=options)
    return _compiled_steps[device.type]


class CompiledDecoder(EagerDecoder):
    """The step through torch.compile: the eager prefill, then the compiled fixed-shape step. RoPE models only
    (a learned-position model re-encodes its window past block_size, which has no fixed shape)."""

    def __init__(self, model):
        if model.rope is None:
            raise ValueError("the compiled step runs RoPE models (learned positions re-encode their window past "
                             "block_size); decode this model with engine eager")
        super().__init__(model)
        self.step = compiled_step(model.tok_emb.weight.device)

    def start(self, prompt: torch.Tensor) -> torch.Tensor:
        logits = super().start(prompt)
        self.static = StaticCache(self.cache)
        self.checked = False
        return logits

    def reserve(self, positions: int) -> None:
        """Grow the RoPE table now for `positions` tokens: a table that grew inside the graph would recompile it."""
        self.model.rope.reserve(positions)

    def feed(self, token: torch.Tensor) -> torch.Tensor:
        # after the first step with these inputs, the guards (a check of every weight, ~0.1-0.3 ms) can be skipped
        stance = torch.compiler.set_stance("default", skip_guard_eval_unsafe=True) if self.checked else nullcontext()
        with stance:
            logits = self.step(self.model, token, self.static)
        self.static.position += 1
        self.checked = True
        return logits


def choose_engine(model, batch: int = 1) -> str:
    """What engine "auto" runs: the C step where it can (batch 1, a modern model with fp32 or int8 weights on a
    CPU, a C compiler), else eager PyTorch."""
    from cdecode import find_c_compiler, unsupported_reason
    return "c" if batch == 1 and unsupported_reason(model) is None and find_c_compiler() is not None else "eager"


def make_decoder(model, engine: str = "eager", batch: int = 1):
    """A decoder for `model`: start(prompt) -> logits, then feed(token) -> logits. "auto" falls back to eager
    if the C step cannot be built here."""
    if engine == "auto":
        try:
            return make_decoder(model, choose_engine(model, batch))
        except RuntimeError:  # a C compiler that fails to build or load the step
            return EagerDecoder(model)
    if engine == "eager":
        return EagerDecoder(model)
    if engine == "compile":
        return CompiledDecoder(model)
    if engine == "c":
        from cdecode import CDecoder
        return CDecoder(model)
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")


# ----------------------------------------------------------------------------- the loop

def uncached_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """The plain path: recompute everything that can influence the next token, no cache."""
    return model(tokens[:, -model.context_length():])[0][:, -1]


@torch.inference_mode()
def generate(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
             decoder=None, engine: str = "eager", on_token=None) -> torch.Tensor:
    """Append `max_new_tokens` sampled tokens to idx (B, T). Cached by default: the prompt is prefilled once,
    then each step feeds only the newest token. decoder: one made by make_decoder (reused across calls: the
    C step and the compiled step are built once), else one for `engine`. on_token(ids (B, 1)) streams output.
    use_cache=False recomputes the whole context every step (the reference the cache is tested against)."""
    check_sampling_args(temperature, top_k, top_p)
    if not use_cache and (decoder is not None or engine not in ("eager", "auto")):
        raise ValueError(f"engine {engine!r} runs the cached step; it needs use_cache=True")
    was_training = model.training
    model.eval()
    B, T0 = idx.shape
    out = torch.empty(B, T0 + max_new_tokens, dtype=idx.dtype, device=idx.device)
    out[:, :T0] = idx
    if use_cache and max_new_tokens > 0:
        decoder = decoder or make_decoder(model, engine, batch=B)
        if hasattr(decoder, "reserve"):
            decoder.reserve(T0 + max_new_tokens)
        logits = decoder.start(idx[:, -model.context_length():])
    for t in range(T0, T0 + max_new_tokens):
        if not use_cache:
            logits = uncached_logits(model, out[:, :t])
        next_id = sample_next(logits, temperature, top_k, top_p, generator)
        out[:, t:t + 1] = next_id
        if on_token is not None:
            on_token(next_id)
        if use_cache and t + 1 < T0 + max_new_tokens:
            logits = decoder.feed(next_id)
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------- weights and engines for decoding

def check_engine(engine: str, device: torch.device, weights: str, use_cache: bool = True) -> None:
    """Refuse an engine that cannot run here before anything is loaded: torch.compile on a CPU writes and builds
    C++, the C step needs a C compiler and fp32 or int8 weights; without them both would fail deep inside."""
    from cdecode import find_c_compiler
    if engine not in ("eager", "auto") and not use_cache:
        raise UserError(f"--engine {engine} runs the cached decoding step; drop --no-cache or use --engine eager")
    if engine == "compile" and device.type == "cpu" and cpp_compiler() is None:
        raise UserError("--engine compile needs a C++ compiler on a CPU (install g++ or clang++), or use --engine eager")
    if engine == "c":
        if device.type != "cpu":
            raise UserError(f"--engine c runs on the CPU, not {device.type}; add --device cpu")
        if weights not in ("fp32", "int8"):
            raise UserError(f"--engine c runs fp32 or int8 weights, not {weights}; use --dtype fp32 or int8")
        if find_c_compiler() is None:
            raise UserError("--engine c needs a C compiler (cc, gcc or clang); install one or use --engine eager")


def choose_weights(device: torch.device):
    """--dtype auto for decoding: the fastest weights at batch 1 (a Precision: the weights and why).

    On a CPU, int8 through the C step wherever a C compiler can build it: it reads a quarter of fp32's bytes per
    token, and was the fastest row of training/benchmark.py on each CPU we ran it on (AVX2-only and AVX512_BF16).
    Without the C step, bf16 where the CPU runs bf16 natively, else fp32. CUDA: bf16 (fp16 without bf16). The
    default stays fp32: the exact model; auto trades a little accuracy (the benchmark's quality table) for speed."""
    from cdecode import find_c_compiler
    if device.type == "cuda":
        return Precision(*(("bf16", "this GPU has bf16") if torch.cuda.is_bf16_supported() else ("fp16", "no bf16 here")))
    if device.type == "cpu" and find_c_compiler() is not None:
        return Precision("int8", "the C step can be built here: int8 weights read a quarter of fp32's bytes per token")
    native_bf16, why = cpu_bf16_reason() if device.type == "cpu" else (False, "")
    if native_bf16:
        return Precision("bf16", why)
    return Precision("fp32", "neither the C step nor native bf16 is available here")


def prepare_weights(model, weights: str, device: torch.device):
    """Decoding one token reads every weight once, so fewer bytes per weight speed it up where memory
    bandwidth is the limit (batch-1 decoding). Norms, RoPE, attention over the cache and sampling still
    compute in fp32 on a CPU."""
    from quantize import quantize_int8
    if weights == "fp16" and device.type == "cpu":
        raise UserError("--dtype fp16 is not supported for generation on the CPU; use bf16, int8 or fp32")
    if weights == "int8":
        return quantize_int8(model)
    return model.to(DTYPES[weights]) if weights != "fp32" else model


def prepare_decoder(model, engine: str):
    """make_decoder for a command line: a model the engine does not run, or a failed build, is one line. Where "auto"
    would run the C step and this machine cannot (no C compiler, an unwritable build folder), a note on stderr says
    why: the eager path it falls back to decodes several times slower, which a user should not find out by timing."""
    from cdecode import unsupported_reason
    if engine == "auto" and unsupported_reason(model) is None:
        try:
            return make_decoder(model, "c")
        except RuntimeError as err:
            print(f"[--engine auto: eager PyTorch, several times slower than the C step, which cannot run here: {err}]",
                  file=sys.stderr)
            return make_decoder(model, "eager")
    try:
        return make_decoder(model, engine)
    except (ValueError, RuntimeError) as err:
        raise UserError(f"--engine {engine}: {err}") from None


# ----------------------------------------------------------------------------- text in, text out

def encode_prompt(model, prompt: str) -> torch.Tensor:
    if model.tokenizer is None:
        raise UserError("this checkpoint has no tokenizer recorded; it cannot encode a prompt")
    try:
        ids = model.tokenizer.encode(prompt)
    except ValueError as err:
        raise UserError(f"bad prompt: {err}") from None
    if not ids:
        raise UserError("the prompt is empty; pass --prompt with at least one character")
    return torch.tensor([ids], dtype=torch.long, device=model.tok_emb.weight.device)


def sample_prompt(tokenizer, preferred: str = "ROMEO:") -> str:
    """A prompt for a sample: "ROMEO:" where the vocabulary has its characters, else a newline, else the
    vocabulary's first token (a model trained on other text must still produce a sample)."""
    for prompt in (preferred, "\n"):
        try:
            if tokenizer.encode(prompt):
                return prompt
        except ValueError:
            continue
    return tokenizer.decode([0])


class StreamDecoder:
    """Decode a growing token list and emit only the new text (a BPE token can end mid-character,
    so text is emitted once it decodes cleanly)."""

    def __init__(self, tokenizer, write):
        self.tokenizer, self.write, self.pending = tokenizer, write, []

    def __call__(self, next_id: torch.Tensor) -> None:
        self.pending.append(int(next_id[0, 0]))
        text = self.tokenizer.decode(self.pending)
        if "\ufffd" not in text:
            self.write(text)
            self.pending = []

    def flush(self) -> None:
        if self.pending:
            self.write(self.tokenizer.decode(self.pending))
            self.pending = []


def generate_text(model, prompt: str, tokens: int, temperature: float = 0.8, top_k=None, top_p=None,
                  seed: int | None = None, use_cache: bool = True, stream=None, decoder=None) -> str:
    """Prompt + `tokens` generated tokens as text. stream(str) receives each new piece as it is made."""
    idx = encode_prompt(model, prompt)
    generator = torch.Generator(device=idx.device).manual_seed(seed) if seed is not None else None
    streamer = StreamDecoder(model.tokenizer, stream) if stream else None
    out = generate(model, idx, tokens, temperature=temperature, top_k=top_k, top_p=top_p, use_cache=use_cache,
                   generator=generator, on_token=streamer, decoder=decoder)
    if streamer:
        streamer.flush()
    return model.tokenizer.decode(out[0].tolist())
