"""Our models in the ecosystem's layouts: Hugging Face transformers (Llama and GPT-2) and GGUF (llama.cpp).

The conversions (state dicts both ways, the transformers configs, the tokenizer files, the GGUF tensors and
metadata) and the two writers that put them in files: `save_hf_folder` and `save_gguf`. export.py and publish.py
call the writers; checkpoint.py reads a published folder back through `from_hf_state`.

What differs between the layouts, and why each mapping is exact:
- RoPE pairs. We rotate interleaved pairs (x[0], x[1]), (x[2], x[3]), ... of each head; transformers' Llama rotates
  halves (x[i], x[i + d/2]) (`rotate_half`). Reordering each head's query and key rows to [0, 2, 4, ..., 1, 3, 5,
  ...] turns one into the other: q . k is a sum over the same pairs, only stored in another order. llama.cpp's
  llama architecture rotates consecutive pairs like ours, so GGUF takes our rows as they are.
- Fused q/k/v. We project q, k and v with one (3C, C) matrix; Llama has three (C, C) ones, GPT-2 one (C, 3C).
- GPT-2 stores linear layers as Conv1D, the transpose of nn.Linear's (out, in), and has biases where our vanilla
  model has none (q/k/v): those get zeros.
- Special tokens. Our vocabularies have no BOS, EOS or PAD (GPT-2's has its <|endoftext|>): every other id is a
  real character or byte sequence. transformers gets none (None ids). llama.cpp insists on BOS and EOS ids inside
  the vocabulary (out of range, it falls back to fixed ids: newline, space and '!' of a char vocabulary, so it would
  stop at every '!'), so GGUF gets extra tokens after ours, with zero embedding rows (gguf_added_tokens).
- Tokenizers. A char vocabulary becomes llama.cpp's unigram ("t5") vocabulary, one token per character, in which a
  character the model never saw reads as <unk>. (Its SentencePiece "llama" vocabulary spells such a character as
  byte tokens, which a char vocabulary lacks, and llama.cpp aborted the process on it: a digit typed into
  llama-cli's prompt for a Shakespeare model.) A byte-level BPE (gpt2, our bpe:N) becomes the byte-level BPE of
  transformers' tokenizer.json and of llama.cpp's "gpt2" vocabulary: both pre-split text with GPT-2's regex, as
  ours do. Other tiktoken encodings (cl100k_base, o200k_base) pre-split with regexes of their own, so they are
  refused: the ids would differ.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from common import UserError
from model import GPT, GPTConfig
from modernize import halves_to_interleaved, interleaved_to_halves, swiglu_hidden_size

TINYLLM_CONFIG = "tinyllm.json"  # our own record next to transformers' config.json in a published folder
EXPORT_MARK = ".tinyllm-export"  # in every folder export.py or publish.py builds: the names of the files it wrote
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # GGUF of a char vocabulary only: llama.cpp's unknown, BOS and EOS
END_OF_TEXT = "<|endoftext|>"  # GGUF of our own BPE: BOS and EOS, as GPT-2's
GGUF_TYPES = ("f32", "f16", "q8_0")
GPT2_SPLIT_ENCODINGS = ("gpt2",)  # tiktoken encodings exported: their pre-split regex is GPT-2's


def check_exportable(model: GPT, to: str) -> None:
    config, tokenizer = model.config, model.tokenizer
    if config.architecture not in ("modern", "vanilla"):
        raise UserError(f"a {config.architecture} model has no transformers or llama.cpp equivalent; export vanilla "
                        "(GPT-2) or modern (Llama) checkpoints")
    if tokenizer is not None and tokenizer.kind == "tiktoken" and tokenizer.name not in GPT2_SPLIT_ENCODINGS:
        raise UserError(f"a {tokenizer.name} checkpoint does not export: transformers and llama.cpp would pre-split "
                        f"its text with GPT-2's regex, not {tokenizer.name}'s, and give other ids; export char, "
                        "bpe:N or gpt2 checkpoints")
    if to == "gguf" and config.architecture != "modern":
        raise UserError("--to gguf exports modern (Llama-architecture) checkpoints; llama.cpp has no architecture "
                        "for a vanilla one (its gpt2 computes GELU where ours computes ReLU): export it with --to hf "
                        "for transformers")
    unheld = gguf_unrepresentable_chars(tokenizer) if to == "gguf" else ""
    if unheld:
        raise UserError(f"llama.cpp's vocabulary cannot hold the character(s) {unheld!r} of this char vocabulary "
                        "(U+2581 is its mark for a space, and its tokenizer reads a NUL as unknown): export it with "
                        "--to hf, or train on text without them")


# ----------------------------------------------------------------------------- transformers: Llama and GPT-2

def hf_config(config: GPTConfig) -> dict:
    """config.json for LlamaForCausalLM (modern) or GPT2LMHeadModel (vanilla): no special token ids at all."""
    c = config
    common = {"vocab_size": c.vocab_size, "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
              "tie_word_embeddings": True, "torch_dtype": "float32"}
    if c.architecture == "modern":
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **common,
                "hidden_size": c.n_embd, "intermediate_size": swiglu_hidden_size(c.n_embd),
                "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "num_key_value_heads": c.n_head,
                "head_dim": c.n_embd // c.n_head, "hidden_act": "silu", "max_position_embeddings": c.block_size,
                "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
                "rope_theta": c.rope_theta, "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
                "initializer_range": 0.02, "use_cache": True}
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", **common, "n_embd": c.n_embd,
            "n_layer": c.n_layer, "n_head": c.n_head, "n_positions": c.block_size, "n_ctx": c.block_size,
            "n_inner": 4 * c.n_embd, "activation_function": "relu", "layer_norm_epsilon": 1e-5,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True,
            "initializer_range": 0.02, "use_cache": True}


def to_hf_state(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under transformers' names and layouts (the tied output layer is the embedding: not stored)."""
    c, C = model.config, model.config.n_embd
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out = {}
    if c.architecture == "modern":
        out["model.embed_tokens.weight"] = sd["tok_emb.weight"]
        out["model.norm.weight"] = sd["norm_f.weight"]
        for i in range(c.n_layer):
            p, h = f"blocks.{i}.", f"model.layers.{i}."
            q, k, v = sd[p + "attn.qkv.weight"].split(C)
            out |= {h + "input_layernorm.weight": sd[p + "norm1.weight"],
                    h + "self_attn.q_proj.weight": interleaved_to_halves(q, c.n_head),
                    h + "self_attn.k_proj.weight": interleaved_to_halves(k, c.n_head),
                    h + "self_attn.v_proj.weight": v, h + "self_attn.o_proj.weight": sd[p + "attn.proj.weight"],
                    h + "post_attention_layernorm.weight": sd[p + "norm2.weight"],
                    h + "mlp.gate_proj.weight": sd[p + "ffn.gate.weight"], h + "mlp.up_proj.weight": sd[p + "ffn.up.weight"],
                    h + "mlp.down_proj.weight": sd[p + "ffn.down.weight"]}
        return {k: v.contiguous() for k, v in out.items()}
    out |= {"transformer.wte.weight": sd["tok_emb.weight"], "transformer.wpe.weight": sd["pos_emb.weight"],
            "transformer.ln_f.weight": sd["norm_f.weight"], "transformer.ln_f.bias": sd["norm_f.bias"]}
    for i in range(c.n_layer):
        p, h = f"blocks.{i}.", f"transformer.h.{i}."
        proj_bias = sd.get(p + "attn.proj.bias", torch.zeros(C))
        out |= {h + "ln_1.weight": sd[p + "norm1.weight"], h + "ln_1.bias": sd[p + "norm1.bias"],
                h + "attn.c_attn.weight": sd[p + "attn.qkv.weight"].T, h + "attn.c_attn.bias": torch.zeros(3 * C),
                h + "attn.c_proj.weight": sd[p + "attn.proj.weight"].T, h + "attn.c_proj.bias": proj_bias,
                h + "ln_2.weight": sd[p + "norm2.weight"], h + "ln_2.bias": sd[p + "norm2.bias"],
                h + "mlp.c_fc.weight": sd[p + "ffn.up.weight"].T, h + "mlp.c_fc.bias": sd[p + "ffn.up.bias"],
                h + "mlp.c_proj.weight": sd[p + "ffn.down.weight"].T, h + "mlp.c_proj.bias": sd[p + "ffn.down.bias"]}
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_state(state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """The inverse of to_hf_state: a published folder's weights under our names (for load_model)."""
    c = config
    out = {}
    try:
        if c.architecture == "modern":
            out |= {"tok_emb.weight": state["model.embed_tokens.weight"], "norm_f.weight": state["model.norm.weight"]}
            for i in range(c.n_layer):
                p, h = f"blocks.{i}.", f"model.layers.{i}."
                q = halves_to_interleaved(state[h + "self_attn.q_proj.weight"], c.n_head)
                k = halves_to_interleaved(state[h + "self_attn.k_proj.weight"], c.n_head)
                out |= {p + "norm1.weight": state[h + "input_layernorm.weight"],
                        p + "attn.qkv.weight": torch.cat([q, k, state[h + "self_attn.v_proj.weight"]]),
                        p + "attn.proj.weight": state[h + "self_attn.o_proj.weight"],
                        p + "norm2.weight": state[h + "post_attention_layernorm.weight"],
                        p + "ffn.gate.weight": state[h + "mlp.gate_proj.weight"],
                        p + "ffn.up.weight": state[h + "mlp.up_proj.weight"],
                        p + "ffn.down.weight": state[h + "mlp.down_proj.weight"]}
        else:
            out |= {"tok_emb.weight": state["transformer.wte.weight"], "pos_emb.weight": state["transformer.wpe.weight"],
                    "norm_f.weight": state["transformer.ln_f.weight"], "norm_f.bias": state["transformer.ln_f.bias"]}
            for i in range(c.n_layer):
                p, h = f"blocks.{i}.", f"transformer.h.{i}."
                out |= {p + "norm1.weight": state[h + "ln_1.weight"], p + "norm1.bias": state[h + "ln_1.bias"],
                        p + "attn.qkv.weight": state[h + "attn.c_attn.weight"].T,
                        p + "attn.proj.weight": state[h + "attn.c_proj.weight"].T,
                        p + "norm2.weight": state[h + "ln_2.weight"], p + "norm2.bias": state[h + "ln_2.bias"],
                        p + "ffn.up.weight": state[h + "mlp.c_fc.weight"].T, p + "ffn.up.bias": state[h + "mlp.c_fc.bias"],
                        p + "ffn.down.weight": state[h + "mlp.c_proj.weight"].T,
                        p + "ffn.down.bias": state[h + "mlp.c_proj.bias"]}
                if c.attn_proj_bias:
                    out[p + "attn.proj.bias"] = state[h + "attn.c_proj.bias"]
    except KeyError as err:
        raise UserError(f"the published weights lack {err.args[0]}; the folder is damaged or not a tinyllm export") from None
    return {k: v.contiguous() for k, v in out.items()}


# ----------------------------------------------------------------------------- tokenizers for transformers

def hf_tokenizer_files(tokenizer, block_size: int) -> dict[str, str]:
    """tokenizer.json + tokenizer_config.json for transformers' PreTrainedTokenizerFast, giving exactly our ids.

    char: a BPE model with one token per character and no merges, so every character stays its own token
    (newline and space are plain tokens), and a Fuse decoder that joins them with nothing between.
    gpt2 and bpe:N: byte-level BPE with GPT-2's pre-split regex, the merges in our (tiktoken's) rank order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    if tokenizer.kind == "char":
        hf = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(tokenizer.chars)}, merges=[]))
        hf.decoder = decoders.Fuse()
    else:
        vocab, merges = byte_level_vocab_and_merges(tokenizer)
        hf = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
    special = {}
    if tokenizer.kind == "tiktoken":  # GPT-2's own end-of-text token, a real row of its 50,257
        hf.add_special_tokens(["<|endoftext|>"])
        special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
              "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False, **special}
    return {"tokenizer.json": hf.to_str(), "tokenizer_config.json": json.dumps(config, indent=2) + "\n"}


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte, as byte-level BPE vocabularies store tokens: printable ASCII and
    Latin-1 bytes stand for themselves, the others are shifted to code points 256 and up."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


def byte_level_vocab_and_merges(tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Token strings and merges of a byte-level BPE, from its token bytes in rank order (id = rank)."""
    pieces = token_pieces(tokenizer)
    to_text = bytes_to_unicode()
    text = ["".join(to_text[b] for b in piece) for piece in pieces]
    vocab = {t: i for i, t in enumerate(text) if t}
    if tokenizer.kind == "bpe":
        merges = [(text[a], text[b]) for a, b in tokenizer.merges]
    else:  # tiktoken keeps only ranks: each multi-byte token is the merge of the two parts BPE splits it into
        rank = {piece: i for i, piece in enumerate(pieces) if piece}
        merges = [tuple("".join(to_text[b] for b in part) for part in split_by_ranks(piece, rank))
                  for piece in pieces if len(piece) > 1]
    return vocab, merges


def token_pieces(tokenizer) -> list[bytes]:
    """The bytes of every token id (b"" for special tokens such as <|endoftext|>, which byte-level BPE lacks)."""
    encoding = tokenizer.encoding
    special = set(getattr(encoding, "special_tokens_set", ()))
    out = []
    for i in range(tokenizer.vocab_size):
        try:
            out.append(encoding.decode_single_token_bytes(i))
        except KeyError:
            out.append(b"")
        if out[-1].decode("utf-8", "replace") in special:
            out[-1] = b""
    return out


def split_by_ranks(piece: bytes, rank: dict[bytes, int]) -> tuple[bytes, bytes]:
    """Run BPE on `piece` with the merges ranked below its own: it stops at the two parts it was merged from."""
    parts = [bytes([b]) for b in piece]
    limit = rank[piece]
    while len(parts) > 2:
        best = min(range(len(parts) - 1), key=lambda i: rank.get(parts[i] + parts[i + 1], math.inf))
        if rank.get(parts[best] + parts[best + 1], math.inf) >= limit:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise UserError(f"cannot recover the merge of token {piece!r} from the tokenizer's ranks")
    return parts[0], parts[1]


def generation_config() -> dict:
    return {"do_sample": True, "temperature": 0.8, "top_k": 50, "bos_token_id": None, "eos_token_id": None,
            "pad_token_id": None}


# ----------------------------------------------------------------------------- GGUF for llama.cpp

def gguf_added_tokens(tokenizer) -> tuple[str, ...]:
    """The special tokens GGUF appends after ours, which no text can produce: llama.cpp's unknown, BOS and EOS for
    a char vocabulary, <|endoftext|> for our BPE; none for GPT-2's, whose <|endoftext|> is a row of its own."""
    return {"char": SPECIAL_TOKENS, "bpe": (END_OF_TEXT,)}.get(tokenizer.kind, ())


def gguf_unrepresentable_chars(tokenizer) -> str:
    """The characters of a char vocabulary that llama.cpp's vocabulary cannot hold as tokens of their own: U+2581
    ('▁'), which stands for a space there (a text holding both made llama-cpp-python 0.3.36 abort; '▁' alone reads
    back as a space), and NUL, which its tokenizer reads as an unknown character."""
    if tokenizer is None or tokenizer.kind != "char":
        return ""
    return "".join(ch for ch in ("\x00", "\u2581") if ch in tokenizer.stoi)


def char_vocab(tokenizer) -> tuple[list[str], list[int]]:
    """Tokens and types of llama.cpp's unigram ("t5") vocabulary: space is '▁' (SentencePiece's word boundary, which
    the tokenizer writes for every space), every other character itself."""
    import gguf
    tokens = ["\u2581" if ch == " " else ch for ch in tokenizer.chars]
    return tokens, [gguf.TokenType.NORMAL] * len(tokens)


def byte_level_vocab(tokenizer) -> tuple[list[str], list[int], list[str]]:
    """Tokens, types and merges ("a b") of llama.cpp's byte-level BPE ("gpt2") vocabulary: transformers' tokens, so
    the same bytes_to_unicode stand-ins; GPT-2's <|endoftext|> is a control token."""
    import gguf
    vocab, merges = byte_level_vocab_and_merges(tokenizer)
    tokens = [END_OF_TEXT] * tokenizer.vocab_size  # the one id without bytes: GPT-2's end of text
    types = [gguf.TokenType.CONTROL] * tokenizer.vocab_size
    for text, i in vocab.items():
        tokens[i], types[i] = text, gguf.TokenType.NORMAL
    return tokens, types, [f"{a} {b}" for a, b in merges]


def gguf_vocab(tokenizer) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges (none for a char vocabulary), the added special tokens included."""
    import gguf
    if tokenizer.kind == "char":
        tokens, types, merges = *char_vocab(tokenizer), []
    else:
        tokens, types, merges = byte_level_vocab(tokenizer)
    added = gguf_added_tokens(tokenizer)
    kinds = {"<unk>": gguf.TokenType.UNKNOWN}
    return tokens + list(added), types + [kinds.get(t, gguf.TokenType.CONTROL) for t in added], merges


def gguf_metadata(writer, config: GPTConfig, tokenizer, name: str) -> None:
    """llama.cpp's llama architecture, sized as ours; the vocabulary of gguf_vocab; no BOS added, no space prefix."""
    import gguf
    c = config
    tokens, types, merges = gguf_vocab(tokenizer)
    writer.add_name(name)
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_feed_forward_length(swiglu_hidden_size(c.n_embd))
    writer.add_head_count(c.n_head)
    writer.add_head_count_kv(c.n_head)
    writer.add_rope_dimension_count(c.n_embd // c.n_head)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(tokens))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if tokenizer.kind == "char":  # unigram: every token equally likely, so each character is its own token
        writer.add_tokenizer_model("t5")
        writer.add_token_scores([-math.log(tokenizer.vocab_size)] * len(tokens))
        writer.add_remove_extra_whitespaces(False)  # T5 squeezes runs of spaces; our ids keep every one
        writer.add_unk_token_id(tokens.index("<unk>"))
        bos, eos = tokens.index("<s>"), tokens.index("</s>")
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")  # GPT-2's pre-split regex, as ours
        writer.add_token_merges(merges)
        bos = eos = types.index(gguf.TokenType.CONTROL)  # <|endoftext|>: GPT-2's own, or the one added to ours
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)


def gguf_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under llama.cpp's names, q/k rows unchanged (its llama RoPE rotates consecutive pairs, like
    ours). The embedding (also the output layer: no output.weight, llama.cpp ties it) gains a zero row for each added
    special token: never looked up, since no text tokenizes to them and no BOS is added, and their logit is 0."""
    c, C = model.config, model.config.n_embd
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    added = len(gguf_added_tokens(model.tokenizer))
    out = {"token_embd.weight": torch.cat([sd["tok_emb.weight"], torch.zeros(added, C)]),
           "output_norm.weight": sd["norm_f.weight"]}
    for i in range(c.n_layer):
        p, b = f"blocks.{i}.", f"blk.{i}."
        q, k, v = sd[p + "attn.qkv.weight"].split(C)
        out |= {b + "attn_norm.weight": sd[p + "norm1.weight"], b + "attn_q.weight": q, b + "attn_k.weight": k,
                b + "attn_v.weight": v, b + "attn_output.weight": sd[p + "attn.proj.weight"],
                b + "ffn_norm.weight": sd[p + "norm2.weight"], b + "ffn_gate.weight": sd[p + "ffn.gate.weight"],
                b + "ffn_up.weight": sd[p + "ffn.up.weight"], b + "ffn_down.weight": sd[p + "ffn.down.weight"]}
    return {k: v.contiguous() for k, v in out.items()}


def gguf_encode(tensor: torch.Tensor, gguf_type: str):
    """(data, raw dtype or None) of one tensor in the file's type. Norms (vectors) stay f32, as llama.cpp's own
    converter keeps them; q8_0 blocks hold 32 weights, so a matrix whose rows are not a multiple of 32 stays f16."""
    import gguf
    array = tensor.numpy()
    if array.ndim == 1 or gguf_type == "f32":
        return array.astype(np.float32), None
    if gguf_type == "q8_0" and array.shape[-1] % 32 == 0:
        return gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return array.astype(np.float16), None


GGUF_FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}  # llama.cpp's LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_Q8_0


# ----------------------------------------------------------------------------- the writers

def is_earlier_export(path: Path) -> bool:
    """A folder that export.py or publish.py built (its mark lists every file in it, and nothing else is there),
    or a GGUF file: what an export may replace. Anything else may hold a user's files and is never replaced."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    try:
        listed = set(json.loads((path / EXPORT_MARK).read_text())) | {EXPORT_MARK}
    except (OSError, ValueError, TypeError):
        return False
    return {p.name for p in path.iterdir()} <= listed


