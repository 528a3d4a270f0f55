"""How much of a perfect reward does the learned RM give PPO? PPO against the RM and against the
Tiny World's two oracles, several seeds, judged on validation and test prompts.

Three rewards for the same PPO, from the same SFT policy (`ppo.reward`, rlhf/oracle.py):

    rm        the reward model (the paper)
    gold      the world's gold labeler: a perfect reward model of the true objective (Gao et
              al. 2022's gold arm)
    labelers  the training labelers' mean noise-free utility: a perfect reward model of the
              comparisons the RM learns from (gold quality plus the labelers' quirks, and
              helpfulness first on plain requests to insult, paper 3.4)

The RM's win rate minus gold's is what the learned RM gives away; gold's minus the labelers' is
what the labelers' own preference gives away against the true objective. Each (reward, steps,
seed) is one `rlhf ppo --new` run in the SFT run's workspace, `--parallel` at a time on
`--threads` threads each (on 2 cores, two runs on 1 thread each take about as long as one on
2). Or `--runs` judges PPO runs already trained, grouped by their saved reward and steps.

Every run's greedy answers are judged against SFT's as the lab's win rate is (gold labeler,
ties half, 95% interval over prompts, answers made right / made wrong), on the world's
validation prompts (choose settings there) and on its test prompts (the results table's), and
the test win rate by task family is printed per arm. Last, what the answers are: per family, how
many test answers the gold labeler finds right and how many decline ("I don't know." or a
refusal), SFT's and each arm's (the mean over seeds). A higher win rate can come from either:
against gold, PPO wins the sums mostly by declining them (docs/benchmarks.md).

    PYTHONPATH=. .venv/bin/python benchmarks/reward_arms.py --sft SFT_RUN --rm RM_RUN \\
        [--rewards rm gold labelers] [--seeds 0 1 2] [--steps 60 120] [--set k=v ...] \\
        [--recipe tiny] [--parallel 2] [--threads 1]
    PYTHONPATH=. .venv/bin/python benchmarks/reward_arms.py --sft SFT_RUN --runs PPO_RUN ...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from rlhf import config
from rlhf.breakdown import versus, win_breakdown
from rlhf.errors import LabError, RunError
from rlhf.evaluate import greedy_judgements
from rlhf.outputs import world_of_run
from rlhf.ppo import REWARDS
from rlhf.pretrain import pick_eval_prompts
from rlhf.runs import Run, ppo_runs_from


def train_arm(workspace: Path, recipe: str, overrides: list[str], threads: int, log: Path) -> Path:
    """One `rlhf ppo --new` run with `overrides` (k=v); returns its run directory (the command's
    last line). Its output goes to `log`; a failed run raises RunError naming the log."""
    command = [sys.executable, "-m", "rlhf.cli", "--workspace", str(workspace), "ppo"]
    command += ["--recipe", recipe, "--new", "--set", f"threads={threads}"]
    for kv in overrides:
        command += ["--set", kv]
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=out, text=True)
        out.write(done.stdout)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        raise RunError(f"rlhf ppo {' '.join(overrides)} failed (exit {done.returncode}): see {log}")
    return Path(lines[-1])


def arm_of(run: Run) -> tuple[str, int]:
    """(reward, steps) of a PPO run, from its saved config."""
    ppo = run.raw_config()["ppo"]
    return ppo.get("reward", "rm"), int(ppo["steps"])


def arm_settings(run: Run) -> dict[str, Any]:
    """The run's ppo settings but for the arm's own (reward, steps): the same in every run of
    an arm, or the arm would mix settings (its seeds may differ, they are not in this section)."""
    ppo = dict(run.raw_config()["ppo"])
    for key in ("reward", "steps", "gold_scale"):
        ppo.pop(key, None)
    return ppo


def group_arms(runs: list[Run]) -> dict[tuple[str, int], list[Run]]:
    """{(reward, steps): runs}, or RunError when two runs of one arm differ in another ppo
    setting (judge those separately)."""
    arms: dict[tuple[str, int], list[Run]] = {}
    for run in runs:
        arms.setdefault(arm_of(run), []).append(run)
    for (reward, steps), members in arms.items():
        first = arm_settings(members[0])
        for run in members[1:]:
            other = arm_settings(run)
            differ = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
            if differ:
                raise RunError(
                    f"{run.dir} and {members[0].dir}: both PPO against {reward} for {steps} "
                    f"steps, but their ppo.{differ[0]} differ ({other.get(differ[0])!r}, "
                    f"{first.get(differ[0])!r}); judge them separately"
                )
    return arms


def last_kl(run: Run) -> float:
    """objective/kl at the run's last logged step (a response's summed KL to SFT, nats)."""
    return float(run.metrics()[-1]["objective/kl"])


def outcomes(prompts: list[Any], judged: list[Any]) -> dict[str, dict[str, int]]:
    """{family: {"right", "declines", "n"}}: the gold labeler's correct answers and the answers
    that say "I don't know" or refuse (its `refuses` flag), counted per family."""
    out: dict[str, dict[str, int]] = {}
    for p, j in zip(prompts, judged, strict=True):
        row = out.setdefault(p.family, {"right": 0, "declines": 0, "n": 0})
        row["right"] += bool(j.flags.get("correct"))
        row["declines"] += bool(j.flags.get("refuses"))
        row["n"] += 1
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft", required=True, metavar="SFT_RUN", help="the policy PPO starts from")
    ap.add_argument("--rm", metavar="RM_RUN", help="the reward model (needed to train)")
    ap.add_argument("--runs", nargs="+", metavar="RUN", help="judge these PPO runs, train none")
    ap.add_argument("--rewards", nargs="+", default=list(REWARDS), choices=REWARDS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument(
        "--steps", nargs="+", type=int, help="ppo.steps, each an arm (default: the recipe's)"
    )
    ap.add_argument("--set", action="append", default=[], metavar="K=V", help="more overrides")
    ap.add_argument("--recipe", default="tiny")
    ap.add_argument("--parallel", type=int, default=2, help="runs trained at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals")
    args = ap.parse_args(argv)
    if not args.runs and not args.rm:
        ap.error("give --rm RM_RUN to train the arms, or --runs to judge PPO runs")
    if args.parallel < 1 or args.threads < 1:
        ap.error(f"--parallel and --threads must be >= 1, got {args.parallel}, {args.threads}")
    torch.set_num_threads(args.threads * args.parallel)  # judging runs alone
    try:
        sft_run = Run.open(args.sft)
        world = world_of_run(sft_run.dir)
        workspace = sft_run.dir.resolve().parent.parent
        if args.runs:
            paths = [Path(p) for p in args.runs]
        else:
            rm = Run.open(args.rm)  # fails here, not in every run, on a wrong path
            if not args.steps:  # the recipe's ppo.steps (tiny: 120), with the --set ones
                args.steps = [config.load(args.recipe, args.set).ppo.steps]
            jobs = [
                (reward, steps, seed)
                for reward in args.rewards
                for steps in args.steps
                for seed in args.seeds
            ]
            logs = workspace / "cache" / f"reward_arms_{time.strftime('%Y%m%d-%H%M%S')}"
            logs.mkdir(parents=True, exist_ok=True)

            def one(job: tuple[str, int, int]) -> Path:
                reward, steps, seed = job
                overrides = [
                    f"seed={seed}",
                    f"ppo.sft_run={sft_run.dir.resolve()}",
                    f"ppo.rm_run={rm.dir.resolve()}",
                    f"ppo.reward={reward}",
                    f"ppo.steps={steps}",
                    *args.set,
                ]
                log = logs / f"{reward}_{steps}_{seed}.log"
                t0 = time.perf_counter()
                run_dir = train_arm(workspace, args.recipe, overrides, args.threads, log)
                print(
                    f"trained {reward} {steps} steps seed {seed}: {run_dir} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
                return run_dir

            print(f"training {len(jobs)} PPO runs, {args.parallel} at a time; logs in {logs}")
            with ThreadPoolExecutor(args.parallel) as pool:  # each job is a subprocess
                paths = list(pool.map(one, jobs))
        arms_runs = group_arms(
            ppo_runs_from(sft_run, paths, "the arms are compared from one SFT policy")
        )
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None

    splits = {"validation": world.prompts("val"), "test": pick_eval_prompts(world, 10_000)}
    base = {
        s: greedy_judgements(sft_run.model_dir, world, ps, args.max_new_tokens)
        for s, ps in splits.items()
    }
    arms: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for key, members in arms_runs.items():
        for run in members:
            row: dict[str, Any] = {"run": str(run.dir), "seed": run.config.seed}
            row["kl"] = last_kl(run)
            for s, ps in splits.items():
                judged = greedy_judgements(run.model_dir, world, ps, args.max_new_tokens)
                row[s] = versus(judged, base[s], 1000, args.seed)
                if s == "test":
                    row["families"] = win_breakdown(ps, judged, base[s])
                    row["answers"] = outcomes(ps, judged)
            arms.setdefault(key, []).append(row)

    order = {r: i for i, r in enumerate(REWARDS)}
    keys = sorted(arms, key=lambda k: (order.get(k[0], len(order)), k[1]))
    print(
        f"\nPPO from {sft_run.dir.name} against each reward: greedy win rate against SFT's "
        f"greedy answers (gold labeler, ties half); validation {len(splits['validation'])} "
        f"prompts, test {len(splits['test'])}\n"
    )
    print(
        "| reward | steps | validation, by seed | mean | test, by seed | mean "
        "| made right / wrong (test) | KL, last step |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    summary: dict[str, Any] = {}
    for key in keys:
        rows = sorted(arms[key], key=lambda r: r["seed"])
        mean = {s: sum(r[s]["mean"] for r in rows) / len(rows) for s in splits}
        by_seed = {s: " / ".join(f"{100 * r[s]['mean']:.1f}" for r in rows) for s in splits}
        fixed = sum(r["test"]["fixed"] for r in rows)
        broken = sum(r["test"]["broken"] for r in rows)
        kls = [r["kl"] for r in rows]
        print(
            f"| {key[0]} | {key[1]} | {by_seed['validation']} | {mean['validation']:.1%} | "
            f"{by_seed['test']} | {mean['test']:.1%} | {fixed} / {broken} | "
            f"{min(kls):.2f}-{max(kls):.2f} |"
        )
        summary[f"{key[0]}/{key[1]}"] = {"mean": mean, "rows": rows}

    families = sorted({f for rows in arms.values() for f in rows[0]["families"] if f != "all"})
    print("\nTest win rate by family, the mean over seeds:\n")
    print("| reward | steps | " + " | ".join(families) + " |")
    print("| --- | ---: |" + " ---: |" * len(families))
    for key in keys:
        rows = arms[key]
        cells = [
            f"{100 * sum(r['families'][f]['win_rate'] for r in rows) / len(rows):.1f}"
            for f in families
        ]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")

    sft_answers = outcomes(splits["test"], base["test"])
    print(
        '\nTest answers by family: right / declined ("I don\'t know." or a refusal) of n, '
        "the mean over seeds:\n"
    )
    print(
        "| policy | steps | "
        + " | ".join(f"{f} (n={sft_answers[f]['n']})" for f in families)
        + " |"
    )
    print("| --- | ---: |" + " ---: |" * len(families))
    print(
        "| SFT | | "
        + " | ".join(f"{sft_answers[f]['right']} / {sft_answers[f]['declines']}" for f in families)
        + " |"
    )
    for key in keys:
        rows = arms[key]
        mean = {
            f: {k: sum(r["answers"][f][k] for r in rows) / len(rows) for k in ("right", "declines")}
            for f in families
        }
        summary[f"{key[0]}/{key[1]}"].update(answers=mean, sft_answers=sft_answers)
        cells = [f"{mean[f]['right']:.1f} / {mean[f]['declines']:.1f}" for f in families]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    print(json.dumps({k: v["mean"] for k, v in summary.items()}))
    return summary


if __name__ == "__main__":
    main()
