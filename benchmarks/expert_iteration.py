"""Is PPO the limit, or the step from train prompts to held-out test prompts? Expert iteration
(best-of-n distillation) beside PPO, judged on both.

PPO trains on the world's train prompts and is judged on its test prompts, whose entity
combinations (the numbers of a sum, a word and its transform, ...) never occur in training
(design.md, "Splits"). Expert iteration is the simplest other way to turn a reward into a
policy: sample n answers per train prompt from the SFT policy at temperature 1, keep the one a
reward scores highest, and fine-tune the SFT policy on those picks (the rejection-sampling
fine-tuning of Touvron et al. 2023, section 3.2.3; RAFT, Dong et al. 2023). With the gold labeler
as the reward its picks are the best answers the SFT policy has for each train prompt.

This script builds that run with the lab's own SFT stage (`sft.base_run` = the SFT run,
`sft.data` = the picks) and judges its greedy answers against SFT's, as the lab's win rate does
(gold labeler, ties half, 95% interval over prompts), on the test prompts and on train prompts
(`--train-per-family` of each family, seeded). `--policies` adds other runs (PPO, PPO-ptx, the
oracle arm's PPO, ...) to the same two columns: a policy that wins on the prompts it trained on
and not on the test prompts is held back by what carries over, not by its optimiser.

    PYTHONPATH=. .venv/bin/python benchmarks/expert_iteration.py --sft SFT_RUN [--n 8] \\
        [--pick gold | --pick rm --rm RM_RUN] [--policies RUN ...] [--threads 2]

The run is written to the SFT run's workspace (a `sft` run whose config names its base run and
data file, so no later stage takes it for the workspace's SFT run); the picks to
`<workspace>/cache/expert_iteration_<SFT run>_<pick>_n<N>_seed<S>.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

import torch

from rlhf import sft
from rlhf.best_of_n import best_of
from rlhf.breakdown import versus, versus_cells
from rlhf.errors import LabError
from rlhf.evaluate import greedy_judgements
from rlhf.generation import generate
from rlhf.models import load_policy
from rlhf.outputs import world_of_run
from rlhf.pretrain import pick_eval_prompts
from rlhf.reward import load_reward_model
from rlhf.runs import Run


def train_sample(world: Any, per_family: int, seed: int) -> list[Any]:
    """`per_family` train prompts of each family (all of a smaller one), seeded."""
    rng, picked = random.Random(seed), []
    train = world.prompts("train")
    for fam in sorted({p.family for p in train}):
        pool = [p for p in train if p.family == fam]
        picked += rng.sample(pool, min(per_family, len(pool)))
    return picked


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft", required=True, metavar="SFT_RUN", help="the SFT run to improve")
    ap.add_argument("--n", type=int, default=8, help="samples per train prompt (>= 1)")
    ap.add_argument("--pick", choices=("gold", "rm"), default="gold", help="what picks the best")
    ap.add_argument("--rm", metavar="RM_RUN", help="the reward model run, with --pick rm")
    ap.add_argument("--policies", nargs="*", default=[], metavar="RUN", help="other rows")
    ap.add_argument(
        "--baseline",
        metavar="RUN",
        help="the run every row is judged against (default: --sft; set it to the first SFT "
        "run when --sft is an earlier round's expert iteration run)",
    )
    ap.add_argument("--train-per-family", type=int, default=60, help="train prompts judged")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be at least 1, got {args.n}")
    if (args.pick == "rm") != bool(args.rm):
        ap.error("--rm RM_RUN goes with --pick rm, and only with it")
    torch.set_num_threads(args.threads)
    try:
        sft_run = Run.open(args.sft)
        world = world_of_run(sft_run.dir)
        rm = load_reward_model(Run.open(args.rm).model_dir) if args.rm else None
        others = [Run.open(r) for r in args.policies]
        baseline = Run.open(args.baseline) if args.baseline else sft_run
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    workspace = sft_run.dir.resolve().parent.parent

    # 1. Sample n answers per train prompt and keep the best by the chosen reward.
    t0 = time.perf_counter()
    prompts = world.prompts("train")
    many = [p.text for p in prompts for _ in range(args.n)]
    model, tokenizer = load_policy(sft_run.model_dir)
    sampled = generate(
        model, tokenizer, many, args.max_new_tokens, seed=args.seed, batch_size=256
    ).texts
    gold = [world.gold.score(prompts[i // args.n], t).quality for i, t in enumerate(sampled)]
    key = rm.score(many, sampled).tolist() if rm is not None else gold
    best = best_of(gold, args.n, key)  # one pick per prompt
    # Named after the run sampled from: a second round (--sft the first round's run) must not
    # overwrite the file the first round's run records as its sft.data.
    name = f"expert_iteration_{sft_run.dir.name}_{args.pick}_n{args.n}_seed{args.seed}.jsonl"
    out = workspace / "cache" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    empty = 0  # picks that are EOS alone: a demonstrations file cannot hold an empty answer
    with open(out, "w", encoding="utf-8") as f:
        for p, j in zip(prompts, best, strict=True):
            if not sampled[j].strip():
                empty += 1
                continue
            # The completion starts with the space the prompt's "A:" wants, as SFT's demos do.
            f.write(json.dumps({"prompt": p.text, "completion": " " + sampled[j].lstrip()}) + "\n")
    t_sample = time.perf_counter() - t0
    mean_all, mean_picked = sum(gold) / len(gold), sum(gold[j] for j in best) / len(best)

    # 2. Fine-tune the SFT policy on the picks with the lab's SFT stage.
    cfg = sft_run.config
    cfg.workspace, cfg.threads = str(workspace), args.threads
    cfg.sft.base_run, cfg.sft.data = str(sft_run.dir.resolve()), str(out)
    t1 = time.perf_counter()
    ei_run = sft.train(cfg, progress=not args.quiet)
    t_train = time.perf_counter() - t1

    # 3. Judge greedy answers against SFT's on test prompts and on train prompts.
    splits = {
        "test": pick_eval_prompts(world, 10_000),
        "train": train_sample(world, args.train_per_family, args.seed),
    }
    base = {
        s: greedy_judgements(baseline.model_dir, world, ps, args.max_new_tokens)
        for s, ps in splits.items()
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, run in [(f"expert iteration ({args.pick}, n={args.n})", ei_run)] + [
        (r.dir.name, r) for r in others
    ]:
        rows[name] = {}
        for s, ps in splits.items():
            judged = greedy_judgements(run.model_dir, world, ps, args.max_new_tokens)
            rows[name][s] = versus(judged, base[s], 1000, args.seed)

    print(
        f"\n{len(prompts)} train prompts, {args.n} SFT samples each at T = 1, best by "
        f"{args.pick}: gold quality {mean_picked:.3f} (all samples {mean_all:.3f}); sampling "
        f"{t_sample:.0f} s, fine-tuning {t_train:.0f} s; run {ei_run.dir}"
        + (f"; {empty} empty picks left out" if empty else "")
        + "\n"
    )
    n_train = len(splits["train"])
    print(
        f"Greedy win rate against {baseline.dir.name}'s greedy answers (gold labeler, ties "
        f"half); test: "
        f"{len(splits['test'])} prompts, train: {n_train} ({args.train_per_family} a family)\n"
    )
    print("| run | test prompts | made right / wrong | train prompts | made right / wrong |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        cells = [versus_cells(d) for d in (r["test"], r["train"])]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return {
        "run": str(ei_run.dir),
        "data": str(out),
        "gold_picked": mean_picked,
        "gold_all": mean_all,
        "empty_picks": empty,
        "rows": rows,
    }


if __name__ == "__main__":
    main()
