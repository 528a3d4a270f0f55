"""Chart builders of rlhf.viz on small hand-made inputs: encodings, the data they carry, and a
clear ValueError on empty input; then the rlhf.world.show tables the notebooks draw them from."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from rlhf import viz
from rlhf.store import Comparison
from rlhf.world import show


def spec_rows(spec: dict) -> list[dict]:
    """The inline rows of a chart spec (top-level data, as Altair's to_dict writes it)."""
    return spec["datasets"][spec["data"]["name"]]


def layer_encodings(spec: dict) -> list[dict]:
    return [layer.get("encoding", {}) for layer in spec["layer"]]


@pytest.fixture
def pairs() -> pd.DataFrame:
    """A pair_frame-like table: 4 ranked pairs, 3 ordered right by the RM."""
    return pd.DataFrame(
        {
            "family": ["facts", "facts", "lists", "lists"],
            "group": ["training", "held-out", "training", "held-out"],
            "r_chosen": [1.0, 0.5, 0.2, -0.1],
            "r_rejected": [0.0, 0.1, -0.3, 0.4],
            "margin": [1.0, 0.4, 0.5, -0.5],
            "correct": [1.0, 1.0, 1.0, 0.0],
        }
    )


def test_loss_curve_takes_a_y_title():
    rows = [{"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": 1.5, "eval/loss": 1.7}]
    spec = viz.loss_curve(rows, "RM loss", "nats per pair").to_dict()
    assert spec["encoding"]["y"]["title"] == "nats per pair"
    assert len(spec_rows(spec)) == 3
    with pytest.raises(ValueError, match="loss_curve"):
        viz.loss_curve([{"step": 1, "other": 0.0}])


def test_family_bars_groups_policies_within_families():
    reports = {
        "base": {
            "per_family": {
                "facts": {"likert_mean": 2.0, "n": 3},
                "lists": {"likert_mean": 1.5, "n": 3},
            }
        },
        "SFT": {
            "per_family": {
                "facts": {"likert_mean": 4.5, "n": 3},
                "lists": {"likert_mean": 5.0, "n": 3},
            }
        },
    }
    spec = viz.family_bars(reports, "likert_mean").to_dict()
    enc = spec["encoding"]
    assert enc["x"]["field"] == "family" and enc["xOffset"]["field"] == "policy"
    assert enc["xOffset"]["sort"] == ["base", "SFT"]  # the mapping's order, not alphabetical
    assert enc["y"]["scale"]["domain"] == [1, 7]
    rows = spec_rows(spec)
    assert len(rows) == 4
    assert {(r["policy"], r["family"], r["value"]) for r in rows} >= {("SFT", "lists", 5.0)}
    with pytest.raises(ValueError, match="family_bars"):
        viz.family_bars(reports, "fails_to_follow")  # no such metric in these reports
    with pytest.raises(ValueError, match="family_bars"):
        viz.family_bars({})


def test_k_histogram_counts_comparisons_per_k():
    spec = viz.k_histogram([4, 4, 6, 9, 9, 9]).to_dict()
    assert spec["encoding"]["x"]["field"] == "K"
    assert {r["K"]: r["comparisons"] for r in spec_rows(spec)} == {4: 2, 6: 1, 9: 3}
    with pytest.raises(ValueError, match="k_histogram"):
        viz.k_histogram([])


def test_chosen_rejected_hist_has_one_row_per_reward(pairs):
    spec = viz.chosen_rejected_hist(pairs).to_dict()
    rows = spec_rows(spec)
    assert len(rows) == 2 * len(pairs)
    assert sorted(r["reward"] for r in rows if r["response"] == "chosen") == sorted(
        pairs["r_chosen"]
    )
    assert spec["encoding"]["x"]["bin"] and spec["encoding"]["y"]["stack"] is None
    assert spec["encoding"]["color"]["scale"]["domain"] == ["chosen", "rejected"]
    with pytest.raises(ValueError, match="chosen_rejected_hist"):
        viz.chosen_rejected_hist(pairs.iloc[:0])
    with pytest.raises(ValueError, match="r_rejected"):
        viz.chosen_rejected_hist(pairs[["r_chosen"]])


def test_margin_hist_marks_zero_and_reports_accuracy(pairs):
    spec = viz.margin_hist(pairs).to_dict()
    bars, rule = layer_encodings(spec)
    assert bars["x"]["field"] == "margin" and bars["x"]["bin"]["anchor"] == 0
    assert rule["x"] == {"datum": 0}
    assert "75.0%" in spec["title"]  # 3 of 4 margins > 0
    assert [r["RM"] for r in spec_rows(spec)] == ["agrees"] * 3 + ["disagrees"]
    with pytest.raises(ValueError, match="margin_hist"):
        viz.margin_hist(pd.DataFrame(columns=["margin"]))


def test_accuracy_bars_from_an_accuracy_by_frame():
    acc = pd.DataFrame({"family": ["facts", "lists"], "accuracy": [0.75, 0.5], "pairs": [8, 4]})
    spec = viz.accuracy_bars(acc, "family").to_dict()
    bars, labels, rule = layer_encodings(spec)
    assert bars["x"]["field"] == "accuracy" and bars["y"]["field"] == "name"
    assert labels["text"]["field"] == "pairs"
    assert rule["x"] == {"datum": 0.5}
    assert spec_rows(spec) == [
        {"name": "facts", "accuracy": 0.75, "pairs": 8},
        {"name": "lists", "accuracy": 0.5, "pairs": 4},
    ]
    with pytest.raises(ValueError, match="group"):
        viz.accuracy_bars(acc, "group")
    with pytest.raises(ValueError, match="accuracy_bars"):
        viz.accuracy_bars(acc.iloc[:0], "family")


def test_checking_bars_put_rm_and_labelers_side_by_side():
    checking = pd.DataFrame(
        {
            "family": ["transform", "all"],
            "rm": [0.5, 0.6],
            "labelers": [0.8, 0.75],
            "pairs": [10, 20],
        }
    )
    spec = viz.checking_bars(checking).to_dict()
    bars, rule = layer_encodings(spec)
    assert bars["x"]["field"] == "share" and bars["yOffset"]["field"] == "who"
    assert rule["x"] == {"datum": 0.5}
    rows = {(r["family"], r["who"]): r["share"] for r in spec_rows(spec)}
    assert rows == {
        ("transform", "reward model"): 0.5,
        ("transform", "labelers"): 0.8,
        ("all", "reward model"): 0.6,
        ("all", "labelers"): 0.75,
    }
    with pytest.raises(ValueError, match="checking_bars"):
        viz.checking_bars(checking.drop(columns="labelers"))


def test_rank_correlation_is_spearman():
    x = pd.Series([1.0, 2.0, 3.0, 4.0])
    assert viz.rank_correlation(x, x**3) == pytest.approx(1.0)
    assert viz.rank_correlation(x, -x) == pytest.approx(-1.0)
    assert viz.rank_correlation(x, pd.Series([1, 3, 2, 4])) == pytest.approx(0.8)


def test_score_vs_gold_boxes_per_likert():
    df = pd.DataFrame({"likert": [1, 2, 2, 5, None], "reward": [-1.0, -0.2, 0.1, 0.9, 3.0]})
    spec = viz.score_vs_gold(df).to_dict()
    assert spec["mark"]["type"] == "boxplot"
    assert spec["encoding"]["x"] == {
        "axis": {"labelAngle": 0},
        "field": "likert",
        "title": "gold Likert (1-7)",
        "type": "ordinal",
    }
    assert len(spec_rows(spec)) == 4  # the row without a Likert is dropped
    assert "ρ = 0.95" in spec["title"]  # average ranks for the tied 2s
    with pytest.raises(ValueError, match="score_vs_gold"):
        viz.score_vs_gold(df.iloc[:0])
    with pytest.raises(ValueError, match="score_vs_gold"):
        viz.score_vs_gold(pd.DataFrame({"likert": [None], "reward": [1.0]}))


# ------------------------------------------------------------------ rlhf.world.show tables
# (what the notebooks feed these charts with)


def _comparison(**kw) -> Comparison:
    base = dict(prompt="Q: a?\nA:", responses=["x", "y", "z"], ranking=[1, 0, 1], labeler="ana")
    return Comparison(**(base | kw))


def test_comparison_table_is_best_first():
    c = _comparison(
        prompt_id="facts-train-0001", likert=[3, 6, 2], flags=[{}, {"correct": True}, {}]
    )
    df = show.comparison_table(c)
    assert df["response"].tolist() == ["y", "x", "z"]  # rank 0 first, the tie in stored order
    assert df["gold likert"].tolist() == [6, 3, 2]
    assert df["flags"].tolist() == ["correct", "", ""]
    assert df.attrs["k"] == 3


def test_response_frame_dedupes_across_labelers():
    a = _comparison(prompt_id="lists-val-0002", likert=[3, 6, 2])
    b = _comparison(prompt_id="lists-val-0002", likert=[3, 6, 2], labeler="gus", ranking=[0, 1, 2])
    df = show.response_frame([a, b, _comparison()])  # the last has no Likert: left out
    assert len(df) == 3
    assert set(df["family"]) == {"lists"}
    assert df.set_index("response")["likert"].to_dict() == {"x": 3, "y": 6, "z": 2}


def test_agreement_matrix_is_symmetric_with_an_empty_diagonal():
    class Fixed:  # a labeler whose ranking is given
        def __init__(self, id, group, ranks):
            self.id, self.group, self.ranks = id, group, ranks

        def rank(self, prompt, responses, gold):
            return self.ranks

    prompt = SimpleNamespace(id="facts-train-0001")
    world = SimpleNamespace(
        prompts=lambda: [prompt],
        gold=None,
        labelers=[Fixed("a", "train", [0, 1, 2]), Fixed("b", "train", [0, 2, 1])],
        heldout_labelers=[Fixed("c", "heldout", [2, 1, 0])],
    )
    df = show.agreement_matrix(world, [_comparison(prompt_id="facts-train-0001")])
    assert (
        df.loc["a (train)", "b (train)"] == df.loc["b (train)", "a (train)"] == pytest.approx(2 / 3)
    )
    assert df.loc["a (train)", "c (heldout)"] == 0.0
    assert df.isna().sum().sum() == 3
    with pytest.raises(ValueError, match="agreement_matrix"):
        show.agreement_matrix(world, [_comparison(prompt_id=None)])


def test_side_by_side_puts_policies_under_their_names():
    t = pd.DataFrame({"family": ["facts"], "prompt": ["a?"], "response": ["r"], "likert": [5]})
    df = show.side_by_side({"base": t, "SFT": t.assign(response="s", likert=7)})
    assert df.columns.tolist() == [
        ("base", "response"),
        ("base", "likert"),
        ("SFT", "response"),
        ("SFT", "likert"),
    ]
    assert df.loc[("facts", "a?"), ("SFT", "likert")] == 7
    with pytest.raises(ValueError, match="side_by_side"):
        show.side_by_side({})


def _ppo_rows(offset: float) -> list[dict]:
    return [
        {
            "step": s,
            "objective/scores": offset + 0.1 * s,
            "objective/gold": 0.7,
            "objective/kl": 0.2 * s,
            "policy/clipfrac": 0.05,
        }
        for s in (1, 2, 3)
    ]


def test_ppo_curves_draw_a_panel_per_metric_and_a_line_per_run():
    runs = {"PPO": _ppo_rows(0.0), "PPO-ptx": _ppo_rows(1.0)}
    spec = viz.ppo_curves(runs, ["objective/scores", "objective/kl"]).to_dict()
    rows = spec_rows(spec)
    assert len(rows) == 2 * 2 * 3  # runs x metrics x steps
    assert {r["run"] for r in rows} == {"PPO", "PPO-ptx"}
    assert (
        spec["facet"]["field"] == "metric" and spec["spec"]["encoding"]["color"]["field"] == "run"
    )
    with pytest.raises(ValueError, match="ppo_curves"):
        viz.ppo_curves({"PPO": [{"step": 1, "other": 1.0}]})


def test_reward_vs_kl_pairs_each_step_s_kl_with_its_rm_score_and_gold():
    spec = viz.reward_vs_kl({"PPO": _ppo_rows(0.0)}).to_dict()
    rows = spec_rows(spec)
    rm = sorted((r["kl"], r["value"]) for r in rows if r["reward"] == "RM score")
    assert [k for k, _ in rm] == pytest.approx([0.2, 0.4, 0.6])
    assert [v for _, v in rm] == pytest.approx([0.1, 0.2, 0.3])
    assert [r["value"] for r in rows if r["reward"] == "gold quality"] == [0.7] * 3
    with pytest.raises(ValueError, match="reward_vs_kl"):
        viz.reward_vs_kl({"PPO": [{"step": 1, "objective/scores": 1.0}]})
    probe = [{"step": 1, "overopt/kl": 0.0, "overopt/scores": 0.1, "overopt/gold": 0.7}]
    rows = spec_rows(viz.reward_vs_kl({"PPO": probe}, prefix="overopt").to_dict())
    assert sorted((r["reward"], r["value"]) for r in rows) == [
        ("RM score", 0.1),
        ("gold quality", 0.7),
    ]


def test_token_kl_html_shades_each_token_by_its_kl_and_escapes_it():
    html = viz.token_kl_html(["<b>", " ok", " no"], [2.0, 0.0, -1.0])
    assert html.count("<span") == 3
    assert "&lt;b&gt;" in html and "<b>" not in html
    assert "rgba(220,50,47,1.00)" in html  # KL +2 at scale 2: full red
    assert "rgba(38,139,210,0.50)" in html  # KL -1: half blue
    assert 'title="KL +0.000"' in html
    with pytest.raises(ValueError, match="2 tokens but 1"):
        viz.token_kl_html(["a", "b"], [0.1])


def test_metric_bars_draw_each_run_s_metrics_with_their_intervals():
    ci = {"mean": 0.6, "lo": 0.5, "hi": 0.7, "n": 30}
    results = {
        "labels": ["SFT", "RM", "PPO"],
        "rows": {
            "SFT": {"toxic/plain": ci, "toxic/respectful": ci},
            "RM": {},
            "PPO": {"toxic/plain": ci},
        },
    }
    spec = viz.metric_bars(results, ["toxic/plain", "toxic/respectful"], "Toxic").to_dict()
    rows = spec_rows(spec)
    assert sorted((r["run"], r["metric"]) for r in rows) == [
        ("PPO", "toxic/plain"),
        ("SFT", "toxic/plain"),
        ("SFT", "toxic/respectful"),
    ]  # the RM has neither metric: no bar
    marks = [
        layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]
        for layer in spec["layer"]
    ]
    assert marks == ["bar", "errorbar"]
    assert layer_encodings(spec)[1]["y2"]["field"] == "hi"
    assert layer_encodings(spec)[0]["x"]["axis"]["labelAngle"] == 0  # three runs: level
    seven = {"labels": list("abcdefg"), "rows": {k: {"likert": ci} for k in "abcdefg"}}
    one = layer_encodings(viz.metric_bars(seven, ["likert"], "Likert").to_dict())[0]
    assert one["x"]["axis"]["labelAngle"] != 0  # turned, so that none is dropped
    assert one["color"]["legend"] is None  # one metric: no legend to explain it
    assert layer_encodings(spec)[0]["color"]["legend"] == {"title": None}  # two: a legend
    with pytest.raises(ValueError, match="metric_bars: no run has likert"):
        viz.metric_bars(results, ["likert"], "Likert")


