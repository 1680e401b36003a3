"""ModernGPT: the same GPT with every LLaMA/Qwen-style switch on, and the three calls a user of it needs.

RMSNorm instead of LayerNorm, SwiGLU instead of ReLU, RoPE instead of a learned position table, no bias on the
attention output projection (`model.CONFIGS["modern"]`). 10,646,784 parameters at the reference size with the
65-char vocabulary.

    import sys; sys.path.insert(0, "src")
    from model_modern import ModernGPT
    model = ModernGPT(vocab_size=65, n_embd=384, n_heads=6, n_layer=6, block_size=256, dropout=0.0)
    out = model.generate(idx, max_new_tokens=200, temperature=0.8)   # KV-cached, through engine.py
    model = ModernGPT.from_pretrained("checkpoints/modern")           # or a Hub repo id
"""
from __future__ import annotations

import checkpoint
import engine as inference
from model import GPT, GPTConfig


def modern_config(**overrides) -> GPTConfig:
    """The reference modern config; keyword arguments override any field (`n_heads` = `n_head`)."""
    if "n_heads" in overrides:
        overrides["n_head"] = overrides.pop("n_heads")
    return GPTConfig.named("modern", **overrides)


class ModernGPT(GPT):
    """GPT with the modern switches. Pass a GPTConfig, or keyword arguments for `modern_config`."""

    def __init__(self, config: GPTConfig | None = None, **kwargs):
        super().__init__(config if config is not None else modern_config(**kwargs))

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator=None, use_cache: bool = True, engine: str = "eager"):
        """Append `max_new_tokens` sampled tokens to idx (B, T) with engine.generate (use_cache=False: no KV
        cache; engine: "eager", "compile" or "c")."""
        return inference.generate(self, idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache,
                                  engine=engine)

    @classmethod
    def from_pretrained(cls, name_or_path, device="cpu", **hub_kwargs) -> "ModernGPT":
        """A local checkpoint folder (run/, run/best, run/last) or a Hugging Face Hub repo id, with its tokenizer."""
        return checkpoint.load_model(name_or_path, device, build=cls, architecture="modern", **hub_kwargs)[0]

    def save_pretrained(self, folder) -> None:
        """`folder/model.safetensors` + `folder/config.json`, the checkpoint format of checkpoint.py."""
        checkpoint.save_model_folder(folder, self, self.tokenizer, {})
