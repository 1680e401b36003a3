"""The one checkpoint format: `model.safetensors` + `config.json` per folder (the Hugging Face Hub layout).

    checkpoints/<run>/best/   model.safetensors, config.json            (best val loss so far)
    checkpoints/<run>/last/   model.safetensors, config.json, train_state.pt (optimizer, RNG, step, history)
    checkpoints/<run>/history.json, summary.json

A folder that publish.py or export.py wrote for transformers holds transformers' config.json and weights, and our
record in tinyllm.json; loading reads those too (convert.from_hf_state maps the weights back).

Why safetensors: a pickled `.pt` can run arbitrary code when loaded; safetensors holds only tensors.
The optimizer state still needs `torch.save`, and is read back with `weights_only=True`, which refuses
anything but tensors and plain containers; every field is then checked before use.

Writing: a folder is written as a hidden temp folder, then swapped in by renames. A crash at any moment leaves
either the old or the new folder; `recover` (run by training, under the run's lock) finishes an interrupted swap.
Every temporary name carries `.tinyllm-tmp-` or `.tinyllm-old` and the checkpoint it belongs to, so recovery
never touches a file of the user's. Reading never writes: a loader that finds only the `.old` side of an
interrupted swap reads it where it is.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from checks import check_float, check_fits_in_memory, check_int
from common import REPO_ROOT, UserError, atomic_write_bytes, atomic_write_json, is_our_temp, one_line, temp_name
from convert import TINYLLM_CONFIG, from_hf_state
from model import GPT, GPTConfig
from tokenizer import tokenizer_from_dict

FORMAT = "tinyllm/1"
WEIGHTS, CONFIG, TRAIN_STATE = "model.safetensors", "config.json", "train_state.pt"
CHECKPOINTS = ("best", "last")  # the checkpoint folders of a run
RUN_FILES = ("history.json", "summary.json")
OLD_SUFFIX = ".tinyllm-old"
LOCK = ".tinyllm-lock"
TIED_KEYS = ("lm_head.weight",)  # same tensor as tok_emb.weight: stored once


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


# ----------------------------------------------------------------------------- writing

def save_model_folder(folder, model, tokenizer, record: dict) -> None:
    """Write weights and config into `folder` (each file atomically)."""
    model = unwrap(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in TIED_KEYS}
    atomic_write_bytes(folder / WEIGHTS, save_safetensors_bytes(state, metadata={"format": "pt"}))
    config = {"format": FORMAT, "architecture": model.config.architecture, "model": model.config.to_dict(),
              "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
              "params": model.num_params(), **record}
    atomic_write_json(folder / CONFIG, config)


def old_name(folder: Path) -> Path:
    return folder.parent / f".{folder.name}{OLD_SUFFIX}"


def holds_checkpoint(folder) -> bool:
    """Whether a local folder is a checkpoint, or a run folder with one in best/ or last/: what load_model would
    find there without asking the Hub. The scripts' defaults (checkpoints/modern, ...) may not exist yet."""
    folder = Path(folder)
    return any((candidate / CONFIG).exists() for candidate in (folder, *(folder / sub for sub in CHECKPOINTS)))


