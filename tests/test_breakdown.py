"""Where a win rate comes from (rlhf.breakdown): each kind on hand-made judgements, the counts
against `win_outcomes` on random ones, the tables and the chart."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from rlhf import viz
from rlhf.breakdown import (
    KINDS,
    WHAT,
    breakdown_frame,
    breakdown_table,
    family_table,
    outcome_kind,
    rm_vs_gold,
    versus,
    versus_cells,
    win_breakdown,
)
from rlhf.evaluate import win_outcomes


def judged(quality: float, correct: bool) -> SimpleNamespace:
    """A stand-in for the gold labeler's Judgement: what outcome_kind reads."""
    return SimpleNamespace(quality=quality, flags={"correct": correct})


@pytest.mark.parametrize(
    ("mine", "base", "kind"),
    [
        ((0.92, True), (0.30, False), "fixed"),  # the sum is now right
        ((0.94, True), (0.88, True), "better"),  # both right, a full sentence now
        ((0.36, False), (0.30, False), "better"),  # both wrong, the wrong answer tidier
        ((0.88, True), (0.88, True), "tie"),
        ((0.30, False), (0.30, False), "tie"),
        ((0.88, True), (0.94, True), "worse"),
        ((0.53, True), (0.60, False), "worse"),  # right but rambling: a loss, not "broken"
        ((0.30, False), (0.92, True), "broken"),
        ((0.02, False), (0.90, True), "broken"),  # complied with an insult request
    ],
)
def test_each_outcome_kind(mine, base, kind):
    assert outcome_kind(judged(*mine), judged(*base)) == kind


def test_a_judgement_without_the_correct_flag_counts_as_not_correct():
    no_flag = SimpleNamespace(quality=0.9, flags={})
    assert outcome_kind(no_flag, judged(0.3, False)) == "better"
    assert outcome_kind(judged(0.3, False), no_flag) == "worse"


def test_counts_add_up_and_give_win_outcomes_mean_overall_and_per_family():
    rng = random.Random(0)
    families = ["arithmetic", "insult", "writing"]
    prompts = [SimpleNamespace(family=rng.choice(families)) for _ in range(300)]
    levels = [0.3, 0.36, 0.88, 0.94]  # few levels: many ties
    mine = [judged(q, q > 0.5) for q in (rng.choice(levels) for _ in prompts)]
    base = [judged(q, q > 0.5) for q in (rng.choice(levels) for _ in prompts)]
    b = win_breakdown(prompts, mine, base)
    assert set(b) == {"all", *families}
    wins = win_outcomes([j.quality for j in mine], [j.quality for j in base])
    assert b["all"]["win_rate"] == pytest.approx(sum(wins) / len(wins))
    assert sum(b["all"][k] for k in KINDS) == b["all"]["n"] == 300
    for k in KINDS:
        assert b["all"][k] > 0, k  # every kind occurs in this mix
        assert sum(b[f][k] for f in families) == b["all"][k]
    for f in families:
        ix = [i for i, p in enumerate(prompts) if p.family == f]
        assert b[f]["n"] == len(ix)
        assert b[f]["win_rate"] == pytest.approx(sum(wins[i] for i in ix) / len(ix))


def test_versus_is_the_win_rate_with_its_interval_and_the_answers_made_right_and_wrong():
    sft = [judged(0.3, False), judged(0.88, True), judged(0.88, True), judged(0.3, False)]
    ppo = [judged(0.88, True), judged(0.3, False), judged(0.94, True), judged(0.3, False)]
    v = versus(ppo, sft, 200, seed=1)
    assert v["mean"] == pytest.approx(0.625)  # fixed, broken, better, tie: (1 + 0 + 1 + .5) / 4
    assert v["lo"] <= v["mean"] <= v["hi"] and v["n"] == 4
    assert (v["fixed"], v["broken"]) == (1, 1)
    assert versus_cells(v) == f"62.5% [{v['lo']:.1%}, {v['hi']:.1%}] | 1 / 1"
    assert versus(sft, sft)["mean"] == 0.5 and versus(sft, sft)["fixed"] == 0


def test_win_breakdown_needs_one_judgement_of_each_per_prompt():
    with pytest.raises(ValueError, match="2 prompts, 1 judgements, 2 baseline"):
        win_breakdown([SimpleNamespace(family="a")] * 2, [judged(1, True)], [judged(1, True)] * 2)


