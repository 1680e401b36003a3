"""Your own A/B experiment, from the command line: name it, give each arm its config changes, and it runs like the
swap scripts (the same harness, src/abtest.py: every arm of a seed sees the same batches, the spread over seeds
says what is noise), writing results/<name>.json and images/<name>.png.

    python -u experiments/ab.py lr --arm "lr=1e-3" --arm "lr=3e-3" --preset ab-cpu
    python -u experiments/ab.py heads --base modern --arm "4 heads:n_head=4" --arm "8 heads:n_head=8"
    python -u experiments/ab.py wd --arm "wd 0.01:weight_decay=0.01" --arm "wd 0.3:weight_decay=0.3" --seeds 5
    python -u experiments/ab.py batch --arm "batch 64:" --arm "batch 32:batch_size=32,max_steps=4000"
    python -u experiments/ab.py compiled --base vanilla --arm "eager:compile=off" --arm "compiled:compile=on"
    python experiments/ab.py lr --arm "lr=1e-3" --arm "lr=3e-3" --replot     # redraw the figure only

An arm is `LABEL:FIELD=VALUE,FIELD=VALUE`, or only the changes (the label is then the changes themselves); the
fields are the training scripts' flags, underscored (`--n-head` is n_head). The first arm is the baseline the
others are compared with; an arm with no changes (`baseline:`) is the preset itself. Arms that differ in tokens per
step (batch_size, block_size, grad_accum) are compared at equal training tokens instead of equal steps.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from abtest import AB_PRESETS, AB_SCRIPT, parse_arm, run_parsed, swap_parser  # noqa: E402
from common import UserError, run_cli  # noqa: E402
from model import CONFIGS, GPTConfig  # noqa: E402

def parse_arms(specs: list[str]) -> dict[str, dict]:
    arms = dict(parse_arm(spec) for spec in specs)
    if len(specs) < 2:
        raise UserError("an A/B experiment needs at least two arms: give --arm twice or more")
    if len(arms) < len(specs):
        raise UserError("two arms have the same label; name them (--arm 'LABEL:FIELD=VALUE')")
    return arms


def check_name(name: str, results_dir: Path) -> None:
    """A name that makes a file name, and whose results file, if there is one, an earlier run of this script wrote:
    the project's own records (the docs are rendered from them) are never replaced."""
    if not name or not all(ch.isalnum() or ch in "_.-" for ch in name) or name.startswith("."):
        raise UserError(f"experiment name {name!r}: use letters, digits, '_', '.' and '-' (it names the results file)")
    path = results_dir / f"{name}.json"
    try:
        written_by = json.loads(path.read_text()).get("written_by") if path.exists() else AB_SCRIPT
    except (OSError, ValueError, AttributeError):
        written_by = None
    if written_by != AB_SCRIPT:
        raise UserError(f"{path} holds results this script did not write (the docs may be rendered from them); "
                        "choose another experiment name")


def main(argv=None) -> dict:
    parser = swap_parser(__doc__, (*AB_PRESETS, "cpu"))
    parser.add_argument("name", help="the experiment's name: results/<name>.json, images/<name>.png")
    parser.add_argument("--arm", action="append", default=[], metavar="LABEL:FIELD=VALUE,...",
                        help="one arm (give two or more; the first is the baseline)")
    parser.add_argument("--base", choices=sorted(CONFIGS), default="modern", help="the model every arm changes")
    args = parser.parse_args(argv)
    check_name(args.name, Path(args.results_dir))
    title = f"A/B: {args.name}"
    if args.replot:
        return run_parsed(args.name, title, {}, args)
    return run_parsed(args.name, title, parse_arms(args.arm), args, base=GPTConfig.named(args.base),
                      extra_fn=lambda *_: {"written_by": AB_SCRIPT, "base": args.base})


if __name__ == "__main__":
    run_cli(main)
