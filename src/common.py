"""Shared plumbing: user errors, the command line's error convention, repo-relative paths, atomic file writes.

Every script goes through these helpers, so there is exactly one answer to "what happens on bad input?" and
"can a crash leave half a file?" in the whole repo. The device and precision policy is in device.py; the
range checks of numbers are in checks.py.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TMP_MARK = ".tinyllm-tmp-"  # in the name of every temporary file or folder our writers create (see is_our_temp)


class UserError(ValueError):
    """A problem the user can fix (bad flag, missing file, damaged checkpoint...): one line, no traceback.

    A ValueError, so code that uses src/ as a library can catch it as the bad value it is."""


def one_line(text: str) -> str:
    """A message squeezed onto one line (some libraries' errors span several)."""
    return " ".join(str(text).split())


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster scheduler's preemption, `timeout`, `docker stop`), raised where the process is, so that it
    stops as Ctrl-C does, saying what was kept, instead of dying mid-step without a word."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises Terminated while the block runs (the handler before it comes back after: run_cli also runs
    inside the test process). Signals reach only the main thread's handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Terminated()
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def escape_what_the_terminal_cannot_show() -> None:
    """A model trained on the user's own text prints its characters (generated text, samples, the vocabulary in an
    error). Where stdout cannot encode them (PYTHONIOENCODING=ascii, a C locale with UTF-8 mode off, a Windows pipe
    in cp1252), print raised UnicodeEncodeError in the middle of the text; such characters are written as Python
    escapes (\\u5b57) instead, as Python's own stderr does."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def run_cli(main) -> None:
    """Run `main()`: a UserError (or a bad flag) becomes one line `error: ...` on stderr and exit status 2; Ctrl-C
    one line `interrupted ...` (what was kept, where training says it) and status 130, the shell's for SIGINT;
    SIGTERM the same line, `terminated ...`, and 143."""
    escape_what_the_terminal_cannot_show()
    try:
        with sigterm_as_interrupt():
            main()
    except UserError as err:
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: its message, if any, says what was kept
        terminated = isinstance(interrupt, Terminated)
        print(f"{'terminated' if terminated else 'interrupted'} {one_line(interrupt)}".rstrip(), file=sys.stderr)
        sys.exit(143 if terminated else 130)
    except BrokenPipeError:  # the reader of our output stopped early (`| head`): nothing went wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        sys.exit(1)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's default in --help, once: not where the help text already says it, nor for switches and unset
    values (None, False, ""), whose default is the absence of the flag. A default path inside the repo is shown
    relative to it, not as this machine's folders; a default text with a newline in Python's quotes ('ROMEO:\\n').
    Descriptions and epilogs keep their lines."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default in (None, False, "", argparse.SUPPRESS):
            return action.help
        if isinstance(action.default, (str, Path)) and Path(action.default).is_absolute() \
                and Path(action.default).is_relative_to(REPO_ROOT):
            shown = Path(action.default).relative_to(REPO_ROOT).as_posix().replace("%", "%%")
            return f"{action.help} (default: {shown} in the repo)"
        if isinstance(action.default, str) and not action.default.isprintable():  # a newline: shown as \n
            return f"{action.help} (default: {repr(action.default).replace('%', '%%')})"
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the repo's error convention: a bad flag is a UserError (one `error:` line, exit 2), not
    argparse's usage block. Defaults are shown in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


# ----------------------------------------------------------------------------- paths

def repo_relative(path) -> str:
    """A path as recorded in results files and checkpoints: relative to the repo when inside it, otherwise only
    its last part, so no record carries a machine's folders."""
    path = Path(path).resolve()
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else f".../{path.name}"


def repo_path(path) -> Path:
    """A default path of the repo's (e.g. checkpoints/modern) anchored at the repo, whatever the working folder."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


# ----------------------------------------------------------------------------- files

def temp_name(name: str) -> str:
    """A temporary name next to `name`: hidden, marked as ours, unique to this process and call."""
    return f".{name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"


def is_our_temp(name: str) -> bool:
    """Whether a folder entry is a leftover of our own writers (temp_name's pattern), never a user's file."""
    if not name.startswith(".") or TMP_MARK not in name:
        return False
    pid, _, token = name.rsplit(TMP_MARK, 1)[1].partition("-")
    return pid.isdigit() and len(token) == 8 and all(c in "0123456789abcdef" for c in token)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / temp_name(path.name)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path):
    """A JSON file a script reads back (a results file, a record): one line naming it if it is damaged (hand-edited,
    or merge markers left in it), not a traceback."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); restore it (from git, where it is committed) or remove "
                        "it") from None


def replace_atomically(out: Path, write) -> None:
    """write(tmp) fills a temporary path next to `out` (a file or a folder); it then takes `out`'s place by renames
    (an earlier `out` is moved aside first and deleted last). A failure at any point leaves `out` as it was and no
    temporary file behind."""
    out = Path(out)
    tmp, old = out.parent / temp_name(out.name), out.parent / temp_name(out.name)
    try:
        write(tmp)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as err:
        raise UserError(f"could not write {out}: {err.strerror or err}; nothing was left behind") from None
    finally:
        for leftover in (tmp, old):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def unwritable_reason(folder: Path) -> str | None:
    """Why `folder` could not be created or written (None if it could), found without creating it."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def check_writable(folder: Path, flag: str = "--out-dir") -> None:
    """Fail early (before hours of training) if `folder` could not be created or written, without creating it:
    a run that then fails on its data must not leave an empty folder behind."""
    reason = unwritable_reason(folder)
    if reason:
        raise UserError(f"cannot write to {flag} {Path(folder).absolute()}: {reason}; choose another {flag}")


def output_folder(value: str) -> Path:
    """argparse `type` of a flag naming a folder a script writes into (--results-dir, --images-dir, --runs-dir):
    checked when the flags are read, so a bad one fails in a second, not when an experiment's results are ready.
    An empty value is refused: Path("") is the working folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty; name a folder")
    reason = unwritable_reason(Path(value))
    if reason:
        raise argparse.ArgumentTypeError(f"cannot write to {value}: {reason}; choose another folder")
    return Path(value)


def add_output_folders(parser: argparse.ArgumentParser, images: bool = True) -> None:
    """--results-dir and (images=True) --images-dir: where an experiment or benchmark writes its JSON and figures
    (the repo's results/ and images/, which the docs are rendered from, unless told otherwise)."""
    parser.add_argument("--results-dir", type=output_folder, default=str(REPO_ROOT / "results"),
                        help="where the results JSON goes")
    if images:
        parser.add_argument("--images-dir", type=output_folder, default=str(REPO_ROOT / "images"),
                            help="where the figures go")
