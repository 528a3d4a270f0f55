"""Tables of the Tiny World for notebooks and the dashboard (pandas DataFrames, no logic)."""

from __future__ import annotations

import random

import pandas as pd

from rlhf.world.build import World


def prompt_counts(world: World) -> pd.DataFrame:
    """Prompts per family and split, with the axis each family tests."""
    stats = world.stats()
    df = pd.DataFrame(stats["prompts"]).T[["train", "val", "test"]]
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