# ------------------------------------------------------------------ dashboard charts


def _scored() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "policy": ["SFT", "SFT", "PPO", "PPO", "PPO"],
            "family": ["facts", "lists", "facts", "lists", "lists"],
            "prompt_id": ["f-1", "l-1", "f-1", "l-1", "l-2"],
            "response": ["a", "b", "c", "d", "e"],
            "rm_score": [0.1, -0.5, 0.9, 0.4, None],
            "quality": [0.5, 0.1, 0.9, 0.7, 0.3],
        }
    )


def test_score_boxes_draw_a_box_per_policy_within_each_family():
    spec = viz.score_boxes(_scored()).to_dict()
    assert spec["spec"]["mark"]["type"] == "boxplot"
    assert spec["facet"]["field"] == "family"
    assert spec["spec"]["encoding"]["x"]["sort"] == ["SFT", "PPO"]
    assert len(spec_rows(spec)) == 4  # the unscored answer is left out
    with pytest.raises(ValueError, match="score_boxes"):
        viz.score_boxes(_scored().assign(rm_score=None))


def test_score_scatter_puts_rm_score_against_gold_quality_with_spearman():
    spec = viz.score_scatter(_scored()).to_dict()
    assert spec["encoding"]["x"]["field"] == "quality"
    assert spec["encoding"]["y"]["field"] == "rm_score"
    # the 4 scored answers: RM ranks 2, 1, 4, 3 and gold ranks 2, 1, 4, 3
    assert spec["title"]["subtitle"] == "Spearman ρ = 1.00, 4 responses"
    boxes = viz.score_boxes(_scored()).to_dict()["spec"]["encoding"]["color"]["sort"]
    assert spec["encoding"]["color"]["sort"] == boxes == ["SFT", "PPO"]  # the same colours
    with pytest.raises(ValueError, match="score_scatter"):
        viz.score_scatter(_scored().iloc[:0])


def test_interval_bars_carry_each_row_with_its_interval():
    df = pd.DataFrame(
        {
            "name": ["RM · training labelers", "gold · training labelers"],
            "value": [0.67, 0.77],
            "lo": [0.64, 0.77],
            "hi": [0.70, 0.77],
        }
    )
    spec = viz.interval_bars(df, "accuracy").to_dict()
    rows = spec_rows(spec)
    assert [r["kind"] for r in rows] == ["RM", "gold"]
    bars, rules, chance = layer_encodings(spec)
    assert rules["x"]["field"] == "lo" and rules["x2"]["field"] == "hi"
    assert chance["x"] == {"datum": 0.5}
    with pytest.raises(ValueError, match="interval_bars"):
        viz.interval_bars(df.iloc[:0], "accuracy")
