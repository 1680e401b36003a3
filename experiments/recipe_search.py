"""The CPU recipe, searched like a speedrun log: each step is one change to a recipe, trained against a wall-clock
budget on this machine, and kept only if it wins beyond seed noise.

    python -u experiments/recipe_search.py --budget 120 --steps demo-baseline demo-muon   # the demo's budget
    python -u experiments/recipe_search.py --budget 600 --steps cpu-baseline cpu-muon     # --preset cpu's budget
    python -u experiments/recipe_search.py --list                                          # every step defined

A step is a full set of GPTConfig/TrainConfig values for ModernGPT (not a diff: a loser is simply not carried
into the next step). Each run stops at its own max_steps or at --budget seconds of wall clock, evaluations
included (--max-time), whichever comes first; the row records the val loss at that point (the best checkpoint),
the steps done and the wall clock. Rows accumulate in results/recipe_<budget>s.json, one per step and machine:
each names the hardware it ran on, and a step rerun on another class of CPU adds a row beside the first one's.
"""
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

from abtest import plus_minus  # noqa: E402
from checks import check_float, check_int  # noqa: E402
from common import (REPO_ROOT, ArgumentParser, UserError, add_output_folders, atomic_write_json,  # noqa: E402
                    output_folder, read_json, run_cli)
from device import describe_hardware, pick_device  # noqa: E402
from model import GPTConfig  # noqa: E402
from presets import MODEL_FIELDS  # noqa: E402
from trainer import TrainConfig, train  # noqa: E402

OLD_CPU = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=32, dropout=0.0, max_steps=2000,
               eval_interval=250, eval_iters=20, lr=1e-3, min_lr=1e-4, schedule="cosine", warmup_steps=100)
# name -> (what changed, the step's full values). Steps are added as the search goes; none is ever edited after
# its row is recorded, so every row stays reproducible.
DEMO_BF16 = {**OLD_CPU, "max_steps": 1700, "eval_interval": 425}
DEMO = {**OLD_CPU, "max_steps": 1400, "eval_interval": 350}  # ends inside 120 s here, in bf16
DEMO_FP32 = {**DEMO, "schedule": "wsd", "decay_fraction": 0.2, "max_steps": 1300, "eval_interval": 325, "n_layer": 3,
             "dtype": "fp32"}  # the demo preset's fp32 values, forced to fp32
