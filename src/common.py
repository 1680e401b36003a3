"""Shared plumbing: user errors, the device and dtype policy, atomic file writes.

Every script goes through these helpers, so there is exactly one answer to "which device?",
"which precision?" and "what happens on bad input?" in the whole repo.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file...). Printed as one line, no traceback."""


def run_cli(main) -> None:
    """Run `main()` and turn a UserError into one line on stderr and exit status 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------- devices

def repo_relative(path) -> str:
    """A path as recorded in results files: relative to the repo when inside it, so records carry no home folders."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA > MPS > CPU, unless the user asks for one; asking for a missing one is an error."""
    requested = (requested or "auto").lower()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    kind = requested.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {requested} asked for, but this machine has no CUDA GPU; use --device cpu or auto")
    if kind == "mps" and not has_mps:
        raise UserError(f"--device {requested} asked for, but MPS is not available here; use --device cpu or auto")
    if kind not in ("cuda", "mps", "cpu"):
        raise UserError(f"unknown --device {requested!r}; choose auto, cpu, cuda, cuda:N or mps")
    return torch.device(requested)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(requested: str, device: torch.device) -> str:
    """Pick the training precision for a device ("auto") or check the user's choice.

    - CUDA: bf16 autocast where the GPU supports it (Ampere+), else fp16 with a GradScaler.
    - MPS: fp32; fp16 autocast without a GradScaler diverged there in the original project.
    - CPU: fp32. On CPUs without AMX/AVX512-BF16 bf16 matmuls are emulated and slower
      (training/benchmark.py measures it); fp16 on CPU is refused.
    """
    requested = (requested or "auto").lower()
    if requested not in ("auto", *DTYPES):
        raise UserError(f"unknown --dtype {requested!r}; choose auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        if requested == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return requested
    if requested == "fp16":
        raise UserError(f"--dtype fp16 is not supported on {device.type} (it needs a GradScaler, which only "
                        "CUDA has); use --dtype fp32 or bf16")
    return "fp32" if requested == "auto" else requested


def autocast(device: torch.device, dtype: str):
    """Mixed-precision context for the forward pass; a no-op for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings measure work and not kernel launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# ----------------------------------------------------------------------------- files

def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; checkpoints are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def check_writable(folder: Path) -> None:
    """Fail early (before hours of training) if the output folder cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UserError(f"cannot write to output folder {folder}: {err.strerror or err}; "
                        "choose another --out-dir") from None