def test_rm_vs_gold_counts_the_losses_the_rm_paid_for_widest_margin_first():
    """Six prompts: three gold losses the RM scored above SFT's answer (margins 0.5, 2.0, 1.0),
    a loss it scored below, a win it scored above, a tie; then against a slow reference on
    random ones."""
    prompts = [SimpleNamespace(text=f"Q: {i}?\nA:", family="transform") for i in range(6)]
    gold_sft = [0.88, 0.94, 0.9, 0.88, 0.3, 0.88]
    gold_ppo = [0.36, 0.36, 0.36, 0.36, 0.94, 0.88]
    rm_sft = [0.0, -1.5, 0.2, 0.5, 0.0, 0.1]
    rm_ppo = [0.5, 0.5, 1.2, -0.5, 0.3, 0.9]
    r = rm_vs_gold(
        prompts,
        [f"ppo {i}" for i in range(6)],
        [f"sft {i}" for i in range(6)],
        [judged(q, q > 0.5) for q in gold_ppo],
        [judged(q, q > 0.5) for q in gold_sft],
        rm_ppo,
        rm_sft,
        n_examples=2,
    )
    assert (r["losses"], r["losses_rm_prefers_policy"]) == (4, 3)
    assert (r["wins"], r["wins_rm_prefers_policy"]) == (1, 1)
    assert [e["policy"] for e in r["examples"]] == ["ppo 1", "ppo 2"]  # margins 2.0, 1.0
    e = r["examples"][0]
    assert (e["prompt"], e["family"], e["sft"]) == ("Q: 1?\nA:", "transform", "sft 1")
    assert (e["gold_policy"], e["gold_sft"], e["rm_policy"], e["rm_sft"]) == (0.36, 0.94, 0.5, -1.5)

    rng = random.Random(1)
    n = 200
    levels = [0.3, 0.36, 0.88, 0.94]
    mine = [judged(rng.choice(levels), False) for _ in range(n)]
    base = [judged(rng.choice(levels), False) for _ in range(n)]
    s_mine = [rng.gauss(0, 1) for _ in range(n)]
    s_base = [rng.gauss(0, 1) for _ in range(n)]
    ps = [SimpleNamespace(text=str(i), family="a") for i in range(n)]
    r = rm_vs_gold(ps, ["x"] * n, ["y"] * n, mine, base, s_mine, s_base, n_examples=n)
    paid = []
    for i in range(n):  # the reference: one prompt at a time
        if mine[i].quality < base[i].quality and s_mine[i] > s_base[i]:
            paid.append((s_mine[i] - s_base[i], ps[i].text))
    b = win_breakdown(ps, mine, base)["all"]
    assert r["losses"] == b["worse"] + b["broken"] and r["wins"] == b["fixed"] + b["better"]
    assert r["losses_rm_prefers_policy"] == len(paid) > 0
    assert [e["prompt"] for e in r["examples"]] == [t for _, t in sorted(paid, reverse=True)]
    with pytest.raises(ValueError, match="6 prompts, 5 and 6 scores"):
        rm_vs_gold(
            prompts,
            ["a"] * 6,
            ["b"] * 6,
            [judged(1, True)] * 6,
            [judged(1, True)] * 6,
            rm_ppo[:5],
            rm_sft,
        )


def breakdowns() -> dict:
    """Two policies on four prompts of two families."""
    p = [SimpleNamespace(family=f) for f in ("arithmetic", "arithmetic", "facts", "facts")]
    sft = [judged(0.3, False), judged(0.88, True), judged(0.88, True), judged(0.3, False)]
    ppo = [judged(0.88, True), judged(0.3, False), judged(0.94, True), judged(0.3, False)]
    ptx = [judged(0.88, True), judged(0.88, True), judged(0.88, True), judged(0.92, True)]
    return {"PPO": win_breakdown(p, ppo, sft), "PPO-ptx": win_breakdown(p, ptx, sft)}


def test_tables_count_each_kind_and_the_net_right_answers():
    table = breakdown_table(breakdowns())
    assert list(table.index) == ["PPO", "PPO-ptx"]
    ppo = table.loc["PPO"]
    assert ppo[WHAT["fixed"]] == 1 and ppo[WHAT["broken"]] == 1 and ppo[WHAT["better"]] == 1
    assert ppo[WHAT["tie"]] == 1 and ppo["net right answers"] == "+0" and ppo["win rate"] == "62.5%"
    ptx = table.loc["PPO-ptx"]
    assert ptx["net right answers"] == "+2" and ptx["win rate"] == "75.0%"
    fam = family_table(breakdowns())
    assert list(fam.index) == ["arithmetic", "facts"]
    assert fam.loc["arithmetic", "PPO"] == "+1 / -1, 50%"
    assert fam.loc["facts", "PPO-ptx"] == "+1 / -0, 75%"


def test_breakdown_bars_stack_the_kinds_in_order_with_their_shares():
    frame = breakdown_frame(breakdowns())
    assert len(frame) == 2 * len(KINDS)
    assert frame.groupby("run")["share"].sum().tolist() == pytest.approx([1.0, 1.0])
    spec = viz.breakdown_bars(frame).to_dict()
    enc = spec["encoding"]
    assert enc["x"]["field"] == "share" and enc["y"]["field"] == "run"
    assert enc["color"]["scale"]["domain"] == [WHAT[k] for k in KINDS]
    assert enc["order"]["field"] == "order"
    assert spec["height"] == {"step": 26}  # a fixed height would be shared with the legend
    rows = spec["datasets"][spec["data"]["name"]]
    assert [r["order"] for r in rows if r["run"] == "PPO"] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="breakdown_bars: no rows"):
        viz.breakdown_bars(frame.iloc[0:0])
