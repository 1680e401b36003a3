"""The GPT model family: one config, one model class, every variant a config change.

Vanilla GPT (GPT-2 style) is the default config. Each modernisation is a switch:
`norm` layernorm -> rmsnorm, `ffn` relu -> swiglu (or relu2), `pos` learned -> rope; `model_modern.ModernGPT`
turns all of them on. Generation supports a KV cache for both position schemes.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from checks import check_bool, check_choice, check_float, check_int
from common import UserError
from modernize import KVCache, RotaryEmbedding
from transformer import Block, make_norm

ENGINES = ("eager", "compile", "c")  # how generate() runs a cached decoding step
CHOICES = {"norm": ("layernorm", "rmsnorm"), "ffn": ("relu", "swiglu", "relu2"), "pos": ("learned", "rope")}
LIMITS = {"vocab_size": 2**20, "block_size": 2**16, "n_layer": 1024, "n_head": 1024, "n_embd": 2**16}  # sanity bounds


@dataclass
class GPTConfig:
    """Model hyperparameters; the defaults are the reference vanilla GPT (10,763,904 params at vocab 65)."""

    vocab_size: int = 65
    block_size: int = 256       # longest context seen in training
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2
    norm: str = "layernorm"     # layernorm | rmsnorm
    ffn: str = "relu"           # relu | swiglu | relu2
    pos: str = "learned"        # learned | rope
    attn_proj_bias: bool = True  # GPT-2 has a bias on the attention output projection, LLaMA does not
    rope_theta: float = 10000.0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Types and ranges of every field (they may come from a hand-edited config.json): a UserError naming it."""
        for name, most in LIMITS.items():
            check_int(getattr(self, name), name, 1, most)
        for name, allowed in CHOICES.items():
            check_choice(getattr(self, name), name, allowed)
        check_float(self.dropout, "dropout", minimum=0.0, below=1.0)
        check_float(self.rope_theta, "rope_theta", above=1.0)
        check_bool(self.attn_proj_bias, "attn_proj_bias")
        if self.n_embd % self.n_head:
            raise UserError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise UserError(f"RoPE needs an even head size; n_embd/n_head = {self.n_embd // self.n_head}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        if not isinstance(d, dict):
            raise UserError(f"a model config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token from (B, vocab) logits. temperature 0 = greedy; top_k keeps the k likeliest
    (clamped to the vocab); top_p keeps the smallest set whose probability reaches p (nucleus)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > top_p  # tokens wholly beyond the nucleus; the first always stays
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    check_float(temperature, "temperature", minimum=0.0)
    if top_k is not None:
        check_int(top_k, "top_k", minimum=1)
    if top_p is not None:
        check_float(top_p, "top_p", above=0.0, maximum=1.0)


class GPT(nn.Module):
    """Token embedding (+ learned positions unless RoPE) -> n_layer blocks -> final norm -> lm_head.

    The lm_head shares its weight with the token embedding ("weight tying"): reading a token in and
    predicting it out use the same vectors, which saves vocab x n_embd parameters and helps small models.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd) if config.pos == "learned" else None
        head_size = config.n_embd // config.n_head
        self.rope = RotaryEmbedding(head_size, config.block_size, config.rope_theta) if config.pos == "rope" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = make_norm(config.norm, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        self.tokenizer = None  # set by checkpoint loading, so generation can decode

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameters counted once (the tied embedding/lm_head weight is one tensor)."""
        return sum(p.numel() for p in self.parameters())

    def context_length(self) -> int:
        """How many past tokens can influence the next prediction. Learned positions: block_size.
        RoPE with a sliding window: each layer reaches block_size - 1 further back."""
        c = self.config
        return c.block_size if self.rope is None else c.n_layer * (c.block_size - 1) + 1

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, caches=None,
                window: int | None = None, last_only: bool = False, position: torch.Tensor | None = None):
        """idx (B, T) token ids -> (logits (B, T, vocab), loss or None).

        caches: one KVCache per layer (generation). window: attend to at most this many tokens back
        (only matters when T > window; RoPE models only). last_only: logits for the last position only.
        position: a 1-element tensor holding the absolute position of a single new token (B, 1): the
        fixed-shape decoding step that `generate(engine="compile")` compiles.
        """
        B, T = idx.shape
        start = caches[0].length if caches and position is None else 0
        x = self.tok_emb(idx)
        rope = None
        if self.pos_emb is not None:
            if start + T > self.config.block_size:
                raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size} "
                                 "(learned position embeddings stop there)")
            positions = torch.arange(start, start + T, device=idx.device) if position is None else position
            x = x + self.pos_emb(positions)
        else:
            rope = self.rope.tables(start, T) if position is None else self.rope.at(position)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, caches[i] if caches else None, window, position)
        x = self.norm_f(x)
        if last_only:
            x = x[:, -1:]
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    # ------------------------------------------------------------------------- generation

    def _prefill(self, context: torch.Tensor, caches) -> torch.Tensor:
        """Fill fresh caches with `context`: one causal pass over the first block_size tokens, then one
        token at a time (exact, since the cache slides). Returns the logits after the last token."""
        first = context[:, :self.config.block_size]
        logits, _ = self(first, caches=caches, last_only=True)
        for t in range(first.size(1), context.size(1)):
            logits, _ = self(context[:, t:t + 1], caches=caches)
        return logits[:, -1]

    def _uncached_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The plain path: recompute everything that can influence the next token, no cache."""
        context = tokens[:, -self.context_length():]
        logits, _ = self(context, window=self.config.block_size, last_only=True)
        return logits[:, -1]

    def new_caches(self, device: torch.device) -> list[KVCache]:
        """One KVCache per layer. On a CPU the cache stays fp32 even for 16-bit weights: CPUs without native
        bf16 arithmetic run attention over bf16 keys about 2x slower, and the cache is small."""
        dtype = torch.float32 if device.type == "cpu" else None
        return [KVCache(self.config.block_size, dtype) for _ in self.blocks]

    def _decode_step(self, next_id: torch.Tensor, position: torch.Tensor, caches) -> torch.Tensor:
        """One token through the caches with every shape fixed: what `generate(engine="compile")` compiles."""
        return self(next_id, caches=caches, position=position)[0][:, -1]

    def _decode(self, next_id: torch.Tensor, caches, compiled_step=None, checked: bool = False) -> torch.Tensor:
        """The next logits after `next_id`. checked: an earlier step of this same loop already ran the compiled
        step with these exact inputs, so its guards (a check of every weight, ~0.1-0.3 ms) can be skipped."""
        if compiled_step is None:
            return self(next_id, caches=caches)[0][:, -1]
        position = torch.full((1,), caches[0].length, dtype=torch.long, device=next_id.device)
        stance = torch.compiler.set_stance("default", skip_guard_eval_unsafe=True) if checked else nullcontext()
        with stance:
            logits = compiled_step(next_id, position, caches)
        for cache in caches:
            cache.length += 1
        return logits

    def compiled_decode_step(self):
        """torch.compile of `_decode_step`, built once per model: one graph fuses each layer's small ops
        (norms, RoPE, attention for one query, residual adds) that otherwise cost more per token than the
        matrix products. On a CPU the graph is driven from C++ (cpp_wrapper), not from Python."""
        if self.__dict__.get("_compiled_decode_step") is None:
            on_cpu = next(self.parameters()).device.type == "cpu"
            self.__dict__["_compiled_decode_step"] = torch.compile(
                self._decode_step, fullgraph=True, options={"cpp_wrapper": True} if on_cpu else None)
        return self.__dict__["_compiled_decode_step"]

    def c_decoder(self):
        """The C decoding step (src/cdecode.c) holding this model's int8 weights, built once per model."""
        if self.__dict__.get("_c_decoder") is None:
            from cdecode import CDecoder
            self.__dict__["_c_decoder"] = CDecoder(self)
        return self.__dict__["_c_decoder"]

    @torch.inference_mode()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
                 generator: torch.Generator | None = None, on_token=None, engine: str = "eager") -> torch.Tensor:
        """Append `max_new_tokens` sampled tokens to idx (B, T). Cached by default: the prompt is
        prefilled once, then each step feeds only the newest token. on_token(ids (B, 1)) streams output.
        engine: how a cached step runs - "eager" (PyTorch op by op), "compile" (the step through torch.compile:
        same tokens, fewer overheads) or "c" (src/cdecode.c: batch 1, int8 RoPE models on a CPU)."""
        check_sampling_args(temperature, top_k, top_p)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if engine != "eager" and not use_cache:
            raise ValueError(f"engine {engine!r} runs the cached step; it needs use_cache=True")
        was_training = self.training
        self.eval()
        B, T0 = idx.shape
        out = torch.empty(B, T0 + max_new_tokens, dtype=idx.dtype, device=idx.device)
        out[:, :T0] = idx
        caches = step = None
        if use_cache and max_new_tokens > 0:
            if engine == "c":
                step = self.c_decoder()
                logits = step.start(idx[:, -self.context_length():])
            else:
                caches = self.new_caches(idx.device)
                logits = self._prefill(idx[:, -self.context_length():], caches)
            if engine == "compile":
                if self.rope is not None:
                    self.rope.tables(0, T0 + max_new_tokens)  # grow the table now, not inside the graph
                step = self.compiled_decode_step()
        for t in range(T0, T0 + max_new_tokens):
            if not use_cache:
                logits = self._uncached_logits(out[:, :t])
            next_id = sample_next(logits, temperature, top_k, top_p, generator)
            out[:, t:t + 1] = next_id
            if on_token is not None:
                on_token(next_id)
            if use_cache and t + 1 < T0 + max_new_tokens:
                if engine == "c":
                    logits = step.feed(next_id)
                elif self.rope is None and caches[0].length >= self.config.block_size:
                    # learned positions end at block_size: from here on, recompute the cropped window
                    caches = self.new_caches(idx.device)
                    logits = self._prefill(out[:, t + 1 - self.config.block_size:t + 1], caches)
                else:
                    logits = self._decode(next_id, caches, step, checked=t > T0)
        self.train(was_training)
        return out

    # ------------------------------------------------------------------------- saving / loading

    def save_pretrained(self, folder, tokenizer=None, record: dict | None = None) -> None:
        """Write `folder/model.safetensors` + `folder/config.json` (the Hugging Face Hub layout)."""
        from checkpoint import save_model_folder
        save_model_folder(folder, self, tokenizer or self.tokenizer, record or {})

    @classmethod
    def from_pretrained(cls, name_or_path, device: str | torch.device = "cpu", **hub_kwargs):
        """Load from a local checkpoint folder (run/, run/best, run/last) or a Hub repo id."""
        from checkpoint import load_model
        model, _record = load_model(name_or_path, device=device, expect=cls, **hub_kwargs)
        return model