CPU = {**DEMO, "schedule": "wsd", "decay_fraction": 0.2, "max_steps": 6500, "eval_interval": 1300}
STEPS = {
    "demo-baseline": ("the --preset cpu of 2026-11-24, fp32, stopped by the budget", {**OLD_CPU, "dtype": "fp32"}),
    "demo-bf16": ("--dtype auto (bf16 on this CPU), 1700 steps to fit the budget, 4 evaluations instead of 8",
                  {**DEMO_BF16, "dtype": "auto"}),
    "demo-fit": ("1400 steps, so that the schedule ends inside the budget", DEMO),
    "demo-wsd": ("+ warmup-stable-decay instead of cosine", {**DEMO, "schedule": "wsd", "decay_fraction": 0.2}),
    "demo-lr": ("+ lr 2e-3 (wsd)", {**DEMO, "schedule": "wsd", "decay_fraction": 0.2, "lr": 2e-3}),
    "demo-muon": ("+ Muon (wsd, lr 2e-3; 1000 steps: Muon's steps are slower)",
                  {**DEMO, "schedule": "wsd", "decay_fraction": 0.2, "lr": 2e-3, "optimizer": "muon",
                   "max_steps": 1000, "eval_interval": 250}),
    "demo-margin": ("1300 steps instead of 1400: a margin for a shared machine's slow spells",
                    {**DEMO, "schedule": "wsd", "decay_fraction": 0.2, "max_steps": 1300, "eval_interval": 325}),
    "demo-wd0.3": ("demo-margin + weight decay 0.3 instead of 0.01 (the cpu-wd0.3 row)",
                   {**DEMO, "schedule": "wsd", "decay_fraction": 0.2, "max_steps": 1300, "eval_interval": 325,
                    "weight_decay": 0.3}),
    "cpu-baseline": ("the --preset cpu of 2026-11-24, fp32", {**OLD_CPU, "dtype": "fp32"}),
    "cpu-long": ("the demo's recipe (bf16, wsd), run for the budget: 6500 steps", {**CPU}),
    "cpu-block128": ("+ block 128 (twice the context, half the steps: 3200)",
                     {**CPU, "block_size": 128, "max_steps": 3200, "eval_interval": 800}),
    "cpu-6layers": ("+ 6 layers instead of 4 (3500 steps)", {**CPU, "n_layer": 6, "max_steps": 3500, "eval_interval": 875}),
    "cpu-6layers-long": ("6 layers for the whole budget: 4800 steps", {**CPU, "n_layer": 6, "max_steps": 4800,
                                                                        "eval_interval": 1200}),
    "cpu-decay": ("+ the last 40% of the steps decay instead of 20%", {**CPU, "n_layer": 6, "max_steps": 4800,
                                                                       "eval_interval": 1200, "decay_fraction": 0.4}),
    "cpu-final": ("6 layers, 5000 steps: 200 more than cpu-6layers-long",
                  {**CPU, "n_layer": 6, "max_steps": 5000, "eval_interval": 1250}),
    "cpu-wd": ("cpu-6layers-long + weight decay 0.1 instead of 0.01: it overfits (train 1.17 vs val 1.51 at the end)",
               {**CPU, "n_layer": 6, "max_steps": 4800, "eval_interval": 1200, "weight_decay": 0.1}),
    "cpu-wd0.3": ("weight decay 0.3 instead of 0.1", {**CPU, "n_layer": 6, "max_steps": 4800, "eval_interval": 1200,
                                                      "weight_decay": 0.3}),
    "cpu-wd1": ("weight decay 1.0 instead of 0.3", {**CPU, "n_layer": 6, "max_steps": 4800, "eval_interval": 1200,
                                                    "weight_decay": 1.0}),
    # a CPU without native bf16 trains in fp32, each step slower than bf16's on a CPU with it: fewer steps fit
    "cpu-5layers": ("cpu-wd0.3 with 5 layers instead of 6 (for fp32-only CPUs: more steps in the budget)",
                    {**CPU, "n_layer": 5, "max_steps": 4800, "eval_interval": 1200, "weight_decay": 0.3}),
    "cpu-4layers": ("cpu-wd0.3 with 4 layers instead of 6 (for fp32-only CPUs)",
                    {**CPU, "n_layer": 4, "max_steps": 4800, "eval_interval": 1200, "weight_decay": 0.3}),
    "demo-3layers": ("demo-margin with 3 layers instead of 4 (for fp32-only CPUs: more steps in the budget)",
                     {**DEMO, "schedule": "wsd", "decay_fraction": 0.2, "max_steps": 1300, "eval_interval": 325,
                      "n_layer": 3}),
    "demo-2layers": ("demo-margin with 2 layers instead of 4 (for fp32-only CPUs)",
                     {**DEMO, "schedule": "wsd", "decay_fraction": 0.2, "max_steps": 1300, "eval_interval": 325,
                      "n_layer": 2}),
    # the fp32 demo, searched on a CPU with native bf16 told to train in fp32 (its fp32 steps are faster than an
    # AVX2-only CPU's, so these rows rank the changes; the AVX2 rows above say what that CPU reaches)
    "demo-3layers-fp32": ("demo-3layers in fp32 (--dtype fp32): the baseline of the fp32 steps below",
                          {**DEMO_FP32}),
    "demo-fp32-batch16": ("+ batch 16 and twice the steps (2600): twice the updates for the same tokens",
                          {**DEMO_FP32, "batch_size": 16, "max_steps": 2600, "eval_interval": 650}),
    "demo-fp32-lr": ("+ lr 2e-3 instead of 1e-3", {**DEMO_FP32, "lr": 2e-3}),
    "demo-fp32-decay0.4": ("+ the last 40% of the run decays instead of 20%", {**DEMO_FP32, "decay_fraction": 0.4}),
    "demo-fp32-2layers": ("2 layers instead of 3, for 1700 steps (the demo-2layers row finished before its budget)",
                          {**DEMO_FP32, "n_layer": 2, "max_steps": 1700, "eval_interval": 425}),
}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--budget", type=float, default=120.0, help="seconds of wall clock per run (--max-time)")
    p.add_argument("--steps", nargs="+", default=[], help="the steps to run (see --list)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per step")
    p.add_argument("--list", action="store_true", help="print every step and exit")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | mps")
    p.add_argument("--data", default=None, help="training text (default: data/input.txt)")
    add_output_folders(p, images=False)
    p.add_argument("--runs-dir", type=output_folder, default=str(REPO_ROOT / "checkpoints" / "recipe"),
                   help="where each row's run folders go")
    return p