def is_checkpoint(folder: Path) -> bool:
    """A folder holding a config.json that tinyllm wrote (whatever its weights' state)."""
    try:
        return json.loads((Path(folder) / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def recover(run_dir) -> None:
    """Finish or undo the checkpoint swaps a crash interrupted in `run_dir`, and delete our temp leftovers.
    Touches only names our writers create: `.<best|last>.tinyllm-old` folders holding a tinyllm checkpoint and
    temp entries named by common.temp_name. Training calls it while it holds the run's lock."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for entry in run_dir.iterdir():
        if is_our_temp(entry.name):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    for name in CHECKPOINTS:
        live, old = run_dir / name, old_name(run_dir / name)
        if old.is_dir() and is_checkpoint(old):
            if live.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, live)


def train_state_bytes(train_state: dict) -> bytes:
    """torch.save into memory, so that writing it to disk fails as an OSError (a full disk), like every file."""
    buffer = io.BytesIO()
    torch.save(train_state, buffer)
    return buffer.getvalue()


def save_checkpoint(folder, model, tokenizer, record: dict, train_state: dict | None = None) -> None:
    """Atomically replace `folder` with a new checkpoint (weights, config, optional training state)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = folder.parent / temp_name(folder.name), old_name(folder)
    try:
        save_model_folder(tmp, model, tokenizer, record)
        if train_state is not None:
            atomic_write_bytes(tmp / TRAIN_STATE, train_state_bytes(train_state))
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- the run folder

class RunLock:
    """An exclusive lock on a run folder, held while a training run writes into it: a second run into the same
    --out-dir is refused in one line instead of the two interleaving their checkpoints. The lock is an OS lock
    (flock / LockFileEx) on `.tinyllm-lock`, so it is released even when the process is killed."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK
        self.file = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+")
            if not _try_lock(handle):
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise UserError(f"another training run (pid {holder}) is writing to {self.path.parent}; wait for it "
                                "to finish or choose another --out-dir")
            # the previous holder may have unlinked the file between our open and our lock: lock the live one
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.file = handle
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.file.close()  # closing releases the OS lock


def _try_lock(handle) -> bool:
    try:
        import fcntl
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # Windows
        import msvcrt
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
    except OSError:
        return False
    return True


def existing_run(run_dir) -> list[str]:
    """The entries of a finished or interrupted run in `run_dir` (best/, last/, history.json, summary.json)."""
    run_dir = Path(run_dir)
    return [name for name in (*CHECKPOINTS, *RUN_FILES) if (run_dir / name).exists()]


def clear_run(run_dir) -> None:
    """Delete a previous run's entries from `run_dir` (--overwrite), refusing if one of them is not ours."""
    run_dir = Path(run_dir)
    for name in existing_run(run_dir):
        path = run_dir / name
        if path.is_dir() and not is_checkpoint(path) or path.is_file() and not _is_our_json(path):
            raise UserError(f"{path} exists and was not written by tinyllm; it is left alone: choose another --out-dir")
    for name in existing_run(run_dir):
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _is_our_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and ("evals" in data or "best_val_loss" in data)


# ----------------------------------------------------------------------------- loading (never writes)

def resolve_folder(name_or_path, **hub_kwargs) -> Path:
    """A run folder (-> its best/, else last/), a checkpoint folder, or a Hugging Face Hub repo id.
    A checkpoint that a crash left only as `.<name>.tinyllm-old` is read from there."""
    path = Path(name_or_path)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    if not path.exists() and old_name(path).is_dir():
        return old_name(path)
    if path.is_dir():
        if (path / CONFIG).exists():
            return path
        for sub in CHECKPOINTS:
            for candidate in (path / sub, old_name(path / sub)):
                if (candidate / CONFIG).exists():
                    return candidate
        raise UserError(f"no checkpoint in {path} (no config.json there or in best/ or last/); train one first")
    if path.exists():
        raise UserError(f"checkpoint {name_or_path} is a file; pass the folder that holds config.json and "
                        "model.safetensors, or its run folder")
    text = str(name_or_path)
    if text.count("/") == 1 and not text.startswith((".", "/")) and "\n" not in text:
        return download_from_hub(text, **hub_kwargs)
    raise UserError(f"checkpoint {name_or_path} not found; pass a run folder such as checkpoints/modern, "
                    "or a Hugging Face repo id user/name")


def download_from_hub(repo_id: str, **hub_kwargs) -> Path:
    """Fetch only config.json, model.safetensors and tinyllm.json: nothing that could execute code is downloaded."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, allow_patterns=[CONFIG, WEIGHTS, TINYLLM_CONFIG], **hub_kwargs))
    except Exception as err:  # network, auth, missing repo, invalid id: all user-facing
        # a mistyped local folder (checkpoints/modrn) is also a valid repo id: the message names both readings
        raise UserError(f"{repo_id} is no local folder, and the Hugging Face Hub did not give it "
                        f"({type(err).__name__}: {one_line(err)[:200]}); pass a run folder such as "
                        "checkpoints/modern, or a Hub repo id user/name") from None


def read_config(folder: Path) -> dict:
    """Our record of a checkpoint: its config.json, or tinyllm.json in a folder published for transformers."""
    path = Path(folder) / (TINYLLM_CONFIG if (Path(folder) / TINYLLM_CONFIG).exists() else CONFIG)
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"corrupt checkpoint: cannot read {path} ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UserError(f"{path} is not a tinyllm checkpoint config (no 'model' section)")
    return config


def load_weights(folder: Path) -> dict:
    """The tensors of model.safetensors; damaged, truncated or non-finite weights are one clear error."""
    path = Path(folder) / WEIGHTS
    try:
        state = load_safetensors_bytes(path.read_bytes())
    except (OSError, SafetensorError, ValueError) as err:
        raise UserError(f"corrupt or truncated weights in {path} ({one_line(err)[:200]}); retrain or restore the file") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"weights in {path} hold NaN or infinite values ({name}): the run diverged or the file is "
                            "damaged; use another checkpoint (e.g. best/)")
    return state


class SkipInit(torch.overrides.TorchFunctionMode):
    """Calls of torch.nn.init's functions return their tensor untouched: a model built under it has shapes, not
    values. On the meta device torch runs normal_ through its reference implementation, whose first call imports
    torch._dynamo: seconds of start-up for loading a checkpoint to generate from or export, which never needs it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]  # every init function's first parameter
        return func(*args, **(kwargs or {}))


def parameter_bytes(config: GPTConfig) -> int:
    """fp32 bytes of a model's parameters, counted on the meta device (nothing allocated or initialised)."""
    with torch.device("meta"), SkipInit():
        return GPT(config).num_params() * 4


def build_model(config: dict, build=GPT, architecture: str | None = None) -> GPT:
    """The model a config.json describes (weights not loaded yet), refused if it is not of `architecture`
    or would not fit in this machine's memory. build: the class to instantiate (GPT or a thin subclass)."""
    try:
        model_config = GPTConfig.from_dict(config["model"])
    except (TypeError, ValueError) as err:
        raise UserError(f"checkpoint config is invalid: {one_line(err)}") from None
    if architecture and model_config.architecture != architecture:
        raise UserError(f"this checkpoint holds a {model_config.architecture} model, not a {architecture} one; "
                        "load it with checkpoint.load_model")
    check_fits_in_memory(parameter_bytes(model_config), "this checkpoint's model", "it cannot be loaded here")
    return build(model_config)


def load_state_into(model: GPT, state: dict, where) -> None:
    expected = {k: v.shape for k, v in model.state_dict().items() if k not in TIED_KEYS}
    got = {k: v.shape for k, v in state.items()}
    if expected != got:
        missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
        wrong = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
        raise UserError(f"weights in {where} do not match their config (missing {missing[:3]}, unexpected "
                        f"{extra[:3]}, wrong shape {wrong[:3]}); the checkpoint is from another architecture or damaged")
    model.load_state_dict(state, strict=False)


def load_model(name_or_path, device="cpu", build=GPT, architecture: str | None = None, **hub_kwargs):
    """-> (model in eval mode with `.tokenizer` set, the config.json record). build/architecture: see build_model."""
    folder = resolve_folder(name_or_path, **hub_kwargs)
    config = read_config(folder)
    model = build_model(config, build, architecture)
    state = load_weights(folder)
    if config.get("layout") == "transformers":
        state = from_hf_state(state, model.config)
    load_state_into(model, state, folder)
    if config.get("tokenizer") is not None:
        model.tokenizer = tokenizer_from_dict(config["tokenizer"])
        if model.tokenizer.vocab_size != model.config.vocab_size:
            raise UserError(f"{folder / CONFIG}: its tokenizer has {model.tokenizer.vocab_size} tokens but the model "
                            f"{model.config.vocab_size}; the checkpoint is damaged")
    return model.to(device).eval(), config


def describe_record(folder, record: dict) -> str:
    """`folder (architecture, params, step, val loss)` from a config.json record, whatever it holds."""
    def number(key, fmt):
        value = record.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return format(value, fmt) if ok else "?"
    return (f"{folder} ({record.get('architecture', '?')}, {number('params', ',')} params, step {number('step', 'd')}, "
            f"val loss {number('val_loss', '.4f')})")


# ----------------------------------------------------------------------------- the training state

TRAIN_STATE_FIELDS = {"optimizer": (list, dict), "step": int, "best_val": float, "best_step": int, "bad_evals": int,
                      "history": dict, "elapsed_s": float, "data_rng": torch.Tensor, "torch_rng": list}
# fields that checkpoints written before them lack, and the value a resume then starts from
OPTIONAL_TRAIN_STATE_FIELDS = {"timed_tokens": 0, "timed_s": 0.0}
# what each entry of a checkpoint record's "machines" (the machines a run ran on, trainer.Progress) holds
MACHINE_FIELDS = {"hardware": str, "device": str, "dtype": str, "compiled": bool, "from_step": int}


def load_train_state(folder) -> dict:
    """The optimizer/RNG/history state, loaded without unpickling arbitrary objects, every field checked."""
    path = Path(folder) / TRAIN_STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"no training state at {path}; cannot resume (start without --resume)") from None
    except Exception as err:  # UnpicklingError for unsafe or corrupt files, RuntimeError for truncated ones
        raise UserError(f"refusing to load {path}: not a safe, intact training state ({type(err).__name__})") from None
    check_train_state(state, path)
    return state


