"""Run an exported checkpoint in real llama.cpp and compare it with ours: tokens, logits, greedy text.

    pip install llama-cpp-python          # builds llama.cpp from source: several minutes on 2 cores
    python -u experiments/llama_cpp_check.py --checkpoint checkpoints/modern
    python -u experiments/llama_cpp_check.py --checkpoint checkpoints/bpe --prompt "ROMEO:"   # a BPE model

Exports the checkpoint to GGUF (src/convert.py, the same code as `src/export.py --to gguf`) in f32 and q8_0,
loads each with llama-cpp-python, and records in results/llama_cpp.json:
- whether llama.cpp tokenizes the prompt to exactly our ids;
- the largest difference between its logits and ours over a block_size window (f32: the same function);
- how many greedy tokens it generates identically to ours, within block_size and past it (where our sliding
  window and its full attention part ways);
- the most probability it ever gives the special tokens GGUF appends after ours (their logit is 0): llama.cpp's
  unknown, BOS and EOS for a char vocabulary, <|endoftext|> for our BPE, none for GPT-2's;
- the greedy text of each.

llama.cpp runs in a process of its own, so that a crash inside it is reported, not fatal: on a CPU with AMX,
llama-cpp-python 0.3.36 died of SIGSEGV in its AMX matrix product (ggml_backend_amx_mul_mat) as soon as it
evaluated two or more tokens of q8_0 weights, at every width we tried. A model that dies that way is loaded
again with llama.cpp's extra buffer types off (its AMX and repacked weight layouts; plain CPU kernels), and the
row says so.
"""
import json
import shlex
import signal
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from checkpoint import describe_record, load_model  # noqa: E402
from common import (REPO_ROOT, ArgumentParser, UserError, atomic_write_json,  # noqa: E402
                    one_line, add_output_folders, repo_relative, run_cli)
from convert import check_exportable, gguf_added_tokens, save_gguf  # noqa: E402
from data import load_text, validation_ids  # noqa: E402
from device import describe_hardware  # noqa: E402
from engine import encode_prompt, generate  # noqa: E402


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--checkpoint", default=str(REPO_ROOT / "checkpoints" / "modern"),
                   help="a modern checkpoint (char, bpe:N or gpt2 tokenizer)")
    p.add_argument("--prompt", default="ROMEO:\n", help="the prompt of the greedy continuations")
    add_output_folders(p, images=False)
    return p


def command_line(args) -> str:
    """This run's command as its record keeps it: the checkpoint, and the prompt where it is not the default."""
    prompt = "" if args.prompt == build_parser().get_default("prompt") else f" --prompt {shlex.quote(args.prompt)}"
    return f"python -u experiments/llama_cpp_check.py --checkpoint {repo_relative(args.checkpoint)}{prompt}"


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


LLAMA_CHILD = r"""
import json, sys
import llama_cpp
job = json.loads(sys.stdin.read())
if not job["extra_buffer_types"]:  # llama-cpp-python has no argument for it: its default model parameters, switched off
    make_defaults = llama_cpp.llama_cpp.llama_model_default_params
    if "use_extra_bufts" not in dict(make_defaults()._fields_):
        sys.exit("this llama-cpp-python cannot turn off llama.cpp's extra buffer types")
    def without_extra_buffer_types():
        params = make_defaults()
        params.use_extra_bufts = False
        return params
    llama_cpp.llama_cpp.llama_model_default_params = without_extra_buffer_types
llm = llama_cpp.Llama(model_path=job["path"], n_ctx=job["n_ctx"], logits_all=True, verbose=False)
llm.eval(job["window"])
scores = llm.scores[:len(job["window"])].tolist()
greedy = []
for token in llm.generate(job["prompt_ids"], temp=0.0, top_k=1, reset=True):
    greedy.append(token)
    if len(greedy) == job["greedy_tokens"]:
        break
prompt_tokens = llm.tokenize(job["prompt"].encode(), add_bos=False, special=False)
print(json.dumps({"scores": scores, "greedy": greedy, "prompt_tokens": prompt_tokens}))
"""


