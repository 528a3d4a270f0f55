"""How far can reweighting the SFT policy's own samples go? Best-of-n against SFT's greedy
answer, on the world's test prompts, judged by the gold labeler.

PPO with a KL penalty looks for the policy that maximises reward - beta * KL(pi || pi_SFT);
best-of-n sampling is the standard non-parametric stand-in for it (Stiennon et al. 2020,
Gao et al. 2022): draw n samples from the SFT policy at temperature 1 and keep the one a reward
scores highest. Its KL from the SFT policy is at most log n - (n - 1) / n nats, so a row of
this table says what win rate a policy within that KL of SFT can reach by choosing among
answers SFT already gives, with:

    gold      the world's gold labeler as the reward: a perfect reward model of the true
              objective (the oracle arm's reward, `ppo.reward=gold`)
    labelers  the training labelers' mean perceived utility without its noise: a perfect
              reward model of the comparisons the RM learns from (they put helpfulness first
              on plain requests to insult, paper 3.4; the gold labeler does not)
    RM        the reward model PPO trains against (`--rm`)

Each prompt's N samples are split into N / n disjoint groups of n; each group's pick is judged
against SFT's greedy answer (1 win, 0.5 tie, 0 loss, the lab's win rate) and the groups are
averaged per prompt; the 95% interval resamples prompts. A second table splits one n
(`--family-n`) by task family. `--policies` adds the greedy answers
of trained runs (PPO, PPO-ptx, ...) and their last logged KL, for comparison.

    PYTHONPATH=. .venv/bin/python benchmarks/best_of_n.py --sft SFT_RUN --rm RM_RUN \
        [--policies RUN ...] [--n 64] [--split test] [--seed 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import torch

from rlhf.best_of_n import bon_wins, kl_bound
from rlhf.breakdown import versus, versus_cells
from rlhf.errors import LabError
from rlhf.evaluate import greedy_judgements, judged_answers, with_ci
from rlhf.generation import generate
from rlhf.models import load_policy
from rlhf.oracle import labelers_utility
from rlhf.outputs import world_of_run
from rlhf.pretrain import pick_eval_prompts
from rlhf.reward import load_reward_model
from rlhf.runs import Run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft", required=True, metavar="SFT_RUN", help="the SFT run")
    ap.add_argument("--rm", metavar="RM_RUN", help="the reward model run (a column of picks)")
    ap.add_argument("--policies", nargs="*", default=[], metavar="RUN", help="greedy rows")
    ap.add_argument("--n", type=int, default=64, help="samples per prompt (a power of 2)")
    ap.add_argument("--split", default="test", choices=("val", "test"))
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--family-n", type=int, default=16, help="n of the per-family table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.n < 1 or args.n & (args.n - 1):
        ap.error(f"--n must be a power of 2, got {args.n}")
    torch.set_num_threads(args.threads)
    try:
        sft_run = Run.open(args.sft)
        world = world_of_run(sft_run.dir)
        model, tokenizer = load_policy(sft_run.model_dir)
        rm = load_reward_model(Run.open(args.rm).model_dir) if args.rm else None
        others = {run.dir.name: run for run in map(Run.open, args.policies)}
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None

    prompts = (
        pick_eval_prompts(world, 10_000) if args.split == "test" else world.prompts(args.split)
    )
    texts = [p.text for p in prompts]
    t0 = time.perf_counter()
    base = judged_answers(model, tokenizer, world, prompts, args.max_new_tokens, batch_size=128)[1]
    sft_q = [j.quality for j in base]  # SFT's greedy answers: what every pick is judged against
    many = [t for t in texts for _ in range(args.n)]  # prompt i's samples at i*n .. i*n+n-1
    sampled = generate(model, tokenizer, many, args.max_new_tokens, seed=args.seed, batch_size=256)
    t_gen = time.perf_counter() - t0
    judged = [world.gold.score(prompts[i // args.n], t) for i, t in enumerate(sampled.texts)]
    gold = [j.quality for j in judged]
    labelers = [
        labelers_utility(world, prompts[i // args.n], t, j)
        for i, (t, j) in enumerate(zip(sampled.texts, judged, strict=True))
    ]
    rm_scores = rm.score(many, sampled.texts).tolist() if rm is not None else None
    print(
        f"{len(prompts)} {args.split} prompts, {args.n} SFT samples each at T = 1 "
        f"(sampling {t_gen:.0f} s); win rate against SFT's greedy answer, gold labeler, "
        "ties half, 95% interval over prompts\n"
    )

    ns = [2**k for k in range(int(math.log2(args.n)) + 1)]
    result: dict[str, Any] = {"n": {}, "policies": {}, "family": {}}
    wins: dict[tuple[int, str], list[float]] = {}  # (n, picked by) -> per prompt
    print(
        "| n | KL bound (nats) | best of n by gold | by the labelers | by the RM "
        "| any of n better |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in ns:
        row: dict[str, Any] = {"kl_bound": kl_bound(n)}
        cols = {"gold": None, "labelers": labelers, "rm": rm_scores}
        for name, key in cols.items():
            if name == "rm" and key is None:
                continue
            per_prompt = []
            for i in range(len(prompts)):
                part = slice(i * args.n, (i + 1) * args.n)
                q = gold[part]
                per_prompt.append(bon_wins(q, q if key is None else key[part], n, sft_q[i]))
            row[name] = with_ci(per_prompt, 1000, args.seed)
            wins[n, name] = per_prompt
        # Share of prompts where some sample in a group of n beats SFT's greedy answer.
        anyb = []
        for i in range(len(prompts)):
            q = gold[i * args.n : (i + 1) * args.n]
            groups = [q[g * n : (g + 1) * n] for g in range(args.n // n)]
            anyb.append(sum(max(g) > sft_q[i] for g in groups) / len(groups))
        row["any_better"] = sum(anyb) / len(anyb)
        result["n"][n] = row

        def cell(d: dict[str, float] | None) -> str:
            return f"{d['mean']:.1%} [{d['lo']:.1%}, {d['hi']:.1%}]" if d else "-"

        print(
            f"| {n} | {row['kl_bound']:.2f} | {cell(row['gold'])} | {cell(row['labelers'])} | "
            f"{cell(row.get('rm'))} | {row['any_better']:.1%} |"
        )

    n = min(args.family_n, args.n)
    names = [c for c in ("gold", "labelers", "rm") if (n, c) in wins]
    print(f"\nPer family, best of {n} (KL <= {kl_bound(n):.2f} nats):\n")
    print("| family | prompts | SFT's greedy answer right | " + " | ".join(names) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(names))
    for fam in sorted({p.family for p in prompts}):
        idx = [i for i, p in enumerate(prompts) if p.family == fam]
        right = sum(bool(base[i].flags.get("correct")) for i in idx)
        means = {c: sum(wins[n, c][i] for i in idx) / len(idx) for c in names}
        result["family"][fam] = {"prompts": len(idx), **means}
        cells = " | ".join(f"{means[c]:.1%}" for c in names)
        print(f"| {fam} | {len(idx)} | {right} | {cells} |")

    if others:
        print("\n| run | greedy win rate vs SFT | made right / made wrong | last KL (nats) |")
        print("| --- | ---: | ---: | ---: |")
    for name, run in others.items():
        judged = greedy_judgements(run.model_dir, world, prompts, args.max_new_tokens)
        win = versus(judged, base, 1000, args.seed)
        # PPO logs KL(pi || pi_SFT) of a whole response (summed over its tokens), the unit of
        # the bound above; other stages log other things, or nothing, under their names.
        rows = run.metrics() if run.stage == "ppo" else []
        kl = rows[-1].get("objective/kl", float("nan")) if rows else float("nan")
        result["policies"][name] = {"win_rate": win, "kl": kl}
        print(f"| {name} | {versus_cells(win)} | {'-' if math.isnan(kl) else f'{kl:.2f}'} |")
    return result


if __name__ == "__main__":
    main()
