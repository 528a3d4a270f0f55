"""Hand labeling: the paper's interface (its Fig. 12, section 3.4) as functions, so the
dashboard's Rank page, notebook 06 and the tests write the same records through one path.

    samples = draw_samples({"SFT": (m, tok)}, prompt_text, k=5, seed=0)
    record = submission(prompt_text, samples, ranks=[1, 2, 2, 4, 5], labeler="ann",
                        likert=[6, 4, 4, 2, 1], flags=[{...}, ...], prompt_id="facts-val-0003")
    submit(store, record)               # one transaction; store.undo_last("ann") takes it back
    agreement_with_simulated(world, store.comparisons(source="human"))

The labeler ranks from 1 (best) to K; equal numbers are ties ([1, 2, 2, 4] and [1, 2, 2, 3]
both say "first best, two tied, last worst"). The store keeps ranks from 0, dense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from rlhf.errors import StoreError
from rlhf.generation import generate
from rlhf.store import Comparison, Store, validate
from rlhf.world.labelers import Labeler, pairwise_agreement

K_MIN, K_MAX = 4, 9  # responses per prompt (paper 3.4)

# The metadata the paper's labelers record per output (its Table 3 / Fig. 12), as the Tiny
# World's gold labeler names them: key -> question on the form.
FLAGS = {
    "fails_to_follow": "Fails to follow the instruction",
    "hallucination": "Makes up facts (hallucination)",
    "toxic": "Inappropriate for a customer assistant (toxic)",
    "refuses": "Refuses or says it does not know",
    "rambles": "Goes on past the answer",
}


@dataclass
class Sample:
    """One response to rank and the policy (its label) that wrote it."""

    text: str
    policy: str


def draw_samples(
    policies: dict[str, tuple[Any, Any]],
    prompt: str,
    k: int,
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    max_rounds: int = 8,
) -> list[Sample]:
    """k distinct responses to `prompt`, taken in turn from the policies (label -> (model,
    tokenizer)): one policy gives all k, several give a mix. Identical responses are merged
    (a ranking compares distinct texts) and more are sampled, up to `max_rounds` rounds;
    fewer than k come back only when the policies keep repeating themselves."""
    if not K_MIN <= k <= K_MAX:
        raise ValueError(f"draw_samples: K must be {K_MIN}..{K_MAX} (paper 3.4), got {k}")
    if not policies:
        raise ValueError("draw_samples: choose at least one policy")
    labels = list(policies)
    seen: dict[str, Sample] = {}
    for round_ in range(max_rounds):
        want = k - len(seen)
        if want <= 0:
            break
        # policy i of the mix writes samples i, i + P, i + 2P, ... of this round
        share = {lab: len(range(i, want, len(labels))) for i, lab in enumerate(labels)}
        for lab, count in share.items():
            if count == 0:
                continue
            model, tokenizer = policies[lab]
            g = generate(
                model,
                tokenizer,
                [prompt] * count,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed + 1000 * round_ + labels.index(lab),
                batch_size=count,
            )
            for text in g.texts:
                if text not in seen and len(seen) < k:
                    seen[text] = Sample(text, lab)
    return list(seen.values())


def dense_ranks(ranks: Sequence[Any], n: int) -> list[int]:
    """The labeler's ranks (1 best .. n, equal = tie) as the store's dense ranks from 0.
    Raises StoreError naming the response when a rank is missing or not an integer 1..n, and
    when no response is ranked best (1)."""
    if len(ranks) != n:
        raise StoreError(f"field 'ranking': {len(ranks)} ranks for {n} responses")
    for i, r in enumerate(ranks):
        if r is None:
            raise StoreError(f"field 'ranking': response {i + 1} has no rank; rank every response")
        whole = isinstance(r, int) or isinstance(r, float) and r.is_integer()
        if isinstance(r, bool) or not whole:
            raise StoreError(
                f"field 'ranking': response {i + 1} has rank {r!r}, not a whole number"
            )
        if not 1 <= int(r) <= n:
            raise StoreError(
                f"field 'ranking': response {i + 1} has rank {r}; ranks run from 1 (best) to {n}"
            )
    levels = sorted({int(r) for r in ranks})
    if levels[0] != 1:
        raise StoreError("field 'ranking': no response has rank 1; give the best one rank 1")
    return [levels.index(int(r)) for r in ranks]


def submission(
    prompt: str,
    samples: Sequence[Sample],
    ranks: Sequence[Any],
    labeler: str,
    likert: Sequence[int] | None = None,
    flags: Sequence[dict[str, bool]] | None = None,
    prompt_id: str | None = None,
) -> Comparison:
    """A validated human Comparison from the form: every response ranked (ties allowed),
    Likert 1..7 and flags per response if given. Each response's flags also record the policy
    that wrote it. Raises StoreError with a message meant for the labeler."""
    if not labeler or not labeler.strip():
        raise StoreError("field 'labeler': enter your name before submitting")
    ranking = dense_ranks(list(ranks), len(samples))
    per_response = [
        {**{key: bool((flags[i] if flags else {}).get(key, False)) for key in FLAGS}}
        | {"policy": s.policy}
        for i, s in enumerate(samples)
    ]
    policies = sorted({s.policy for s in samples})
    record = Comparison(
        prompt=prompt,
        responses=[s.text for s in samples],
        ranking=ranking,
        labeler=labeler.strip(),
        source="human",
        prompt_id=prompt_id,
        policy=policies[0] if len(policies) == 1 else "mix: " + ", ".join(policies),
        likert=None if likert is None else [int(x) for x in likert],
        flags=per_response,
    )
    validate(record)
    return record


def likert_conflicts(record: Comparison) -> list[tuple[int, int]]:
    """Pairs (i, j), 1-based, ranked i above j although j has the higher Likert score: allowed
    (a ranking is relative, a Likert absolute), but worth a second look before submitting."""
    if record.likert is None:
        return []
    out = []
    for i, ri in enumerate(record.ranking):
        for j, rj in enumerate(record.ranking):
            if ri < rj and record.likert[i] < record.likert[j]:
                out.append((i + 1, j + 1))
    return out


def submit(store: Store, record: Comparison) -> int:
    """Save one hand ranking in its own transaction; returns its id."""
    return store.add_comparisons([record])[0]


def agreement_with_simulated(world: Any, comparisons: Sequence[Comparison]) -> pd.DataFrame:
    """Per human labeler: how often the world's simulated training labelers, ranking the very
    same responses, order a pair as the human did (pairs both rank strictly; the paper's
    inter-annotator agreement, 72.6%), and the same against the gold labeler. Only rankings
    of world prompts count: a typed prompt has no simulated judgement.

    Columns: labeler, comparisons, pairs (the human's strict pairs), agreement (with the simulated labelers, pooled over
    them), gold_agreement."""
    prompts = {p.id: p for p in world.prompts()}
    per: dict[str, dict[str, Any]] = {}
    for c in comparisons:
        p = prompts.get(c.prompt_id or "")
        if p is None:
            continue
        row = per.setdefault(
            c.labeler, {"comparisons": 0, "pairs": 0, "sim": [[], []], "gold": [[], []]}
        )
        row["comparisons"] += 1
        row["pairs"] += sum(1 for _ in c.pairs())
        for lab in world.labelers:
            row["sim"][0].append(c.ranking)
            row["sim"][1].append(lab.rank(p, c.responses, world.gold))
        q = [world.gold.score(p, r).quality for r in c.responses]
        row["gold"][0].append(c.ranking)
        row["gold"][1].append([sorted(set(q), reverse=True).index(x) for x in q])
    records = []
    for name, row in sorted(per.items()):
        sim, _ = pairwise_agreement(*row["sim"])
        gold, _ = pairwise_agreement(*row["gold"])
        records.append(
            {
                "labeler": name,
                "comparisons": row["comparisons"],
                "pairs": row["pairs"],
                "agreement": sim,
                "gold_agreement": gold,
            }
        )
    columns = ["labeler", "comparisons", "pairs", "agreement", "gold_agreement"]
    return pd.DataFrame(records, columns=columns)


def is_held_out_prompt(prompt_id: str | None) -> bool:
    """A val or test prompt of the world: hand rankings of these test the next RM (val_human)
    rather than train it (rlhf.reward.split_comparisons)."""
    return bool(prompt_id) and ("-val-" in prompt_id or "-test-" in prompt_id)


def human_accuracy(
    rm: Any, comparisons: Sequence[Comparison], label: str = "all hand rankings"
) -> pd.DataFrame:
    """The reward model's pairwise accuracy on hand rankings, for all of them (row `label`)
    and per human labeler when there are several: columns name, value, lo, hi (95% interval
    resampling whole comparisons), pairs.
    Notebook 06 reads it before and after training on the hand rankings (`rlhf rm
    --with-human`)."""
    from rlhf.evaluate import clustered_ci
    from rlhf.reward import pair_frame

    rows = [c for c in comparisons if c.source == "human"]
    if not rows:
        return pd.DataFrame(columns=["name", "value", "lo", "hi", "pairs"])
    pairs = pair_frame(rm, rows, set())
    groups = [(label, pairs)]
    if pairs["labeler"].nunique() > 1:
        groups += [(f"{label}: {n}", g) for n, g in pairs.groupby("labeler")]
    records = []
    for name, g in groups:
        ci = clustered_ci(g["correct"].tolist(), g["comparison"].tolist())
        records.append(
            {"name": name, "value": ci["mean"], "lo": ci["lo"], "hi": ci["hi"], "pairs": len(g)}
        )
    return pd.DataFrame(records)


def rm_group_accuracy(report: dict[str, Any]) -> pd.DataFrame:
    """An RM run's eval.json as rows (name, value, lo, hi, pairs): its accuracy on held-out
    comparisons of the training labelers and of the held-out labelers (paper 4.1: 72.4% and
    69.6%), on hand rankings of val and test prompts if it trained with rm.with_human, and the
    gold labeler's accuracy on the same comparisons (the ceiling)."""
    records = []
    for group, name in (
        ("val_train_labelers", "training labelers"),
        ("val_heldout_labelers", "held-out labelers"),
        ("val_human", "hand rankings (held-out prompts)"),
    ):
        acc = report.get(f"accuracy/{group}")
        if acc is None:
            continue
        lo, hi = report.get(f"accuracy_ci/{group}") or (float("nan"), float("nan"))
        pairs = report.get(f"pairs/{group}")
        records.append({"name": f"RM · {name}", "value": acc, "lo": lo, "hi": hi, "pairs": pairs})
        ceiling = report.get(f"gold_ceiling/{group}")
        if ceiling is not None:
            records.append(
                {
                    "name": f"gold · {name}",
                    "value": ceiling,
                    "lo": ceiling,
                    "hi": ceiling,
                    "pairs": pairs,
                }
            )
    return pd.DataFrame(records, columns=["name", "value", "lo", "hi", "pairs"])