def run_llama_cpp(job: dict) -> tuple[dict, str]:
    """LLAMA_CHILD on `job` in a fresh process: its outputs, and how llama.cpp's extra buffer types were set. A child
    killed by a signal is run once more with them off (the AMX crash in the module docstring)."""
    how = "on (llama.cpp's default)"
    for extra_buffer_types in (True, False):
        done = subprocess.run([sys.executable, "-c", LLAMA_CHILD], input=json.dumps({**job, "extra_buffer_types":
                              extra_buffer_types}), capture_output=True, text=True, timeout=1800)
        if done.returncode == 0:
            return json.loads(done.stdout.splitlines()[-1]), how
        if done.returncode > 0:
            raise UserError(f"llama.cpp failed on {Path(job['path']).name}: {one_line(done.stderr)[-300:]}")
        died = signal.Signals(-done.returncode).name
        how = f"off: with them on, llama.cpp died of {died}"
    raise UserError(f"llama.cpp died of {died} on {Path(job['path']).name} even with its extra buffer types off; "
                    "try another llama-cpp-python version")


def compare(path: Path, model, prompt_ids: list[int], text_ids: list[int]) -> dict:
    c = model.config
    window, n = text_ids[:c.block_size], 2 * c.block_size
    theirs, how = run_llama_cpp({"path": str(path), "n_ctx": 3 * c.block_size, "window": window, "greedy_tokens": n,
                                 "prompt_ids": prompt_ids, "prompt": model.tokenizer.decode(prompt_ids)})
    scores, greedy = np.array(theirs["scores"]), theirs["greedy"]
    with torch.no_grad():
        ours = model(torch.tensor([window]))[0][0].numpy()
    special = torch.softmax(torch.from_numpy(scores), -1)[:, c.vocab_size:].sum(-1).max().item()
    mine = generate(model, torch.tensor([prompt_ids]), n, temperature=0.0)[0, len(prompt_ids):].tolist()
    within = c.block_size - len(prompt_ids)
    return {"file": path.name, "extra_buffer_types": how,
            "tokenizes_prompt_to_our_ids": theirs["prompt_tokens"] == prompt_ids,
            "max_logit_difference": float(np.abs(scores[:, :c.vocab_size] - ours).max()),
            "window_tokens": len(window), "greedy_tokens_within_block": within,
            "greedy_identical_within_block": first_difference(greedy[:within], mine[:within]),
            "greedy_first_difference": first_difference(greedy, mine), "greedy_tokens": n,
            "max_special_token_probability": special,
            "llama_cpp_text": model.tokenizer.decode(prompt_ids + greedy[:within]),
            "tinyllm_text": model.tokenizer.decode(prompt_ids + mine[:within])}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    model, record = load_model(args.checkpoint)
    check_exportable(model, "gguf")
    try:
        import llama_cpp  # here only to check that it is installed (and for its version): it runs in a child
    except ImportError:
        raise UserError("llama-cpp-python is not installed: pip install llama-cpp-python (it builds llama.cpp "
                        "from source, several minutes)") from None
    prompt_ids = encode_prompt(model, args.prompt)[0].tolist()
    val = validation_ids(model.tokenizer, load_text(None), model.config.block_size).numpy()
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for gguf_type in ("f32", "q8_0"):
            path = Path(folder) / f"modern-{gguf_type}.gguf"
            save_gguf(path, model, gguf_type, "tinyllm modern")
            rows[gguf_type] = compare(path, model, prompt_ids, val[:model.config.block_size].tolist())
            print(f"{gguf_type}: {rows[gguf_type]}", flush=True)
    result = {"checkpoint": describe_record(repo_relative(args.checkpoint), record), "prompt": args.prompt,
              "block_size": model.config.block_size, "special_tokens": list(gguf_added_tokens(model.tokenizer)),
              "llama_cpp_python": llama_cpp.__version__, "hardware": describe_hardware(torch.device("cpu")),
              "date": datetime.now(timezone.utc).date().isoformat(),
              "command": command_line(args), "export_commands": {
                  gguf_type: f"python src/export.py {repo_relative(args.checkpoint)} --to gguf --out "
                             f"modern-{gguf_type}.gguf --gguf-type {gguf_type}" for gguf_type in rows},
              "gguf": rows}
    path = Path(args.results_dir) / "llama_cpp.json"
    atomic_write_json(path, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    run_cli(main)
