"""Comparison data: sample K responses per prompt from the SFT policy, have the simulated
labelers rank them, and store the rankings in the lab store (paper 3.4-3.5).

    1. the policy: `compare.sft_run`, else the newest finished SFT run of this config
    2. for each prompt draw K in [k_min, k_max]; sample K responses at `temperature`
       (identical samples are merged: a ranking compares distinct responses)
    3. train prompts: `train_sets` sample sets each, each set ranked by one training labeler
       drawn for it (beyond the paper, `extra_response` joins each of those sets first);
       val prompts: `val_sets` sample sets each,
       every set ranked by every training and every held-out labeler (RM accuracy on both
       groups, paper 4.1: 72.4% vs 69.6%, measured against all of them, not one draw)
    4. the samples of `agreement_prompts` train prompts are re-ranked by every labeler: the
       inter-labeler agreement on SFT samples, the mean and spread over every two training
       labelers (paper: 72.6 +/- 1.5%), and training vs held-out labelers
    5. everything is written to the store in one transaction; a second call reuses it

`collect(cfg)` returns a summary dict; `rlhf compare --recipe R` calls it.
"""

from __future__ import annotations

import itertools
import random
import statistics
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rlhf.config import LabConfig, check_length
from rlhf.errors import ConfigError, RunError
from rlhf.generation import generate
from rlhf.models import load_policy
from rlhf.runs import Run, named_run, same_run, upstream
from rlhf.store import Comparison, Store
from rlhf.world import build_world
from rlhf.world.build import RL_SPLIT
from rlhf.world.labelers import pairwise_agreement


def sft_model_dir(cfg: LabConfig) -> Path:
    return upstream(cfg, "sft", cfg.compare.sft_run, "compare.sft_run").model_dir


def policy_model_dir(cfg: LabConfig) -> Path:
    """The policy of compare.policy_run (iterated collection), which must be a finished SFT or
    PPO run. Its absolute path is what the store keeps: the RM later opens the run."""
    run = Run.open(named_run(cfg.compare.policy_run, cfg.workspace_dir))
    if run.stage not in ("sft", "ppo") or not run.done:
        raise RunError(
            f"{run.dir}: compare.policy_run needs a finished SFT or PPO run (this one: "
            f"{run.stage}, {'finished' if run.done else 'not finished'})"
        )
    return run.model_dir


def sample_responses(
    model, tokenizer, prompts, ks: list[int], c, seed: int, progress: bool
) -> list[list[str]]:
    """K_i distinct responses for prompt i: the prompts repeated K_i times, one batched pass."""
    flat = [p.text for p, k in zip(prompts, ks, strict=True) for _ in range(k)]
    texts: list[str] = []
    chunk = max(1, c.batch_size)
    for start in tqdm(range(0, len(flat), chunk), desc="sampling", disable=not progress):
        out = generate(
            model,
            tokenizer,
            flat[start : start + chunk],
            max_new_tokens=c.max_new_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            seed=seed + start,
            batch_size=chunk,
        )
        texts += out.texts
    grouped, i = [], 0
    for k in ks:
        grouped.append(
            list(dict.fromkeys(t.strip() for t in texts[i : i + k]))
        )  # distinct, in order
        i += k
    return grouped


