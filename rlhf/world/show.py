"""Tables of the Tiny World for notebooks and the dashboard (pandas DataFrames, no logic)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from rlhf.world.build import RL_SPLIT, SPLITS, World
from rlhf.world.labelers import pairwise_agreement

if TYPE_CHECKING:
    from rlhf.store import Comparison


def prompt_counts(world: World) -> pd.DataFrame:
    """Prompts per family and split, with the axis each family tests (and the rl split's
    prompts, for PPO and GRPO only, when world.rl_per_family adds any)."""
    stats = world.stats()
    counts = pd.DataFrame(stats["prompts"]).T
    df = counts[[s for s in (*SPLITS, RL_SPLIT) if s in counts.columns]]
    df.insert(0, "axis", pd.Series(stats["axes"]))
    return df.rename_axis("family")


def examples(
    world: World, split: str = "train", per_family: int = 1, seed: int = 0
) -> pd.DataFrame:
    """A few prompts of each family with a labeler demonstration and the web's typical reply."""
    rng = random.Random(seed)
    rows = []
    for fam in sorted(world.families):
        for p in world.prompts(split, fam)[:per_family]:
            good = world.respond(p, "correct", rng)
            web = world.respond(p, rng.choice(["wrong", "unhelpful", "rude"]), rng)
            rows.append(
                {
                    "family": fam,
                    "axis": p.axis,
                    "prompt": p.instruction,
                    "demonstration": good,
                    "gold (demo)": world.gold.score(p, good).likert,
                    "a web reply": web,
                    "gold (web)": world.gold.score(p, web).likert,
                }
            )
    return pd.DataFrame(rows)


def labeler_view(world: World, family: str = "facts", k: int = 6, seed: int = 0) -> pd.DataFrame:
    """K responses to one prompt with the gold verdict and every labeler's ranking (0 = best)."""
    p = world.prompts("train", family)[0]
    responses = world.candidates(p, k, random.Random(seed))
    df = pd.DataFrame({"response": responses})
    judged = [world.gold.score(p, r) for r in responses]
    df["gold likert"] = [j.likert for j in judged]
    df["flags"] = [", ".join(f for f, v in j.flags.items() if v) for j in judged]
    for lab in world.labelers + world.heldout_labelers:
        df[f"{lab.id} ({lab.group})"] = lab.rank(p, responses, world.gold)
    df.attrs["prompt"] = p.text
    return df


def labelers_table(world: World) -> pd.DataFrame:
    rows = [
        {"labeler": lab.id, "group": lab.group, "quirk": lab.quirk, "noise": lab.noise}
        for lab in world.labelers + world.heldout_labelers
    ]
    return pd.DataFrame(rows)


def corpus_sample(world: World, n: int = 5, seed: int = 0) -> list[str]:
    docs = world.train_documents()
    return random.Random(seed).sample(docs, min(n, len(docs)))


def _family(c: Comparison) -> str:
    return c.prompt_id.split("-")[0] if c.prompt_id else "(typed)"  # ids: <family>-<split>-<n>


def comparison_table(c: Comparison) -> pd.DataFrame:
    """One stored ranking, best first: rank (0 = best, equal ranks are ties), the response, and
    the gold Likert and flags when the comparison holds them."""
    df = pd.DataFrame({"rank": c.ranking, "response": c.responses})
    if c.likert is not None:
        df["gold likert"] = c.likert
    if c.flags is not None:
        df["flags"] = [", ".join(sorted(f)) for f in c.flags]
    df = df.sort_values("rank", kind="stable", ignore_index=True)
    df.attrs.update(prompt=c.prompt, labeler=c.labeler, k=len(c.responses))
    return df


def response_frame(comparisons: Sequence[Comparison]) -> pd.DataFrame:
    """Every distinct (prompt, response) of the comparisons that carries a gold Likert:
    columns prompt_id, family, prompt, response, likert."""
    rows = [
        {
            "prompt_id": c.prompt_id,
            "family": _family(c),
            "prompt": c.prompt,
            "response": r,
            "likert": lk,
        }
        for c in comparisons
        if c.likert is not None
        for r, lk in zip(c.responses, c.likert, strict=True)
    ]
    df = pd.DataFrame(rows, columns=["prompt_id", "family", "prompt", "response", "likert"])
    return df.drop_duplicates(["prompt", "response"], ignore_index=True)


def agreement_matrix(world: World, comparisons: Sequence[Comparison]) -> pd.DataFrame:
    """Share of response pairs two labelers order the same way, for every two labelers, each
    ranking the responses of the given comparisons (world prompts only) as they would. The
    diagonal is NaN. Paper 3.4: 72.6 +/- 1.5% between training labelers."""
    prompts = {p.id: p for p in world.prompts()}
    items = [(prompts[c.prompt_id], c.responses) for c in comparisons if c.prompt_id in prompts]
    if not items:
        raise ValueError("agreement_matrix: no comparison of a world prompt")
    labelers = world.labelers + world.heldout_labelers
    ranks = {lab.id: [lab.rank(p, rs, world.gold) for p, rs in items] for lab in labelers}
    names = [f"{lab.id} ({lab.group})" for lab in labelers]
    df = pd.DataFrame(float("nan"), index=names, columns=names)
    for i, a in enumerate(labelers):
        for j, b in enumerate(labelers):
            if i < j:
                rate, _ = pairwise_agreement(ranks[a.id], ranks[b.id])
                df.iloc[i, j] = df.iloc[j, i] = rate
    return df


def side_by_side(
    tables: dict[str, pd.DataFrame],
    on: Sequence[str] = ("family", "prompt"),
    columns: Sequence[str] = ("response", "likert"),
) -> pd.DataFrame:
    """Tables of answers to the same prompts (e.g. `evaluate.sample_table` per policy) joined
    on `on`, with `columns` of each table under its name."""
    if not tables:
        raise ValueError("side_by_side: no tables")
    parts = {name: t.set_index(list(on))[list(columns)] for name, t in tables.items()}
    return pd.concat(parts, axis=1)
