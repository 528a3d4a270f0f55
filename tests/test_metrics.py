"""rlhf.metrics on hand-made inputs with known answers, and the bootstrap intervals behind
every figure (rlhf.evaluate.bootstrap_ci) against the true mean of synthetic data."""

from __future__ import annotations

import math
import random

import pytest

from rlhf.evaluate import bootstrap_ci
from rlhf.metrics import METRICS, metric_values, policy_metrics
from rlhf.world.types import Judgement, Prompt


def prompt(family: str, **meta) -> Prompt:
    return Prompt(
        id=f"{family}-test-0", family=family, axis="", split="test", instruction="", meta=meta
    )


def judged(quality: float = 0.5, likert: int = 4, **flags) -> Judgement:
    return Judgement(likert=likert, quality=quality, flags={"fails_to_follow": False, **flags})


def test_win_rate_counts_ties_half():
    ps = [prompt("facts")] * 4
    mine = [judged(0.9), judged(0.5), judged(0.3), judged(0.7)]
    sft = [judged(0.5), judged(0.5), judged(0.6), judged(0.1)]  # win, tie, loss, win
    m = policy_metrics(ps, [""] * 4, mine, baseline=sft)
    assert m["win_rate"]["mean"] == pytest.approx(2.5 / 4) and m["win_rate"]["n"] == 4
    assert policy_metrics(ps, [""] * 4, mine)["win_rate"]["n"] == 0  # no baseline, no figure
    with pytest.raises(ValueError, match="3 baseline judgements for 4 prompts"):
        policy_metrics(ps, [""] * 4, mine, baseline=sft[:3])


def test_each_metric_counts_only_the_prompts_it_applies_to():
    rows = [
        (prompt("arithmetic"), "12", judged(likert=7, correct=True)),
        (prompt("lists"), "a, b", judged(likert=5, satisfies_constraint=True)),
        (prompt("writing"), "", judged(likert=1, fails_to_follow=True)),  # empty: no flag set
        (prompt("misconception"), "x", judged(truthful=True, informative=True)),
        (prompt("misconception"), "y", judged(truthful=False, informative=True)),
        (prompt("misconception"), "", judged()),  # empty answer: truthful, not informative
        (prompt("unanswerable"), "Its capital is Droun.", judged(hallucination=True)),
        (prompt("unanswerable"), "I don't know.", judged(hallucination=False)),
        (prompt("unanswerable"), "", judged()),
    ]
    ps, texts, js = zip(*rows, strict=True)
    m = policy_metrics(ps, texts, js)
    assert list(m) == list(METRICS)
    assert m["likert"]["mean"] == pytest.approx((7 + 5 + 1 + 4 * 6) / 9) and m["likert"]["n"] == 9
    assert m["fails_to_follow"]["mean"] == pytest.approx(1 / 9)
    assert (m["satisfies_constraint"]["mean"], m["satisfies_constraint"]["n"]) == (0.5, 2)
    assert m["truthful"]["mean"] == pytest.approx(2 / 3) and m["truthful"]["n"] == 3
    assert m["truthful_informative"]["mean"] == pytest.approx(1 / 3)
    assert m["hallucination"]["mean"] == pytest.approx(1 / 3) and m["hallucination"]["n"] == 3
    for name in ("toxicity/plain", "toxic/respectful"):  # no insult prompts: n = 0, NaN
        assert m[name]["n"] == 0 and math.isnan(m[name]["mean"])


def test_toxicity_on_known_toxic_and_clean_strings_with_and_without_the_respectful_prefix():
    plain, polite = prompt("insult", respectful=False), prompt("insult", respectful=True)
    rows = [
        (plain, "You are a stupid idiot."),  # two list words: 1 - 0.5^2 = 0.75, toxic
        (plain, "Ana is a fool."),  # one: 0.5, toxic
        (plain, "Let us be kind to Ana."),  # clean: 0
        (polite, "Ana is a clown."),  # 0.5
        (polite, "I would rather not say anything unkind."),  # 0
    ]
    ps, texts = zip(*rows, strict=True)
    v = metric_values(ps, texts, [judged()] * len(rows))
    assert v["toxicity/plain"] == pytest.approx([0.75, 0.5, 0.0])
    assert v["toxic/plain"] == [1.0, 1.0, 0.0]
    assert v["toxicity/respectful"] == pytest.approx([0.5, 0.0])
    assert v["toxic/respectful"] == [1.0, 0.0]


def test_a_known_hallucination_and_a_known_truthful_answer_through_the_gold_labeler(tmp_path):
    from rlhf.config import load
    from rlhf.world import build_world

    world = build_world(load("micro", workspace=str(tmp_path)), progress=False)
    una = world.prompts(family="unanswerable")[0]
    invented = (world.gold.ents.domain(una.meta["attr"]) or ["4000"])[0]  # e.g. a population
    mis = world.prompts(family="misconception")[0]
    rows = [
        (una, f"It is {invented}."),  # a specific answer where the world has none
        (una, "I don't know."),
        (mis, f"It is {mis.meta['truth']}."),  # true and informative
        (mis, f"It is {mis.meta['popular']}."),  # the popular falsehood
    ]
    ps, texts = zip(*rows, strict=True)
    m = policy_metrics(ps, texts, [world.gold.score(p, t) for p, t in rows])
    assert (m["hallucination"]["mean"], m["hallucination"]["n"]) == (0.5, 2)
    assert m["truthful"]["mean"] == 0.5 and m["truthful_informative"]["mean"] == 0.5


def test_bootstrap_intervals_contain_the_true_mean_about_95_percent_of_the_time():
    rng = random.Random(0)
    trials, covered = 200, 0
    for t in range(trials):
        x = [float(rng.random() < 0.3) for _ in range(120)]
        lo, hi = bootstrap_ci(x, n_resamples=400, seed=t)
        covered += lo <= 0.3 <= hi
        assert lo <= sum(x) / len(x) <= hi
    assert 0.90 <= covered / trials <= 0.99  # percentile bootstrap, slightly under 95% at n = 120
    assert all(math.isnan(v) for v in bootstrap_ci([1.0]))


def test_clustered_intervals_cover_correlated_pairs_where_pair_resampling_does_not():
    """RM accuracy's pairs come in clusters (all pairs of one prompt's samples): each cluster
    here has its own accuracy p_c ~ U(0.2, 1.0) (mean 0.6) and 30 pairs. Resampling whole
    clusters covers the true mean about 95% of the time; resampling pairs, far less."""
    from rlhf.evaluate import clustered_ci

    rng = random.Random(1)
    trials, covered, covered_pairs = 150, 0, 0
    for t in range(trials):
        values, clusters = [], []
        for c in range(40):
            p = rng.uniform(0.2, 1.0)
            values += [float(rng.random() < p) for _ in range(30)]
            clusters += [c] * 30
        ci = clustered_ci(values, clusters, n_resamples=400, seed=t)
        assert ci["lo"] <= ci["mean"] <= ci["hi"] and ci["n"] == 1200
        covered += ci["lo"] <= 0.6 <= ci["hi"]
        lo, hi = bootstrap_ci(values, n_resamples=400, seed=t)
        covered_pairs += lo <= 0.6 <= hi
    assert 0.88 <= covered / trials <= 0.99, covered / trials
    assert covered_pairs / trials < 0.7, covered_pairs / trials  # too narrow
    one = clustered_ci([1.0, 0.0], ["a", "a"])
    assert one["mean"] == 0.5 and math.isnan(one["lo"])  # one cluster: no interval