def collect(cfg: LabConfig, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Sample, rank and store comparisons of the SFT policy; return the summary dict.

    If the store already holds this policy's simulated comparisons they are reused (the
    summary is re-measured from them, `reused` is True), as a stage reuses a finished run;
    `force=True` samples and stores another set."""
    c = cfg.compare
    check_length(cfg, "compare")
    if not 2 <= c.k_min <= c.k_max:
        raise ConfigError(
            f"compare.k_min={c.k_min}, compare.k_max={c.k_max}: need 2 <= k_min <= k_max"
        )
    if c.train_sets < 1 or c.val_sets < 1:
        raise ConfigError(
            f"compare.train_sets={c.train_sets}, compare.val_sets={c.val_sets}: need at least 1"
        )
    world = build_world(cfg, progress=progress)
    model_dir = policy_model_dir(cfg) if c.policy_run else sft_model_dir(cfg)
    policy = str(model_dir.parent)
    with Store.open(cfg) as store:
        stored = [
            r
            for r in store.comparisons(source="simulated")
            if r.policy and same_run(r.policy, Run(model_dir.parent))  # a copied workspace too
        ]
    if stored and not force:
        return {**_report(cfg, world, stored, policy, skipped=None), "reused": True}

    model, tokenizer = load_policy(model_dir)
    rng = random.Random(cfg.seed + len(stored))  # a forced second set samples anew
    plan = []  # (prompt, split)
    # A later policy (iterated collection) is sampled on train prompts only: the held-out
    # comparisons that measure RM accuracy stay SFT samples, comparable from round to round.
    splits = (("train", c.train_prompts),) + (() if c.policy_run else (("val", c.val_prompts),))
    more_train = []  # train sets 2.. (compare.train_sets), after the val sets
    for split, n in splits:
        ps = world.prompts(split)
        chosen = rng.sample(ps, n) if 0 < n < len(ps) else ps
        # Val sets come after the first train set, and further train sets after them, so adding
        # sets of either leaves the samples before them as they were (the same seeds and
        # draws): RM accuracy is measured on the same val comparisons whatever train_sets is.
        if split == "val":
            plan += [(p, split) for _ in range(c.val_sets) for p in chosen]
        else:
            plan += [(p, split) for p in chosen]
            more_train = [(p, split) for _ in range(c.train_sets - 1) for p in chosen]
    n = len(plan)  # the first train set and the val sets; then the extra train sets, with
    # their own draws (K, labeler) so that those of the first n stay as train_sets=1 makes them
    extra = random.Random(f"train_sets-{cfg.seed + len(stored)}")
    plan += more_train
    # Then the rl prompts' sets (compare.rl_sets), last and with draws of their own again:
    # every comparison before them is as without them.
    more_rl = [(p, "train") for _ in range(c.rl_sets) for p in world.prompts(RL_SPLIT)]
    rl_draws = random.Random(f"rl_sets-{cfg.seed + len(stored)}")
    plan += more_rl
    prompts = [p for p, _ in plan]
    ks = [rng.randint(c.k_min, c.k_max) for _ in plan[:n]]
    ks += [extra.randint(c.k_min, c.k_max) for _ in more_train]
    ks += [rl_draws.randint(c.k_min, c.k_max) for _ in more_rl]
    # Sampled in passes: a batch's samples depend on what else is in it, so the extra train
    # sets and the rl sets get batches of their own, each seeded after the pass before.
    seed = cfg.seed + len(stored)
    samples = []
    for lo, hi in ((0, n), (n, n + len(more_train)), (n + len(more_train), len(plan))):
        if hi > lo:
            samples += sample_responses(
                model, tokenizer, prompts[lo:hi], ks[lo:hi], c, seed, progress
            )
        seed += sum(ks[lo:hi])  # sample_responses seeds each batch with seed + its first index

    records, skipped = [], 0
    for i, ((p, split), responses) in enumerate(zip(plan, samples, strict=True)):
        if c.extra_response and split != "val" and c.extra_response not in responses:
            responses = responses + [c.extra_response]  # ranked with the samples
        if len(responses) < 2:
            skipped += 1  # every sample identical: nothing to compare
            continue
        judged = [world.gold.score(p, r) for r in responses]
        if split == "val":
            labelers = world.labelers + world.heldout_labelers
        else:
            draws = rng if i < n else extra if i < n + len(more_train) else rl_draws
            labelers = [draws.choice(world.labelers)]
        for lab in labelers:
            records.append(
                Comparison(
                    prompt=p.text,
                    responses=responses,
                    ranking=lab.rank(p, responses, world.gold),
                    labeler=lab.id,
                    source="simulated",
                    prompt_id=p.id,
                    policy=policy,
                    likert=[j.likert for j in judged],
                    flags=[{k: v for k, v in j.flags.items() if v} for j in judged],
                )
            )
    with Store.open(cfg) as store:
        store.add_comparisons(records)
    return {**_report(cfg, world, records, policy, skipped), "reused": False}


def labeler_agreement(world, records: list[Comparison], n_prompts: int) -> dict[str, Any]:
    """Agreement of the labelers re-ranking the same SFT samples: those of the first
    `n_prompts` train comparisons, each ranked again by every labeler.

    Returns train_train (the mean over every two training labelers of the share of response
    pairs both order the same way, ties left out: the paper's inter-annotator agreement, 72.6
    +/- 1.5%), train_train_sd (its spread over those labeler pairs), train_heldout (the mean
    over every training and held-out labeler pair), labeler_pairs (how many training pairs)
    and pairs (response pairs per training labeler pair, on average). Every labeler pair ranks
    every comparison, as the world build measures it on mixed responses
    (rlhf.world.build.measure_agreement): one pair drawn per prompt gave 72.9-75.1% over eight
    seeds on the same 1,000 tiny comparisons, whose all-pairs mean is 73.7%."""
    by_id = {p.id: p for p in world.prompts("train")}
    items = [(by_id[r.prompt_id], r.responses) for r in records if r.prompt_id in by_id]
    items = items[:n_prompts]
    train = list(world.labelers)
    if len(train) < 2 or not items:
        nan = float("nan")
        return {
            "train_train": nan,
            "train_train_sd": nan,
            "train_heldout": nan,
            "labeler_pairs": 0,
            "pairs": 0,
        }
    ranks = {
        lab.id: [lab.rank(p, responses, world.gold) for p, responses in items]
        for lab in train + list(world.heldout_labelers)
    }
    tt = [pairwise_agreement(ranks[a.id], ranks[b.id]) for a, b in itertools.combinations(train, 2)]
    th = [
        pairwise_agreement(ranks[a.id], ranks[b.id]) for a in train for b in world.heldout_labelers
    ]
    rates = [rate for rate, _ in tt]
    return {
        "train_train": statistics.fmean(rates),
        "train_train_sd": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        "train_heldout": statistics.fmean(r for r, _ in th) if th else float("nan"),
        "labeler_pairs": len(tt),
        "pairs": round(statistics.fmean(n for _, n in tt)),
    }


def _report(cfg, world, records, policy, skipped) -> dict[str, Any]:
    agreement = labeler_agreement(world, records, cfg.compare.agreement_prompts)
    # What trains the RM: the train prompts' comparisons and the rl prompts' (compare.rl_sets).
    train = [
        r for r in records if r.prompt_id and ("-train-" in r.prompt_id or "-rl-" in r.prompt_id)
    ]
    val = [r for r in records if r.prompt_id and "-val-" in r.prompt_id]
    only = [r for r in train if "-train-" in r.prompt_id]  # of the train prompts alone
    return {
        "policy": policy,
        "policy_is_sft": not cfg.compare.policy_run,
        "comparisons": len(records),
        "by_split": {
            s: sum(1 for r in records if r.prompt_id and f"-{s}-" in r.prompt_id)
            for s in ("train", "val", "rl")
        },
        "mean_k": sum(len(r.responses) for r in records) / max(1, len(records)),
        "pairs": sum(1 for r in records for _ in r.pairs()),
        # What trains the RM (train prompts) and what measures it (val sample sets, each
        # ranked by every labeler).
        "train_mean_k": sum(len(r.responses) for r in train) / max(1, len(train)),
        "train_pairs": sum(1 for r in train for _ in r.pairs()),
        "val_sets": len({(r.prompt_id, tuple(r.responses)) for r in val}),
        # sample sets per train prompt in these records (identical samples drop a few), and
        # what compare.train_sets asks for: a reused store may hold fewer
        "train_sets": round(len(only) / max(1, len({r.prompt_id for r in only})), 1),
        "train_sets_wanted": cfg.compare.train_sets,
        "rl_sets_wanted": cfg.compare.rl_sets,
        "skipped_identical": skipped,
        "agreement_on_sft_samples": agreement["train_train"],
        "agreement_sd": agreement["train_train_sd"],
        "agreement_train_heldout": agreement["train_heldout"],
        "agreement_labeler_pairs": agreement["labeler_pairs"],
        "agreement_pairs": agreement["pairs"],  # response pairs per labeler pair
        "store": str(cfg.workspace_dir / "lab.db"),
    }


def summary(report: dict[str, Any]) -> str:
    source = "SFT" if report.get("policy_is_sft", True) else "this policy's"
    lines = ["reusing stored comparisons (--force samples another set)"] if report["reused"] else []
    wanted = report.get("train_sets_wanted", 1)
    if report["reused"] and report.get("train_sets", wanted) < wanted - 0.5:
        lines.append(
            f"note                  the store holds {report['train_sets']:.1f} sample sets per "
            f"train prompt, compare.train_sets is {wanted}: sets are sampled only into a store "
            "without this policy's comparisons (--force adds another full set, val included)"
        )
    if report["reused"] and report.get("rl_sets_wanted") and not report["by_split"].get("rl"):
        lines.append(
            f"note                  the store holds no comparisons of rl prompts, "
            f"compare.rl_sets is {report['rl_sets_wanted']}: they are sampled only into a store "
            "without this policy's comparisons"
        )
    lines += [
        f"comparisons stored    {report['comparisons']:,} "
        f"(train {report['by_split']['train']:,}, val {report['by_split']['val']:,}"
        + (f", rl {report['by_split']['rl']:,})" if report["by_split"].get("rl") else ")"),
        f"train                 mean K {report['train_mean_k']:.2f}, "
        f"{report['train_pairs']:,} ranked pairs (what the RM trains on)",
        f"val                   {report['val_sets']:,} sample sets, each ranked by every "
        f"labeler: {report['by_split']['val']:,} rankings (what measures the RM)",
    ]
    if report["skipped_identical"] is not None:  # known when sampling, not when reusing
        lines.append(
            f"prompts skipped       {report['skipped_identical']:,} (all K samples identical)"
        )
    lines += [
        f"labeler agreement     {report['agreement_on_sft_samples']:.1%} +/- "
        f"{report['agreement_sd']:.1%} over {report['agreement_labeler_pairs']} pairs of "
        f"training labelers, {report['agreement_pairs']:,} pairs of {source} samples each "
        "(paper: 72.6 +/- 1.5%)",
        f"                      training vs held-out labelers "
        f"{report['agreement_train_heldout']:.1%}",
        f"store                 {report['store']}",
    ]
    return "\n".join(lines)


__all__ = ["collect", "sample_responses", "summary"]