def step_configs(values: dict, budget: float, seed: int, out_dir: Path, args) -> tuple[GPTConfig, TrainConfig]:
    model = GPTConfig.named("modern", **{k: v for k, v in values.items() if k in MODEL_FIELDS})
    train_config = TrainConfig(**{k: v for k, v in values.items() if k not in MODEL_FIELDS}, max_time=budget, seed=seed,
                               device=args.device, data=args.data, out_dir=str(out_dir), overwrite=True,
                               sample_tokens=0)
    train_config.validate()
    return model, train_config


def run_step(name: str, args) -> dict:
    what, values = STEPS[name]
    runs = []
    for seed in range(args.seeds):
        model, tc = step_configs(values, args.budget, seed, Path(args.runs_dir) / name / f"seed{seed}", args)
        print(f"--- {name} (seed {seed}): {what}", flush=True)
        summary = train(model, tc, log=lambda *_: None)
        runs.append(summary)
        print(f"    val {summary['best_val_loss']:.4f} after {summary['steps']} steps, {summary['elapsed_s']:.0f} s, "
              f"{summary['tokens_per_sec']:,.0f} tok/s ({summary['dtype']})", flush=True)
    vals = [r["best_val_loss"] for r in runs]
    return {"step": name, "change": what, "values": values, "seeds": args.seeds, "budget_s": args.budget,
            "val": [statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0], "vals": vals,
            "steps_done": [r["steps"] for r in runs], "elapsed_s": [r["elapsed_s"] for r in runs],
            "tokens_per_sec": [r["tokens_per_sec"] for r in runs], "params": runs[0]["params"],
            "dtype": runs[0]["dtype"], "hardware": describe_hardware(pick_device(args.device)),
            "date": datetime.now(timezone.utc).date().isoformat(), "torch": torch.__version__}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.list:
        for name, (what, values) in STEPS.items():
            print(f"{name}: {what}\n    {values}")
        return {}
    check_float(args.budget, "--budget", above=0.0)
    check_int(args.seeds, "--seeds", 1, 100)
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown or not args.steps:
        raise UserError(f"unknown or no --steps {' '.join(unknown)}; choose from: {', '.join(STEPS)}")
    path = Path(args.results_dir) / f"recipe_{args.budget:g}s.json"
    record = {"budget_s": args.budget, "rows": []}
    if path.exists():
        record = read_json(path)
        rows = record.get("rows") if isinstance(record, dict) else None
        if not (isinstance(rows, list) and all(isinstance(r, dict) and {"step", "hardware"} <= r.keys() for r in rows)):
            raise UserError(f"{path} is not a record of the recipe search (a list of rows, each a step on a machine); "
                            "restore it or remove it")
    started = time.perf_counter()
    for name in args.steps:
        row = run_step(name, args)
        record["rows"] = [r for r in record["rows"] if (r["step"], r["hardware"]) != (name, row["hardware"])] + [row]
        atomic_write_json(path, record)
        print(f"{name}: val {plus_minus(row['val'], row['seeds'])} at {args.budget:g} s", flush=True)
    print(f"wrote {path} in {time.perf_counter() - started:.0f} s")
    return record


if __name__ == "__main__":
    run_cli(main)
