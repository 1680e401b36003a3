"""Render every results table in README.md and DEVLOG.md from results/*.json (no number is typed by hand).

    python experiments/report.py                      # print the "all swaps compared" table
    python experiments/report.py --write              # re-render the docs between their marker comments
    python experiments/report.py --check              # exit 1 if the docs differ from the results files
    python experiments/report.py --show benchmark     # print one block (here: the benchmark's tables)
    python experiments/report.py --collect checkpoints/modern   # results/train_modern.json from a run folder

A block in a doc looks like `<!-- report:NAME -->` ... `<!-- /report:NAME -->`; NAME is a block of src/docs.py, which
renders each from the results files.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from cli import write_run_results  # noqa: E402
from common import ArgumentParser, UserError, atomic_write_bytes, run_cli  # noqa: E402
from docs import BLOCKS, DOCS, RESULTS, benchmark, render, swaps  # noqa: E402


def main(argv=None) -> None:
    p = ArgumentParser(description="Render the docs' tables from results/*.json.")
    p.add_argument("--write", action="store_true", help="re-render README.md and DEVLOG.md in place")
    p.add_argument("--check", action="store_true", help="exit 1 if a doc differs from its rendering")
    p.add_argument("--collect", metavar="RUN_DIR", help="write results/train_<run>.json from a finished run folder")
    p.add_argument("--show", metavar="BLOCK", choices=[*BLOCKS, "benchmark_quick"],
                   help=f"print one block: {', '.join(BLOCKS)}, or benchmark_quick")
    args = p.parse_args(argv)
    if args.collect:
        print(f"wrote {write_run_results(args.collect)}")
        return
    if args.show == "benchmark_quick":
        if not any(RESULTS.glob("benchmark_quick_*.json")):
            raise UserError("no results/benchmark_quick_<machine>.json; run python training/benchmark.py --quick first")
        print(benchmark(quick=True))
        return
    if args.show:
        print(BLOCKS[args.show]())
        return
    if not (args.write or args.check):
        print(swaps())
        return
    stale = []
    for doc in DOCS:
        if not doc.exists():
            continue
        text = doc.read_text()
        rendered = render(text)
        if rendered != text:
            stale.append(doc.name)
            if args.write:
                atomic_write_bytes(doc, rendered.encode())
    if args.check and stale:
        print(f"out of date with results/: {', '.join(stale)}; run python experiments/report.py --write")
        sys.exit(1)
    print("rendered" if args.write else "docs match results/")


if __name__ == "__main__":
    run_cli(main)
