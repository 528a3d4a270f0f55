"""Where a win rate comes from: each test prompt's outcome against the SFT policy, split by
whether the answer's correctness changed.

The gold win rate (paper Fig. 1) counts a win whenever the policy's answer gets a higher gold
quality than SFT's, however small the difference. On the Tiny World that mixes two things:
answers that became right (or wrong), and answers that stayed right or wrong but changed form
(a full sentence instead of a bare "12.", a rude word, a second line that rambles). The split
tells them apart:

    fixed    a win; the policy's answer is correct, SFT's was not
    better   any other win (same correctness, a better form or a better wrong answer)
    tie      the same gold quality (identical answers, or right answers alike in form)
    worse    any other loss
    broken   a loss; SFT's answer was correct, the policy's is not

so win rate = (fixed + better + tie / 2) / n, exactly `rlhf.evaluate.win_outcomes`'s mean.
"Correct" is the gold labeler's flag: the right sum, the upper-case word, the refusal of an
insult request, "I don't know" to an unanswerable question.

`rm_vs_gold` then asks of the losses which ones the reward model scored above SFT's answer:
what PPO was paid for that the gold labeler does not want.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

KINDS = ("fixed", "better", "tie", "worse", "broken")
WHAT = {  # the column titles of the tables
    "fixed": "wins: right where SFT was wrong",
    "better": "wins: other",
    "tie": "ties",
    "worse": "losses: other",
    "broken": "losses: wrong where SFT was right",
}


def outcome_kind(mine: Any, base: Any) -> str:
    """One prompt's kind (see the module doc); mine and base are the gold labeler's Judgements
    of the policy's and the baseline's answers to it."""
    right, was_right = bool(mine.flags.get("correct")), bool(base.flags.get("correct"))
    if mine.quality > base.quality:
        return "fixed" if right and not was_right else "better"
    if mine.quality < base.quality:
        return "broken" if was_right and not right else "worse"
    return "tie"


def versus(
    judged: Sequence[Any], base: Sequence[Any], n_resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """One policy's answers against another's, as the benchmarks print them: the win rate
    with its 95% bootstrap interval (`rlhf.evaluate.with_ci` of `win_outcomes`: mean, lo, hi)
    and the answers made right ("fixed") and made wrong ("broken"). `judged` and `base` are the
    gold labeler's Judgements of the same prompts, in order."""
    # Here, not at the top: the dashboard imports this module, and rlhf.evaluate brings torch
    # and transformers with it.
    from rlhf.evaluate import win_outcomes, with_ci

    win = with_ci(
        win_outcomes([j.quality for j in judged], [j.quality for j in base]), n_resamples, seed
    )
    kinds = [outcome_kind(m, b) for m, b in zip(judged, base, strict=True)]
    return {**win, "fixed": kinds.count("fixed"), "broken": kinds.count("broken")}


def versus_cells(row: dict[str, float]) -> str:
    """A `versus` row as two Markdown table cells: "57.1% [54.6%, 59.7%] | 31 / 15"."""
    return (
        f"{row['mean']:.1%} [{row['lo']:.1%}, {row['hi']:.1%}] | {row['fixed']} / {row['broken']}"
    )


