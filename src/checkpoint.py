"""The one checkpoint format: `model.safetensors` + `config.json` per folder (the Hugging Face Hub layout).

    checkpoints/<run>/best/   model.safetensors, config.json            (best val loss so far)
    checkpoints/<run>/last/   model.safetensors, config.json, train_state.pt (optimizer, RNG, step, history)
    checkpoints/<run>/history.json, summary.json

Why safetensors: a pickled `.pt` can run arbitrary code when loaded; safetensors holds only tensors.
The optimizer state still needs `torch.save`, and is read back with `weights_only=True`, which refuses
anything but tensors and plain containers.

A folder is replaced atomically: written as a hidden temp folder, then swapped in by renames. A crash at
any moment leaves either the old or the new folder (and `recover` puts an interrupted swap back).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from common import REPO_ROOT, UserError, atomic_write_bytes, atomic_write_json
from model import GPT, GPTConfig
from tokenizer import tokenizer_from_dict

FORMAT = "tinyllm/1"
WEIGHTS, CONFIG, TRAIN_STATE = "model.safetensors", "config.json", "train_state.pt"
TIED_KEYS = ("lm_head.weight",)  # same tensor as tok_emb.weight: stored once


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def architecture_name(config: GPTConfig) -> str:
    from model_modern import MODERN_SWITCHES
    if all(getattr(config, k) == v for k, v in MODERN_SWITCHES.items()):
        return "modern"
    if (config.norm, config.ffn, config.pos, config.attn_proj_bias) == ("layernorm", "relu", "learned", True):
        return "vanilla"
    return f"custom({config.norm},{config.ffn},{config.pos})"


def save_model_folder(folder, model, tokenizer, record: dict) -> None:
    """Write weights and config into `folder` (each file atomically)."""
    model = unwrap(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in TIED_KEYS}
    atomic_write_bytes(folder / WEIGHTS, save_safetensors_bytes(state, metadata={"format": "pt"}))
    config = {"format": FORMAT, "architecture": architecture_name(model.config), "model": model.config.to_dict(),
              "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
              "params": model.num_params(), **record}
    atomic_write_json(folder / CONFIG, config)


def recover(run_dir) -> None:
    """Finish or undo a folder swap that a crash interrupted, and delete leftover temp folders."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for entry in run_dir.iterdir():
        if entry.name.startswith(".") and ".tmp-" in entry.name:
            shutil.rmtree(entry, ignore_errors=True)
    for entry in run_dir.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(".old"):
            live = run_dir / entry.name[1:-len(".old")]
            if live.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                os.replace(entry, live)


def save_checkpoint(folder, model, tokenizer, record: dict, train_state: dict | None = None) -> None:
    """Atomically replace `folder` with a new checkpoint (weights, config, optional training state)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover(folder.parent)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    old = folder.parent / f".{folder.name}.old"
    try:
        save_model_folder(tmp, model, tokenizer, record)
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- loading

def resolve_folder(name_or_path, **hub_kwargs) -> Path:
    """A run folder (-> its best/, else last/), a checkpoint folder, or a Hugging Face Hub repo id."""
    path = Path(name_or_path)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    recover(path.parent)  # a crash between the renames of a swap leaves only .<name>.old
    if path.is_dir():
        recover(path)
        if (path / CONFIG).exists():
            return path
        for sub in ("best", "last"):
            if (path / sub / CONFIG).exists():
                return path / sub
        raise UserError(f"no checkpoint in {path} (no config.json there or in best/ or last/); train one first")
    text = str(name_or_path)
    if text.count("/") == 1 and not text.startswith((".", "/")) and not path.exists():
        return download_from_hub(text, **hub_kwargs)
    raise UserError(f"checkpoint {name_or_path} not found; pass a run folder such as checkpoints/modern, "
                    "or a Hugging Face repo id user/name")


def download_from_hub(repo_id: str, **hub_kwargs) -> Path:
    """Fetch only config.json and model.safetensors: nothing that could execute code is downloaded."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, allow_patterns=[CONFIG, WEIGHTS], **hub_kwargs))
    except Exception as err:  # network, auth, missing repo: all user-facing
        raise UserError(f"could not download {repo_id} from the Hugging Face Hub: {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}") from None


def read_config(folder: Path) -> dict:
    try:
        config = json.loads((Path(folder) / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"corrupt checkpoint: cannot read {Path(folder) / CONFIG} ({err})") from None
    if not isinstance(config, dict) or "model" not in config:
        raise UserError(f"{Path(folder) / CONFIG} is not a tinyllm checkpoint config (no 'model' section)")
    return config


def load_weights(folder: Path) -> dict:
    path = Path(folder) / WEIGHTS
    try:
        return load_safetensors_bytes(path.read_bytes())
    except (OSError, SafetensorError, ValueError) as err:
        raise UserError(f"corrupt or truncated weights in {path} ({err}); retrain or restore the file") from None


def build_model(config: dict, expect: type | None = None) -> GPT:
    """Instantiate the class recorded by the config; refuse a checkpoint of another architecture."""
    from model_modern import ModernGPT
    try:
        model_config = GPTConfig.from_dict(config["model"])
    except (TypeError, ValueError) as err:
        raise UserError(f"checkpoint config is invalid: {err}") from None
    arch = architecture_name(model_config)
    if expect is ModernGPT and arch != "modern":
        raise UserError(f"this checkpoint holds a {arch} model, not ModernGPT; load it with GPT.from_pretrained")
    cls = ModernGPT if arch == "modern" else GPT
    return cls(model_config)


def load_state_into(model: GPT, state: dict, where) -> None:
    expected = {k: v.shape for k, v in model.state_dict().items() if k not in TIED_KEYS}
    got = {k: v.shape for k, v in state.items()}
    if expected != got:
        missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
        wrong = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
        raise UserError(f"weights in {where} do not match their config (missing {missing[:3]}, unexpected "
                        f"{extra[:3]}, wrong shape {wrong[:3]}); the checkpoint is from another architecture or damaged")
    model.load_state_dict(state, strict=False)


def load_model(name_or_path, device="cpu", expect: type | None = None, **hub_kwargs):
    """-> (model in eval mode with `.tokenizer` set, the config.json record)."""
    folder = resolve_folder(name_or_path, **hub_kwargs)
    config = read_config(folder)
    model = build_model(config, expect)
    load_state_into(model, load_weights(folder), folder)
    if config.get("tokenizer"):
        model.tokenizer = tokenizer_from_dict(config["tokenizer"])
    return model.to(device).eval(), config


def load_train_state(folder) -> dict:
    """The optimizer/RNG/history state, loaded without unpickling arbitrary objects."""
    path = Path(folder) / TRAIN_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"no training state at {path}; cannot resume (start without --resume)") from None
    except Exception as err:  # UnpicklingError for unsafe or corrupt files, RuntimeError for truncated ones
        raise UserError(f"refusing to load {path}: not a safe, intact training state ({type(err).__name__})") from None
