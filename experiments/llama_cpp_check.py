"""Run an exported checkpoint in real llama.cpp and compare it with ours: tokens, logits, greedy text.

    pip install llama-cpp-python          # builds llama.cpp from source: several minutes on 2 cores
    python -u experiments/llama_cpp_check.py --checkpoint checkpoints/modern

Exports the checkpoint to GGUF (src/convert.py, the same code as `src/export.py --to gguf`) in f32 and q8_0,
loads each with llama-cpp-python, and records in results/llama_cpp.json:
- whether llama.cpp tokenizes the prompt to exactly our ids;
- the largest difference between its logits and ours over a block_size window (f32: the same function);
- how many greedy tokens it generates identically to ours, within block_size and past it (where our sliding
  window and its full attention part ways);
- the most probability it ever gives the three special tokens GGUF needs (their logit is 0);
- the greedy text of each.
"""
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from checkpoint import describe_record, load_model  # noqa: E402
from common import (REPO_ROOT, ArgumentParser, UserError, atomic_write_json,  # noqa: E402
                    output_folder, repo_relative, run_cli)
from convert import SPECIAL_TOKENS, save_gguf  # noqa: E402
from device import describe_hardware  # noqa: E402
from engine import generate  # noqa: E402


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--checkpoint", default=str(REPO_ROOT / "checkpoints" / "modern"), help="a modern char checkpoint")
    p.add_argument("--prompt", default="ROMEO:\n", help="the prompt of the greedy continuations")
    p.add_argument("--results-dir", type=output_folder, default=str(REPO_ROOT / "results"))
    return p


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(llama_cpp, path: Path, model, prompt_ids: list[int], text_ids: list[int]) -> dict:
    c = model.config
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=3 * c.block_size, logits_all=True, verbose=False)
    window = text_ids[:c.block_size]
    llm.reset()
    llm.eval(window)
    theirs = np.array(llm.scores[:len(window)])  # a copy: generate() below overwrites llama's score buffer
    with torch.no_grad():
        ours = model(torch.tensor([window]))[0][0].numpy()
    special = torch.softmax(torch.from_numpy(theirs), -1)[:, c.vocab_size:].sum(-1).max().item()
    n = 2 * c.block_size
    greedy = []
    for token in llm.generate(prompt_ids, temp=0.0, top_k=1, reset=True):
        greedy.append(token)
        if len(greedy) == n:
            break
    mine = generate(model, torch.tensor([prompt_ids]), n, temperature=0.0)[0, len(prompt_ids):].tolist()
    within = c.block_size - len(prompt_ids)
    return {"file": path.name, "tokenizes_prompt_to_our_ids": llm.tokenize(model.tokenizer.decode(prompt_ids).encode(),
                                                                            add_bos=False, special=False) == prompt_ids,
            "max_logit_difference": float(np.abs(theirs[:, :c.vocab_size] - ours).max()),
            "window_tokens": len(window), "greedy_tokens_within_block": within,
            "greedy_identical_within_block": first_difference(greedy[:within], mine[:within]),
            "greedy_first_difference": first_difference(greedy, mine), "greedy_tokens": n,
            "max_special_token_probability": special,
            "llama_cpp_text": model.tokenizer.decode(prompt_ids + greedy[:within]),
            "tinyllm_text": model.tokenizer.decode(prompt_ids + mine[:within])}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        import llama_cpp
    except ImportError:
        raise UserError("llama-cpp-python is not installed: pip install llama-cpp-python (it builds llama.cpp "
                        "from source, several minutes)") from None
    model, record = load_model(args.checkpoint)
    if model.config.architecture != "modern" or model.tokenizer.kind != "char":
        raise UserError(f"{args.checkpoint} is not a modern char-tokenizer checkpoint; GGUF export needs one")
    prompt_ids = model.tokenizer.encode(args.prompt)
    from data import load_text, train_val_split
    val = train_val_split(np.asarray(model.tokenizer.encode(load_text(None))), model.config.block_size)[1]
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for gguf_type in ("f32", "q8_0"):
            path = Path(folder) / f"modern-{gguf_type}.gguf"
            save_gguf(path, model, gguf_type, "tinyllm modern")
            rows[gguf_type] = compare(llama_cpp, path, model, prompt_ids, val[:model.config.block_size].tolist())
            print(f"{gguf_type}: {rows[gguf_type]}", flush=True)
    result = {"checkpoint": describe_record(repo_relative(args.checkpoint), record), "prompt": args.prompt,
              "block_size": model.config.block_size, "special_tokens": list(SPECIAL_TOKENS),
              "llama_cpp_python": llama_cpp.__version__, "hardware": describe_hardware(torch.device("cpu")),
              "date": datetime.now(timezone.utc).date().isoformat(),
              "commands": [f"python src/export.py {repo_relative(args.checkpoint)} --to gguf --out modern.gguf "
                           "--gguf-type f32 (and q8_0)", "python -u experiments/llama_cpp_check.py"],
              "gguf": rows}
    path = Path(args.results_dir) / "llama_cpp.json"
    atomic_write_json(path, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    run_cli(main)
