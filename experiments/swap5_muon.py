"""Swap 5: AdamW -> Muon for the blocks' matrices (AdamW stays for embeddings, norms and biases), on ModernGPT.

Compared twice, because Muon's Newton-Schulz iterations make each step slower:
- at equal steps: the preset's steps for both arms (does Muon learn more per step?);
- at equal wall clock: Muon again with as many steps as fit in AdamW's time, measured per seed from the
  equal-steps runs (does it still win per second on this machine?). The schedule completes in both.

    python -u experiments/swap5_muon.py --preset ab-cpu      # 3 seeds, sized for a CPU
"""
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from abtest import mean_std, run_arms, run_swap  # noqa: E402
from common import run_cli  # noqa: E402
from model import GPTConfig  # noqa: E402


def equal_wall_clock(args, model, tc, seeds, results) -> dict:
    """Muon with the steps that fit in AdamW's wall clock of the same seed."""
    adamw, muon = results["adamw"]["elapsed_s"], results["muon"]["elapsed_s"]
    steps = [max(1, int(tc.max_steps * a / m)) for a, m in zip(adamw, muon)]  # Muon's steps per AdamW's seconds
    same_time = {}
    for seed, n in enumerate(steps):
        arm = run_arms("swap5_muon", {"muon, equal time": {"optimizer": "muon", "max_steps": n}},
                       model, replace(tc, max_steps=n), 1, args.runs_dir, first_seed=seed,
                       resume=args.resume)["muon, equal time"]
        for key, value in arm.items():
            if isinstance(value, list):
                same_time.setdefault(key, []).extend(value)
    print(f"Muon at AdamW's wall clock: {steps} steps, best val {mean_std(same_time['best_val'])}")
    return {"equal_wall_clock": {"steps": steps, "adamw_elapsed_s": adamw, "muon_elapsed_s": same_time["elapsed_s"],
                                 "best_val": mean_std(same_time["best_val"]),
                                 "adamw_best_val": mean_std(results["adamw"]["best_val"]),
                                 "curves": same_time["curves"]}}


def main(argv=None):
    return run_swap("swap5_muon", "Swap 5: AdamW vs Muon", {"adamw": {}, "muon": {"optimizer": "muon"}}, argv,
                    extra_fn=equal_wall_clock, base=GPTConfig.named("modern"))


if __name__ == "__main__":
    run_cli(main)
