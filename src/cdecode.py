"""The C decoding step (src/cdecode.c): build it, hand it a ModernGPT's fp32 or int8 weights, run it one token at a time.

engine.py uses it (engine "c", and "auto" where it can run) for batch-1 decoding on a CPU. The library is compiled once per source
version and compiler flags with the system C compiler and kept in ~/.cache/tinyllm (or $TINYLLM_CACHE_DIR);
ctypes calls it with pointers into tensors this object owns, so nothing is copied per token.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from device import cpu_identity
from quantize import Int8Linear

SOURCE = Path(__file__).with_name("cdecode.c")
# tried in order: AVX-512/AVX2/NEON for this CPU and threads; without OpenMP (e.g. Apple clang); plain
FLAG_SETS = (["-O3", "-march=native", "-fopenmp"], ["-O3", "-march=native"], ["-O3"])
LAYER_FIELDS = ("norm1", "norm2", "qkv", "proj", "gate", "up", "down",
                "qkv_scale", "proj_scale", "gate_scale", "up_scale", "down_scale", "keys", "values")
SCRATCH = ("x", "h", "qkv", "att", "hidden_act", "scores", "cos", "sin")


class _Layer(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in LAYER_FIELDS]


class _Model(ctypes.Structure):
    _fields_ = ([(name, ctypes.c_int) for name in ("n_layer", "n_head", "head_dim", "dim", "hidden", "vocab",
                                                   "capacity", "threads", "int8_weights")]
                + [("eps", ctypes.c_float)]
                + [(name, ctypes.c_void_p) for name in ("embedding", "norm_f", "inv_freq", "layers", *SCRATCH)])


def find_c_compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("TINYLLM_CACHE_DIR") or Path.home() / ".cache" / "tinyllm")


def build_library() -> Path:
    """Path of the compiled library, building it if this source and compiler have not been built before.
    The build writes a temporary file and renames it, so a killed build never leaves a broken library."""
    compiler = find_c_compiler()
    if compiler is None:
        raise RuntimeError("the C decoder needs a C compiler (cc, gcc or clang); install one or decode with PyTorch")
    try:
        return _build(compiler, SOURCE.read_bytes())
    except OSError as err:
        raise RuntimeError(f"cannot build the C decoder in {cache_dir()} ({err.strerror}); "
                           "set TINYLLM_CACHE_DIR to a writable folder") from None


def _build(compiler: str, source: bytes) -> Path:
    cache_dir().mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in FLAG_SETS:
        # -march=native code runs only on CPUs with the builder's instruction sets: a home folder can be shared by
        # several machines, or outlive a virtual machine moved to another CPU under the same host name
        key = hashlib.sha256(source + " ".join([compiler, *flags, platform.node(), cpu_identity()]).encode())
        target = cache_dir() / f"cdecode-{key.hexdigest()[:16]}.so"
        if target.exists():
            return target
        fd, partial = tempfile.mkstemp(prefix="partial-", suffix=".so", dir=cache_dir())
        os.close(fd)
        try:
            built = subprocess.run([compiler, *flags, "-shared", "-fPIC", str(SOURCE), "-o", partial, "-lm"],
                                   capture_output=True, text=True)
            if built.returncode == 0:
                os.replace(partial, target)
                return target
        finally:  # a failed build, or Ctrl-C during it, leaves no partial file behind
            if os.path.exists(partial):
                os.unlink(partial)
        errors.append((built.stderr.strip().splitlines() or [f"exit status {built.returncode}"])[-1])
    raise RuntimeError(f"could not build {SOURCE.name} with {compiler}: {errors[0]}")


def load_library() -> ctypes.CDLL:
    path = build_library()
    try:
        library = ctypes.CDLL(str(path))
    except OSError as err:  # e.g. the OpenMP runtime it was linked with is missing
        raise RuntimeError(f"cannot load the C decoder {path}: {err}") from None
    library.decode_step.argtypes = [ctypes.POINTER(_Model), ctypes.c_int, ctypes.c_int64, ctypes.c_void_p]
    library.decode_step.restype = None
    return library


def block_linears(model) -> list:
    return [m for b in model.blocks for m in (b.attn.qkv, b.attn.proj, b.ffn.gate, b.ffn.up, b.ffn.down)]


def unsupported_reason(model) -> str | None:
    """Why the C step cannot run this model (None if it can): it implements the modern block, on the CPU, with
    fp32 weights or int8 ones (quantize.py)."""
    if model.config.architecture != "modern":
        return "the C decoder runs the modern architecture (RMSNorm, SwiGLU, RoPE); this model is not one"
    if model.tok_emb.weight.device.type != "cpu":
        return "the C decoder runs on the CPU; move the model there (--device cpu)"
    linears = block_linears(model)
    int8 = all(isinstance(m, Int8Linear) for m in linears)
    fp32 = all(isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float32 for m in linears)
    if not (int8 or fp32) or model.tok_emb.weight.dtype != torch.float32 and not int8:
        return "the C decoder runs fp32 or int8 weights (--dtype fp32 or int8), not bf16 or fp16"
    return None


class CDecoder:
    """A model's weights laid out for cdecode.c, plus its KV cache: `start()`, then `feed(token)` per token."""

    def __init__(self, model):
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(reason)
        self.library = load_library()
        c = model.config
        head_dim, hidden = c.n_embd // c.n_head, model.blocks[0].ffn.gate.out_features
        self.tensors = []  # everything the C structs point into, kept alive here
        self.layers = (_Layer * c.n_layer)()
        int8 = isinstance(model.blocks[0].attn.qkv, Int8Linear)
        for block, layer in zip(model.blocks, self.layers):
            attn, ffn = block.attn, block.ffn
            for name, weight in (("norm1", block.norm1.weight), ("norm2", block.norm2.weight)):
                setattr(layer, name, self._pointer(weight.float()))
            for name, linear in (("qkv", attn.qkv), ("proj", attn.proj), ("gate", ffn.gate), ("up", ffn.up),
                                 ("down", ffn.down)):
                # fp32 weights are the model's own tensors (no copy: 40 MB at the reference size)
                setattr(layer, name, self._pointer(linear.q if int8 else linear.weight))
                if int8:
                    setattr(layer, f"{name}_scale", self._pointer(linear.scale.float()))
            layer.keys = self._pointer(torch.zeros(c.n_head, c.block_size, head_dim))
            layer.values = self._pointer(torch.zeros(c.n_head, c.block_size, head_dim))
        sizes = {"x": c.n_embd, "h": c.n_embd, "qkv": 3 * c.n_embd, "att": c.n_embd, "hidden_act": hidden,
                 "scores": c.n_head * c.block_size, "cos": head_dim // 2, "sin": head_dim // 2}
        self.logits = torch.zeros(1, c.vocab_size)
        self.model = _Model(c.n_layer, c.n_head, head_dim, c.n_embd, hidden, c.vocab_size, c.block_size,
                            torch.get_num_threads(), int(int8), model.norm_f.eps,
                            self._pointer(model.tok_emb.weight.float()), self._pointer(model.norm_f.weight.float()),
                            self._pointer(model.rope.inv_freq.double()), ctypes.addressof(self.layers),
                            *(self._pointer(torch.zeros(sizes[name])) for name in SCRATCH))
        self.position = 0

    def _pointer(self, tensor: torch.Tensor) -> int:
        tensor = tensor.detach().contiguous()
        self.tensors.append(tensor)
        return tensor.data_ptr()

    def start(self, tokens: torch.Tensor) -> torch.Tensor:
        """Empty the cache and feed a (1, T) prompt; returns the logits (1, vocab) after its last token."""
        if tokens.dim() != 2 or tokens.size(0) != 1:
            raise ValueError(f"the C decoder runs batch 1; got token ids of shape {tuple(tokens.shape)}")
        self.position = 0
        for token in tokens[0].tolist():
            logits = self.feed(token)
        return logits

    def feed(self, token) -> torch.Tensor:
        """One token (an int or a 1-element tensor) at the next position -> logits (1, vocab) for the one after."""
        token = int(token)
        if not 0 <= token < self.model.vocab:  # C would read outside the embedding
            raise ValueError(f"token id {token} is outside the vocabulary (0..{self.model.vocab - 1})")
        self.model.threads = torch.get_num_threads()
        self.library.decode_step(ctypes.byref(self.model), token, self.position, self.logits.data_ptr())
        self.position += 1
        return self.logits.clone()
