"""The GPT model family: one config, one model class, every variant a config change.

Vanilla GPT (GPT-2 style) is the dataclass's defaults. Each modernisation is a switch: `norm` layernorm ->
rmsnorm, `ffn` relu -> swiglu (or relu2), `pos` learned -> rope, no bias on the attention output. `CONFIGS`
names the two ends ("vanilla", "modern"); `GPTConfig.named("modern", n_layer=4)` builds one.

This file computes logits and nothing else. Generating text (the KV cache, sampling, the fast decoding
engines) is engine.py's job; reading and writing checkpoints is checkpoint.py's.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from checks import check_bool, check_choice, check_float, check_int
from common import UserError
from dropout import Dropout
from modernize import RotaryEmbedding
from transformer import Block, make_norm

CHOICES = {"norm": ("layernorm", "rmsnorm"), "ffn": ("relu", "swiglu", "relu2"), "pos": ("learned", "rope")}
LIMITS = {"vocab_size": 2**20, "block_size": 2**16, "n_layer": 1024, "n_head": 1024, "n_embd": 2**16}  # sanity bounds
CONFIGS = {  # the named architectures: GPT-2 as the original project built it, and LLaMA/Qwen's switches
    "vanilla": dict(norm="layernorm", ffn="relu", pos="learned", attn_proj_bias=True),
    "modern": dict(norm="rmsnorm", ffn="swiglu", pos="rope", attn_proj_bias=False),
}


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

    @classmethod
    def named(cls, name: str, **overrides) -> "GPTConfig":
        """A named architecture (CONFIGS) at the reference size; keyword arguments override any field."""
        return cls(**{**CONFIGS[name], **overrides})

    @property
    def architecture(self) -> str:
        """"vanilla", "modern", or custom(norm,ffn,pos) for a mix of the switches."""
        for name, switches in CONFIGS.items():
            if all(getattr(self, k) == v for k, v in switches.items()):
                return name
        return f"custom({self.norm},{self.ffn},{self.pos})"

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
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise UserError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


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
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = make_norm(config.norm, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # How far back a token may attend: block_size, the span training showed it. Only sequences longer than
        # block_size (RoPE models) feel it: each layer then attends over a sliding window, as the KV cache does.
        # None lifts the limit (experiments/swap3_rope.py measures full attention that way).
        self.attention_window: int | None = config.block_size
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

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache=None):
        """idx (B, T) token ids -> (logits (B, T, vocab), loss or None).

        cache: an engine.Cache. Its layers store this chunk's keys and values and let it attend to every token
        stored before; it also says at which absolute position the chunk starts.
        """
        B, T = idx.shape
        if cache is None:
            positions, end = torch.arange(T, device=idx.device), T
        else:
            positions, end = cache.positions(T, idx.device)
        x = self.tok_emb(idx)
        rope = None
        if self.pos_emb is not None:
            if end is not None and end > self.config.block_size:
                raise ValueError(f"sequence of {end} tokens exceeds block_size {self.config.block_size} "
                                 "(learned position embeddings stop there)")
            x = x + self.pos_emb(positions)
        else:
            if end is not None:
                self.rope.reserve(end)
            rope = self.rope.at(positions)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, cache.layers[i] if cache is not None else None, self.attention_window)
        logits = self.lm_head(self.norm_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