def _counts(kinds: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {k: kinds.count(k) for k in KINDS}
    n = len(kinds)
    out["n"] = n
    out["win_rate"] = (out["fixed"] + out["better"] + out["tie"] / 2) / n if n else float("nan")
    return out


def win_breakdown(
    prompts: Sequence[Any], judged: Sequence[Any], baseline: Sequence[Any]
) -> dict[str, dict[str, float]]:
    """{"all": counts, <family>: counts, ...} with counts {fixed, better, tie, worse, broken,
    n, win_rate}: the policy's gold judgements `judged` against the baseline's `baseline`, one
    of each per world prompt in `prompts` (same order)."""
    if not len(prompts) == len(judged) == len(baseline):
        raise ValueError(
            f"win_breakdown: {len(prompts)} prompts, {len(judged)} judgements, "
            f"{len(baseline)} baseline judgements"
        )
    kinds = [outcome_kind(m, b) for m, b in zip(judged, baseline, strict=True)]
    out = {"all": _counts(kinds)}
    for family in sorted({p.family for p in prompts}):
        out[family] = _counts(
            [k for p, k in zip(prompts, kinds, strict=True) if p.family == family]
        )
    return out


def rm_vs_gold(
    prompts: Sequence[Any],
    answers: Sequence[str],
    base_answers: Sequence[str],
    judged: Sequence[Any],
    base: Sequence[Any],
    scores: Sequence[float],
    base_scores: Sequence[float],
    n_examples: int = 8,
) -> dict[str, Any]:
    """Where the reward model and the gold labeler disagree about the policy's answer against
    the baseline's (SFT's), one of each per world prompt in `prompts` (same order): what PPO was
    paid for that the true objective does not want (over-optimisation of a proxy reward, Gao et
    al. 2022). `scores` / `base_scores` are the RM's scores of `answers` / `base_answers`,
    `judged` / `base` their gold Judgements.

    Returns
        losses, wins                the gold losses and wins (as `win_breakdown` counts them:
                                    worse + broken, fixed + better)
        losses_rm_prefers_policy    losses whose answer the RM scores above the baseline's:
                                    it disagrees with gold
        wins_rm_prefers_policy      wins whose answer it scores above too: it agrees
        examples                    up to `n_examples` of those losses, the RM's widest margin
                                    first, each {prompt, family, policy, sft, gold_policy,
                                    gold_sft, rm_policy, rm_sft} (gold: quality 0..1)"""
    n = len(prompts)
    if not n == len(answers) == len(base_answers) == len(judged) == len(base):
        raise ValueError(f"rm_vs_gold: {n} prompts but answers or judgements of other lengths")
    if not n == len(scores) == len(base_scores):
        raise ValueError(f"rm_vs_gold: {n} prompts, {len(scores)} and {len(base_scores)} scores")
    losses = [i for i in range(n) if judged[i].quality < base[i].quality]
    wins = [i for i in range(n) if judged[i].quality > base[i].quality]
    paid = [i for i in losses if scores[i] > base_scores[i]]  # a gold loss the RM rewarded
    paid.sort(key=lambda i: base_scores[i] - scores[i])  # the RM's widest margin first
    return {
        "losses": len(losses),
        "losses_rm_prefers_policy": len(paid),
        "wins": len(wins),
        "wins_rm_prefers_policy": sum(scores[i] > base_scores[i] for i in wins),
        "examples": [
            {
                "prompt": prompts[i].text,
                "family": prompts[i].family,
                "policy": answers[i],
                "sft": base_answers[i],
                "gold_policy": judged[i].quality,
                "gold_sft": base[i].quality,
                "rm_policy": float(scores[i]),
                "rm_sft": float(base_scores[i]),
            }
            for i in paid[:n_examples]
        ],
    }


def rm_vs_gold_table(paid: dict[str, Any], reward: str = "RM") -> pd.DataFrame:
    """`rm_vs_gold`'s examples as a table, a row each: the family, the question (the prompt's
    first line), both answers, and what the run's reward and the gold labeler gave each (to 2
    decimals: the table is read, eval.json keeps the full figures). `reward` heads the reward's
    columns: "RM", or an oracle arm's name (rlhf.ppo_report.reward_name)."""
    columns = ["family", "question", "policy", "SFT"]
    columns += [f"{who}: {whose}" for who in (reward, "gold") for whose in ("policy", "SFT")]
    rows = [
        [
            e["family"],
            e["prompt"].split("\n")[0],
            e["policy"].strip(),
            e["sft"].strip(),
            *(round(e[k], 2) for k in ("rm_policy", "rm_sft", "gold_policy", "gold_sft")),
        ]
        for e in paid["examples"]
    ]
    return pd.DataFrame(rows, columns=columns)


def breakdown_table(breakdowns: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """A row per policy: its counts over all prompts under the `WHAT` titles, the net count of
    answers made right (fixed - broken) and the win rate. `breakdowns`: {label: win_breakdown}."""
    rows = {}
    for label, b in breakdowns.items():
        c = b["all"]
        rows[label] = {
            "prompts": int(c["n"]),
            **{WHAT[k]: int(c[k]) for k in KINDS},
            "net right answers": f"{int(c['fixed'] - c['broken']):+d}",
            "win rate": f"{c['win_rate']:.1%}",
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def family_table(breakdowns: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """A row per task family, a column per policy: "fixed / broken, win rate" on that family's
    prompts, e.g. "+11 / -7, 63%"."""
    families = sorted({f for b in breakdowns.values() for f in b if f != "all"})
    data = {
        label: {
            f: f"+{int(b[f]['fixed'])} / -{int(b[f]['broken'])}, {b[f]['win_rate']:.0%}"
            for f in families
            if f in b
        }
        for label, b in breakdowns.items()
    }
    return pd.DataFrame(data, index=families)


def breakdown_frame(breakdowns: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """Long form for charts (`rlhf.viz.breakdown_bars`): columns run, kind, what, count, share;
    one row per policy and kind, over all prompts."""
    records = [
        {
            "run": label,
            "kind": k,
            "what": WHAT[k],
            "count": int(b["all"][k]),
            "share": b["all"][k] / b["all"]["n"] if b["all"]["n"] else float("nan"),
        }
        for label, b in breakdowns.items()
        for k in KINDS
    ]
    return pd.DataFrame(records, columns=["run", "kind", "what", "count", "share"])


__all__ = [
    "KINDS",
    "WHAT",
    "breakdown_frame",
    "breakdown_table",
    "family_table",
    "outcome_kind",
    "rm_vs_gold",
    "rm_vs_gold_table",
    "versus",
    "versus_cells",
    "win_breakdown",
]
