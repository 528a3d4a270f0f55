"""Averaging the weights of PPO policies trained from one SFT model: does it beat its members?

Beyond the paper. PPO runs that differ only by seed start from the same SFT weights and move
a little way from them, so their weights can be averaged into one policy, as model soups do
for fine-tuned models (Wortsman et al. 2022) and WARP does for RLHF policies (Rame et al. 2024,
who find the average gets more reward for its KL than any member). With `--eta` the average is
moved from SFT by that fraction of its step: theta = theta_SFT + eta * (mean(theta_i) -
theta_SFT); 1 is the plain average, below 1 interpolates back towards SFT (WARP's last step),
above 1 extrapolates (ExPO, Zheng et al. 2024).

The script judges each member's greedy answers and the average's against the SFT policy's, as
the lab's win rate does (gold labeler, ties half, 95% interval over prompts, answers made
right / made wrong), on the world's validation prompts and on its test prompts, and prints one
table. Choose a setting on the validation column: the test column is the results table's.

    PYTHONPATH=. .venv/bin/python benchmarks/policy_average.py --sft SFT_RUN \\
        --runs PPO_RUN PPO_RUN ... [--eta 1.0] [--threads 2]

The average is saved (safetensors, save_pretrained) to
`<workspace>/cache/policy_average_<n>_<hash of the runs' names>_eta<eta>/model`, where
`rlhf.models.load_policy` can read it; it is not a run of the workspace, so no stage or
results table picks it up.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import torch

from rlhf.breakdown import versus, versus_cells
from rlhf.errors import LabError, RunError
from rlhf.evaluate import greedy_judgements
from rlhf.models import load_policy
from rlhf.outputs import world_of_run
from rlhf.pretrain import pick_eval_prompts
from rlhf.runs import Run, ppo_runs_from


def members(sft_run: Run, paths: list[str]) -> list[Run]:
    """The PPO runs to average: finished, and each trained from `sft_run` (eval.json's sft_run),
    since an average of policies from other starting weights is not a policy near either."""
    return ppo_runs_from(sft_run, paths, "only policies from the same SFT weights can be averaged")


def average_policy(sft_dir: Path, run_dirs: list[Path], eta: float) -> tuple[Any, Any]:
    """(model, tokenizer): the SFT model holding theta_SFT + eta * (mean of the runs' weights -
    theta_SFT), summed in float32 and cast back to the SFT model's dtype; the runs must hold the
    SFT model's tensors, same shapes."""
    model, tokenizer = load_policy(sft_dir)
    base = model.state_dict()
    total = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in base.items()}
    for d in run_dirs:
        state = load_policy(d)[0].state_dict()
        if state.keys() != base.keys() or any(state[k].shape != base[k].shape for k in base):
            raise RunError(f"{d}: its policy's tensors are not the SFT model's ({sft_dir})")
        for k, v in state.items():
            total[k] += v.float()
    n = len(run_dirs)  # the new weights are all computed before any is copied into the model
    new = {k: v.float() + eta * (total[k] / n - v.float()) for k, v in base.items()}
    model.load_state_dict({k: v.to(base[k].dtype) for k, v in new.items()})
    return model, tokenizer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft", required=True, metavar="SFT_RUN", help="the runs' SFT run")
    ap.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="PPO runs (>= 2)")
    ap.add_argument("--eta", type=float, default=1.0, help="fraction of the average's step")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        ap.error(f"--runs needs at least 2 PPO runs to average, got {len(args.runs)}")
    if args.eta <= 0:
        ap.error(f"--eta must be > 0, got {args.eta}")
    torch.set_num_threads(args.threads)
    try:
        sft_run = Run.open(args.sft)
        runs = members(sft_run, args.runs)
        world = world_of_run(sft_run.dir)
        model, tokenizer = average_policy(sft_run.model_dir, [r.model_dir for r in runs], args.eta)
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    workspace = sft_run.dir.resolve().parent.parent
    # Named by the runs averaged (a hash of their names) and eta: another set never overwrites it.
    key = hashlib.sha256("\n".join(r.dir.name for r in runs).encode()).hexdigest()[:8]
    name = f"policy_average_{len(runs)}_{key}_eta{args.eta:g}"
    out = workspace / "cache" / name / "model"
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)  # with the SFT model's config
    tokenizer.save_pretrained(out)

    splits = {"validation": world.prompts("val"), "test": pick_eval_prompts(world, 10_000)}
    base = {
        s: greedy_judgements(sft_run.model_dir, world, ps, args.max_new_tokens)
        for s, ps in splits.items()
    }
    rows: dict[str, dict[str, Any]] = {}
    for label, model_dir in [(r.dir.name, r.model_dir) for r in runs] + [("average", out)]:
        rows[label] = {}
        for s, ps in splits.items():
            judged = greedy_judgements(model_dir, world, ps, args.max_new_tokens)
            rows[label][s] = versus(judged, base[s], 1000, args.seed)
    means = {s: sum(rows[r.dir.name][s]["mean"] for r in runs) / len(runs) for s in splits}

    print(
        f"\nThe average of {len(runs)} PPO runs from {sft_run.dir.name} (eta {args.eta:g}): {out}"
    )
    print(
        f"Greedy win rate against SFT's greedy answers (gold labeler, ties half); validation "
        f"{len(splits['validation'])} prompts, test {len(splits['test'])}\n"
    )
    print("| policy | validation | made right / wrong | test | made right / wrong |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, r in rows.items():
        cells = [versus_cells(d) for d in (r["validation"], r["test"])]
        print(f"| {'**average**' if label == 'average' else label} | " + " | ".join(cells) + " |")
    print(
        f"| the members' mean | {means['validation']:.1%} | | {means['test']:.1%} | |\n"
        f"\naverage - members' mean: validation "
        f"{rows['average']['validation']['mean'] - means['validation']:+.1%}, test "
        f"{rows['average']['test']['mean'] - means['test']:+.1%}"
    )
    return {"model": str(out), "rows": rows, "members_mean": means}


if __name__ == "__main__":
    main()
