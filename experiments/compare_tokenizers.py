"""Which tokenizer suits 1 MB of Shakespeare? ModernGPT trained with char, our own BPE at 512/1024/4096 tokens,
and GPT-2's 50,257-token BPE, at the same model size and the same token budget, compared in bits per character.

    python -u experiments/compare_tokenizers.py --preset tokenizers-cpu   # sized for a CPU
    python -u experiments/compare_tokenizers.py                           # reference model size (a GPU)

Why bits per character: a loss in nats per *token* is not comparable across tokenizers (a GPT-2 token carries
~3-4 characters, a char token one). Total nats over the val text / its characters / ln 2 is. Same token budget
means every arm does the same number of steps on the same batch shape, so the transformer does the same work;
a bigger vocabulary then sees more text per step but pays for a larger embedding table and output layer.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from abtest import (build_parser, configs_from_args, experiment_record, hours_on_cpu_note, mean_std, plus_minus,  # noqa: E402
                    plot_record, replot, run_arms)
from common import REPO_ROOT, atomic_write_json, run_cli  # noqa: E402
from model import GPTConfig  # noqa: E402
from tokenizer import TiktokenTokenizer, bpe_vocab_size  # noqa: E402

NAME = "tokenizers"
TITLE = "Tokenizers: char vs our BPE (512, 1024, 4096) vs GPT-2 BPE"
ARMS = ["char", "bpe:512", "bpe:1024", "bpe:4096", "gpt2"]
PRESETS = ("tokenizers-reference", "tokenizers-cpu")  # presets.py
CURVES = dict(key="bpc_curves", ylabel="validation bits per character")  # nats per token differ across tokenizers


def comparison_rows(record: dict) -> list[dict]:
    """One row per tokenizer: what it costs (params, speed) and what it buys (bits per character)."""
    rows = []
    for label, arm in record["arms"].items():
        tokens_per_sec = arm["tokens_per_sec"][0]
        rows.append({"tokenizer": label, "vocab_size": arm["vocab_size"], "params": arm["params"],
                     "embedding_params": arm["vocab_size"] * record["model_config"]["n_embd"],
                     "chars_per_token": arm["chars_per_token"], "tokens_per_sec": tokens_per_sec,
                     "chars_per_sec": tokens_per_sec * arm["chars_per_token"],
                     "train_chars_seen": arm["train_tokens"] * arm["chars_per_token"],
                     "best_val_bpc": arm["best_bpc"], "best_val_loss": arm["best_val"]})
    return rows


def format_rows(rows: list[dict], seeds: int) -> str:
    lines = ["| tokenizer | vocab | params (embedding) | chars/token | train tokens/s | chars/s | text seen | "
             "best val bits/char | best val loss (nats/token) |", "|---" * 9 + "|"]
    for r in rows:
        lines.append(f"| {r['tokenizer']} | {r['vocab_size']:,} | {r['params']:,} ({r['embedding_params']:,}) | "
                     f"{r['chars_per_token']:.2f} | {r['tokens_per_sec']:,.0f} | {r['chars_per_sec']:,.0f} | "
                     f"≈{r['train_chars_seen'] / 1e6:.1f}M chars | {plus_minus(r['best_val_bpc'], seeds, '.3f')} | "
                     f"{r['best_val_loss'][0]:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = build_parser(TITLE, PRESETS, cpu_seeds=1)
    parser.add_argument("--tokenizers", nargs="+", default=list(ARMS), metavar="NAME",
                        help="the arms to train: char | gpt2 | bpe:<vocab_size>")
    parser.set_defaults(runs_dir=str(REPO_ROOT / "checkpoints"))  # -> checkpoints/tokenizers/<arm>/seed<N>
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the figure from the results file an earlier run wrote (no training)")
    args = parser.parse_args(argv)
    if args.replot:
        return replot(NAME, TITLE, args, **CURVES)
    model, tc, seeds = configs_from_args(args, cpu_seeds=1, base=GPTConfig.named("modern"))
    for name in args.tokenizers:  # a typo fails now, not after the first arms have trained
        if name != "char" and bpe_vocab_size(name) is None:
            TiktokenTokenizer(name)
    arms = {name: {"tokenizer": name} for name in args.tokenizers}
    results = run_arms(NAME, arms, model, tc, seeds, args.runs_dir, note=hours_on_cpu_note(args), resume=args.resume)
    record = experiment_record(NAME, args, model, tc, seeds, results, {})
    train_tokens = tc.max_steps * tc.batch_size * tc.grad_accum * model.block_size
    for label, arm in record["arms"].items():
        arm.update(vocab_size=results[label]["vocab_size"], bpc_curves=results[label]["bpc_curves"],
                   best_bpc=mean_std(results[label]["best_bpc"]), chars_per_token=results[label]["chars_per_token"],
                   elapsed_s=mean_std(results[label]["elapsed_s"]), train_tokens=train_tokens)
    del record["table"]  # val loss per step is in nats per *token*: not comparable across arms, see bpc_curves
    record["rows"] = comparison_rows(record)
    print(f"\n{TITLE} — {seeds} seed(s), preset {args.preset}, {train_tokens:,} training tokens per arm")
    print(format_rows(record["rows"], seeds))
    atomic_write_json(Path(args.results_dir) / f"{NAME}.json", record)
    plot_record(NAME, TITLE, record, args.images_dir, **CURVES)
    print(f"wrote {Path(args.results_dir) / f'{NAME}.json'} and {Path(args.images_dir) / f'{NAME}.png'}")
    return record


if __name__ == "__main__":
    run_cli(main)
