"""Range checks for every number that enters the repo: flags, config.json fields, training states.

One place, so a value read from disk gets the same care as a flag typed by hand: the right type (2.5 is not a
layer count, True is not a number), finite (NaN passes every `<` comparison silently), and inside its range.
Each check raises a UserError whose one line names the field, what it must be, and what it got.
"""
from __future__ import annotations

import math
import os

from common import UserError


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int (not a bool, not 2.0) in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be a whole number, got {value!r}")
    _check_range(value, name, minimum, maximum)
    return value


def check_float(value, name: str, minimum: float | None = None, maximum: float | None = None,
                above: float | None = None, below: float | None = None) -> float:
    """A finite real number in [minimum, maximum] and (above, below)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value}")
    _check_range(value, name, minimum, maximum)
    if above is not None and not value > above:
        raise UserError(f"{name} must be greater than {above:g}, got {value:g}")
    if below is not None and not value < below:
        raise UserError(f"{name} must be less than {below:g}, got {value:g}")
    return float(value)


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false, got {value!r}")
    return value


def _check_range(value, name: str, minimum, maximum) -> None:
    if minimum is not None and value < minimum:
        raise UserError(f"{name} must be at least {minimum:,}, got {value:,}")
    if maximum is not None and value > maximum:
        raise UserError(f"{name} must be at most {maximum:,}, got {value:,}")


SEED_MAX = 2**32 - 1  # what every RNG here (torch, numpy) accepts; training adds small offsets per rank and split


def check_seed(value, name: str = "--seed") -> int:
    return check_int(value, name, 0, SEED_MAX - 1024)


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not on every OS
        return None


def check_fits_in_memory(n_bytes: int, what: str, advice: str) -> None:
    """Refuse work whose tensors alone would not fit in this machine's RAM: allocating them would fail deep inside
    PyTorch (or get the process killed) instead of saying so."""
    total = physical_memory_bytes()
    if total is not None and n_bytes > total:
        raise UserError(f"{what} needs about {n_bytes / 2**30:,.1f} GiB, more than this machine's "
                        f"{total / 2**30:,.1f} GiB of RAM; {advice}")
