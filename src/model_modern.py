"""ModernGPT: the same GPT with every LLaMA/Qwen-style switch on.

RMSNorm instead of LayerNorm, SwiGLU instead of ReLU, RoPE instead of a learned position table,
no bias on the attention output projection, and KV-cached generation (in `GPT.generate`).
10,646,784 parameters at the reference size with the 65-char vocabulary.

    import sys; sys.path.append('src')
    from model_modern import ModernGPT
    model = ModernGPT(vocab_size=65, n_embd=384, n_heads=6, n_layer=6, block_size=256, dropout=0.0)
    out = model.generate(idx, max_new_tokens=200, temperature=0.8)   # cached; use_cache=False to compare
"""
from __future__ import annotations

from model import GPT, GPTConfig

MODERN_SWITCHES = dict(norm="rmsnorm", ffn="swiglu", pos="rope", attn_proj_bias=False)


def modern_config(**overrides) -> GPTConfig:
    """The reference modern config; keyword arguments override any field (`n_heads` = `n_head`)."""
    if "n_heads" in overrides:
        overrides["n_head"] = overrides.pop("n_heads")
    return GPTConfig(**{**MODERN_SWITCHES, **overrides})


class ModernGPT(GPT):
    """GPT with the modern switches. Pass a GPTConfig, or keyword arguments for `modern_config`."""

    def __init__(self, config: GPTConfig | None = None, **kwargs):
        super().__init__(config if config is not None else modern_config(**kwargs))