def save_hf_folder(folder: Path, model: GPT, record: dict) -> list[str]:
    """Write a transformers model folder into `folder` (which exists and is empty): config.json, model.safetensors,
    generation_config.json, the tokenizer files, and tinyllm.json, our own record (config, tokenizer, training
    record), so checkpoint.load_model reads the same folder back. Returns the file names."""
    from safetensors.torch import save
    c = model.config
    check_exportable(model, "hf")
    files = {"config.json": json.dumps(hf_config(c), indent=2) + "\n",
             "generation_config.json": json.dumps(generation_config(), indent=2) + "\n",
             **hf_tokenizer_files(model.tokenizer, c.block_size),
             TINYLLM_CONFIG: json.dumps({**record, "format": "tinyllm/1", "layout": "transformers",
                                         "architecture": c.architecture, "model": c.to_dict(),
                                         "tokenizer": model.tokenizer.to_dict(), "params": model.num_params()},
                                        indent=2) + "\n"}
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    # written as bytes like every other file: safetensors' save_file (0.8) makes the file readable by its owner only
    (folder / "model.safetensors").write_bytes(save(to_hf_state(model), metadata={"format": "pt"}))
    return sorted([*files, "model.safetensors"])


def save_gguf(path: Path, model: GPT, gguf_type: str, name: str) -> None:
    """Write `model` (modern) as one GGUF file of llama.cpp's llama architecture."""
    import gguf
    check_exportable(model, "gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    gguf_metadata(writer, model.config, model.tokenizer, name)
    writer.add_file_type(GGUF_FILE_TYPES[gguf_type])
    for tensor_name, tensor in gguf_tensors(model).items():
        data, raw_dtype = gguf_encode(tensor, gguf_type)
        writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