def stand_in_labeler(
    quirk: str = "concise", strength: float = 0.02, noise: float = 0.2, name: str = "you"
) -> Labeler:
    """A simulated person to stand in for hand rankings when there are none (notebook 06 on a
    fresh workspace, the tests): a labeler with a taste of their own that the simulated crowd
    does not share, by default a strong liking for short answers (0.02 of quality per word,
    where the crowd's "concise" labeler has 0.004)."""
    return Labeler(name, "human", quirk, strength, noise, tie_margin=0.02)


def stand_in_rankings(
    world: Any,
    policies: dict[str, tuple[Any, Any]],
    prompts: Sequence[Any],
    labeler: Labeler,
    k: int = 4,
    seed: int = 0,
) -> list[Comparison]:
    """What a person would submit on the Rank page for each prompt: K samples drawn as the
    page draws them, ranked by `labeler`, the gold flags ticked; validated as the page
    validates (`submission`). Store them with `submit`."""
    out = []
    for i, p in enumerate(prompts):
        samples = draw_samples(policies, p.text, k, seed=seed + 7919 * i)
        if len(samples) < 2:
            continue
        texts = [s.text for s in samples]
        ranks = labeler.rank(p, texts, world.gold)
        flags = [world.gold.score(p, t).flags for t in texts]
        out.append(
            submission(
                p.text, samples, [r + 1 for r in ranks], labeler.id, flags=flags, prompt_id=p.id
            )
        )
    return out