def check_machines(machines, step: int) -> None:
    """A run's machines: entries of MACHINE_FIELDS, each starting at or after the one before, none after `step`."""
    if not isinstance(machines, list):
        raise UserError(f"machines must be a list, got {machines!r:.60}")
    first_step = 0
    for entry in machines:
        if not (isinstance(entry, dict) and all(type(entry.get(k)) is kind for k, kind in MACHINE_FIELDS.items())):
            raise UserError(f"each of machines must hold {', '.join(MACHINE_FIELDS)}, got {entry!r:.60}")
        check_int(entry["from_step"], "a machine's from_step", first_step, step)
        first_step = entry["from_step"]


def check_train_state(state, path) -> None:
    """Every field a resume uses: present, of its type, finite and in range."""
    damaged = f"{path} is damaged"
    if not isinstance(state, dict):
        raise UserError(f"{damaged}: it holds a {type(state).__name__}, not a training state")
    for key, kind in TRAIN_STATE_FIELDS.items():
        value = state.get(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = state[key] = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise UserError(f"{damaged}: field {key!r} should be a {names}, got {value!r:.60}")
    try:
        check_int(state["step"], "step", 0)
        check_int(state["best_step"], "best_step", 0, state["step"])
        check_int(state["bad_evals"], "bad_evals", 0)
        check_float(state["elapsed_s"], "elapsed_s", minimum=0.0)
        for key, default in OPTIONAL_TRAIN_STATE_FIELDS.items():
            state.setdefault(key, default)
        check_int(state["timed_tokens"], "timed_tokens", 0)
        check_float(state["timed_s"], "timed_s", minimum=0.0)
        if not (math.isfinite(state["best_val"]) or state["best_val"] == math.inf):
            raise UserError(f"best_val must be finite, got {state['best_val']}")
        history = state["history"]
        if not isinstance(history.get("evals"), list) or not isinstance(history.get("train_loss"), list):
            raise UserError("history must hold lists 'evals' and 'train_loss'")
        if not state["torch_rng"] or not all(isinstance(t, torch.Tensor) for t in state["torch_rng"]):
            raise UserError("torch_rng must be a list of RNG states")
    except UserError as err:
        raise UserError(f"{damaged}: {err}") from None
