"""Export a checkpoint where LLaMA and GPT-2 run: a Hugging Face transformers folder, or a GGUF file for llama.cpp.

    python src/export.py checkpoints/modern --to hf --out exports/modern-hf        # LlamaForCausalLM
    python src/export.py checkpoints/vanilla --to hf --out exports/vanilla-hf      # GPT2LMHeadModel
    python src/export.py checkpoints/modern --to gguf --out exports/modern.gguf --gguf-type q8_0

--to hf: config.json (model_type llama or gpt2), model.safetensors, generation_config.json, tokenizer.json and
tokenizer_config.json, loadable with AutoModelForCausalLM / AutoTokenizer.from_pretrained(OUT) and no code of ours;
plus tinyllm.json, our own record, so src/generate.py --checkpoint OUT works too.
--to gguf: one file of llama.cpp's llama architecture (modern checkpoints: char, bpe:N or gpt2 tokenizer), f32, f16
or q8_0.
The export is written to a temporary name and renamed into place: a failed export leaves nothing behind. An
existing --out is refused unless --force, and --force replaces only an earlier export of this script.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoint import describe_record, load_model, resolve_folder  # noqa: E402
from common import ArgumentParser, UserError, atomic_write_json, replace_atomically, repo_relative, run_cli  # noqa: E402
from convert import (EXPORT_MARK, GGUF_TYPES, check_exportable, is_earlier_export, save_gguf,  # noqa: E402
                     save_hf_folder)

def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("checkpoint", help="run folder (its best/), checkpoint folder (run/best, run/last) or Hub repo id")
    p.add_argument("--to", choices=("hf", "gguf"), required=True,
                   help="hf: a transformers folder (Llama for modern, GPT-2 for vanilla checkpoints); gguf: llama.cpp")
    p.add_argument("--out", required=True, help="the folder (hf) or file (gguf) to write")
    p.add_argument("--gguf-type", choices=GGUF_TYPES, default="f32",
                   help="GGUF weights: f32 (exact), f16, or q8_0 (8-bit blocks of 32, llama.cpp's fast CPU type)")
    p.add_argument("--force", action="store_true", help="replace --out if it is an earlier export")
    return p


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise UserError(f"--out {out} exists; choose another path, or add --force to replace an earlier export")
    if out.exists() and not is_earlier_export(out):
        raise UserError(f"--out {out} exists and is not an earlier export (it holds files export.py did not write); "
                        "it is left as it is: choose another path")
    parent = out.absolute().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write --out {out}: {parent} is not a writable folder")


def export_hf(model, record: dict, out: Path) -> None:
    def write(tmp: Path) -> None:
        tmp.mkdir()
        files = save_hf_folder(tmp, model, record)
        atomic_write_json(tmp / EXPORT_MARK, files)
    replace_atomically(out, write)


def main(argv=None) -> Path:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    check_out(out, args.force)
    folder = resolve_folder(args.checkpoint)
    model, record = load_model(folder)
    if model.tokenizer is None:
        raise UserError(f"{folder} records no tokenizer; an export needs one")
    check_exportable(model, args.to)
    record = {k: v for k, v in record.items() if k not in ("format", "model", "tokenizer")}
    if args.to == "hf":
        export_hf(model, record, out)
        kind = "LlamaForCausalLM" if model.config.architecture == "modern" else "GPT2LMHeadModel"
        print(f"wrote {out}: a {kind} folder from {describe_record(repo_relative(folder), record)}\n"
              f"  AutoModelForCausalLM.from_pretrained({str(out)!r}), AutoTokenizer.from_pretrained({str(out)!r})")
    else:
        replace_atomically(out, lambda tmp: save_gguf(tmp, model, args.gguf_type, f"tinyllm {model.config.architecture}"))
        print(f"wrote {out}: GGUF ({args.gguf_type}) from {describe_record(repo_relative(folder), record)}\n"
              f"  llama.cpp: llama-cli -m {out} -p 'ROMEO:' -n 200")
    return out


if __name__ == "__main__":
    run_cli(main)
