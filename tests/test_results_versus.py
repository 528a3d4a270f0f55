"""The runs beyond the paper in the results table: their labels (DPO, GRPO, +LoRA) and how each
compares with PPO-ptx (rlhf.results.versus_reference), checked against hand computations on
small frames; the table and the sentences written from those numbers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rlhf import config
from rlhf.errors import RunError
from rlhf.evaluate import bootstrap_ci, with_ci
from rlhf.results import (
    breakdown_markdown,
    evaluate_runs,
    label_of,
    results_table,
    versus_lines,
    versus_markdown,
    versus_reference,
    versus_table,
    win_breakdowns,
    write_results,
)
from rlhf.runs import Run


def frame() -> pd.DataFrame:
    """Gold quality per prompt: SFT's answers (the baseline), PPO-ptx's and DPO's."""
    return pd.DataFrame(
        {
            "baseline": [0.5, 0.5, 0.2, 0.9, 0.4],
            "PPO-ptx": [0.7, 0.5, 0.1, 0.9, 0.6],
            "DPO": [0.6, 0.4, 0.3, 0.9, 0.6],
        }
    )


def test_versus_reference_matches_a_hand_computation_on_a_small_frame():
    out = versus_reference(frame(), "PPO-ptx", n_resamples=500, seed=3)
    assert list(out) == ["DPO"]
    # Against SFT, per prompt: PPO-ptx wins, ties, loses, ties, wins; DPO wins, loses, wins,
    # ties, wins. Differences 0, -0.5, +1, 0, 0: mean 0.1 (PPO-ptx 0.6, DPO 0.7).
    diff = out["DPO"]["win_rate_diff"]
    assert diff["mean"] == pytest.approx(0.1) and diff["n"] == 5
    # The interval resamples prompts, both policies' outcomes together (paired).
    assert (diff["lo"], diff["hi"]) == bootstrap_ci([0, -0.5, 1, 0, 0], 500, 3)
    # Head to head: DPO loses, loses, wins, ties, ties against PPO-ptx's answers.
    h2h = out["DPO"]["head_to_head"]
    assert h2h["mean"] == pytest.approx(2 / 5)
    assert h2h == with_ci([0, 0, 1, 0.5, 0.5], 500, 3)


def test_the_paired_interval_is_narrow_when_two_policies_answer_alike():
    """Two policies that differ on one prompt of 40: the paired interval of the difference in
    win rate is far narrower than the intervals of the two win rates, which overlap."""
    base = [0.5] * 40
    ref = [0.9 if i % 2 else 0.1 for i in range(40)]  # wins half, loses half
    mine = [*ref[:-2], 0.9, ref[-1]]  # the same answers, but a loss turned into a win
    out = versus_reference(pd.DataFrame({"baseline": base, "PPO-ptx": ref, "X": mine}))
    d = out["X"]["win_rate_diff"]
    assert d["mean"] == pytest.approx(1 / 40) and d["lo"] >= 0 and d["hi"] <= 0.1
    unpaired = with_ci([1.0 if q > 0.5 else 0.0 for q in mine])
    assert unpaired["hi"] - unpaired["lo"] > 3 * (d["hi"] - d["lo"])


def test_versus_reference_needs_the_baseline_and_the_reference():
    with pytest.raises(ValueError, match="needs columns 'baseline' and 'PPO-ptx'"):
        versus_reference(frame().drop(columns="PPO-ptx"))


def ci(mean: float, lo: float, hi: float, n: int = 340) -> dict[str, float]:
    return {"mean": mean, "lo": lo, "hi": hi, "n": n}


def results() -> dict:
    """A results dict as evaluate_runs returns it, with PPO-ptx and three rows to compare."""

    def row(win: float, ppl: tuple[float, float, float]) -> dict:
        return {
            "win_rate": ci(win, win - 0.02, win + 0.02),
            "likert": ci(5.4, 5.2, 5.6),
            "fails_to_follow": ci(0.032, 0.015, 0.05),
            "perplexity": ci(*ppl, n=190),
            "fact_cloze": ci(0.927, 0.875, 0.969, n=96),
        }

    return {
        "labels": ["SFT", "PPO-ptx", "PPO", "DPO", "GRPO"],
        "rows": {
            "SFT": row(0.5, (2.79, 2.70, 2.87)),
            "PPO-ptx": row(0.525, (2.13, 2.09, 2.18)),
            "PPO": row(0.556, (2.89, 2.79, 2.98)),
            "DPO": row(0.519, (2.12, 2.08, 2.17)),
            "GRPO": row(0.537, (1.90, 1.85, 1.95)),
        },
        "runs": {label: f"/ws/runs/{label}" for label in ("SFT", "PPO-ptx", "PPO", "DPO", "GRPO")},
        "wall_time_s": {"SFT": 22.0, "PPO-ptx": 172.4, "PPO": 97.0, "DPO": 131.6, "GRPO": None},
        "n_test_prompts": 340,
        "overoptimisation": {},
        "versus": {
            "reference": "PPO-ptx",
            "rows": {  # results.json sorts keys: the table keeps the labels' order
                "DPO": {
                    "win_rate_diff": ci(-0.006, -0.035, 0.023),
                    "head_to_head": ci(0.49, 0.46, 0.52),
                },
                "GRPO": {
                    "win_rate_diff": ci(0.012, -0.01, 0.04),
                    "head_to_head": ci(0.51, 0.48, 0.54),
                },
                "PPO": {
                    "win_rate_diff": ci(0.031, 0.004, 0.058),
                    "head_to_head": ci(0.55, 0.52, 0.58),
                },
            },
        },
    }


def test_versus_table_holds_the_reference_then_each_row_with_its_figures():
    table = versus_table(results())
    assert list(table.index) == ["PPO-ptx", "PPO", "DPO", "GRPO"]
    ppo = table.loc["PPO"]
    assert ppo["win rate vs SFT"] == "55.6% [53.6, 57.6]"
    assert ppo["win rate minus PPO-ptx's"] == "+3.1 [+0.4, +5.8] points"
    assert ppo["head to head vs PPO-ptx"] == "55.0% [52.0, 58.0]"
    assert (ppo["held-out ppl"], ppo["fact cloze"], ppo["wall time"]) == ("2.89", "92.7%", "97 s")
    assert table.loc["PPO-ptx", "win rate minus PPO-ptx's"] == ""  # the reference itself
    assert table.loc["GRPO", "wall time"] == ""  # not recorded
    assert versus_table({"labels": [], "rows": {}}).empty


def test_versus_lines_say_what_the_numbers_say():
    lines = dict(line.split(": ", 1) for line in versus_lines(results()))
    assert list(lines) == ["PPO", "DPO", "GRPO"]
    # PPO: the interval of the difference is above 0; perplexity intervals apart, above.
    assert "a difference of +3.1 [+0.4, +5.8] points" in lines["PPO"]
    assert "better than PPO-ptx" in lines["PPO"] and "more alignment tax" in lines["PPO"]
    assert "(paired over 340 test prompts)" in lines["PPO"]
    assert "Wall time 97 s (PPO-ptx 172 s)" in lines["PPO"]
    # DPO: the interval spans 0; perplexity intervals overlap.
    assert "no clear difference (the interval spans 0)" in lines["DPO"]
    assert "about the same alignment tax" in lines["DPO"]
    assert "win rate vs SFT 51.9% (PPO-ptx 52.5%)" in lines["DPO"]
    # GRPO: lower perplexity with intervals apart; no wall time recorded.
    assert "less alignment tax" in lines["GRPO"] and "Wall time" not in lines["GRPO"]
    worse = results()
    worse["versus"]["rows"]["DPO"]["win_rate_diff"] = ci(-0.05, -0.08, -0.02)
    assert "worse than PPO-ptx" in versus_lines(worse)[1]


def test_results_md_holds_the_comparison_in_table_order_after_a_json_round_trip(tmp_path):
    js, md = write_results(results(), tmp_path)
    again = json.loads(js.read_text())
    assert list(again["versus"]["rows"]) == ["DPO", "GRPO", "PPO"]  # sorted by write_json
    assert list(versus_table(again).index) == ["PPO-ptx", "PPO", "DPO", "GRPO"]
    text = md.read_text()
    assert versus_markdown(again) in text and text.index("## Compared with PPO-ptx") > 0
    assert text.index("| PPO | ") < text.index("| DPO | ") < text.index("- PPO: win rate")
    no_versus = {k: v for k, v in results().items() if k != "versus"}
    assert versus_markdown(no_versus) == ""
    assert "Compared with" not in write_results(no_versus, tmp_path / "b")[1].read_text()


def test_labels_of_runs_beyond_the_paper(tmp_path):
    def label(stage: str, **overrides) -> str:
        cfg = config.load("micro", workspace=str(tmp_path), **overrides)
        return label_of(Run.create(cfg, stage))

    assert label("dpo") == "DPO" and label("grpo") == "GRPO"
    assert label("ppo") == "PPO" and label("ppo", ppo__ptx_coef=1.0) == "PPO-ptx"
    assert label("ppo", ppo__ptx_coef=1.0, ppo__lora_r=8) == "PPO-ptx+LoRA"
    assert label("ppo", ppo__lora_r=8) == "PPO+LoRA"
    assert label("sft", sft__lora_r=8) == "SFT+LoRA" and label("sft") == "SFT"
    # The pipeline names its own rows; a label for each run.
    runs = [Run.create(config.load("micro", workspace=str(tmp_path)), "sft").dir]
    with pytest.raises(RunError, match="2 labels for 1 runs"):
        evaluate_runs(config.load("micro", workspace=str(tmp_path)), runs, labels=["a", "b"])


def test_the_win_breakdown_keeps_the_table_order_after_a_json_round_trip(tmp_path):
    counts = {"fixed": 3, "better": 1, "tie": 4, "worse": 0, "broken": 2, "n": 10, "win_rate": 0.6}
    res = {**results(), "win_breakdown": {k: {"all": counts} for k in ("PPO-ptx", "PPO", "DPO")}}
    js, md = write_results(res, tmp_path)
    again = json.loads(js.read_text())
    assert list(again["win_breakdown"]) == ["DPO", "PPO", "PPO-ptx"]  # sorted by write_json
    assert list(win_breakdowns(again)) == ["PPO-ptx", "PPO", "DPO"]  # the labels' order
    text = md.read_text()
    assert breakdown_markdown(again) in text and "| PPO-ptx | 10 | 3 | 1 | 4 | 0 | 2 | +1 |" in text
    assert win_breakdowns(results()) == {} and breakdown_markdown(results()) == ""


def test_the_results_table_keeps_the_paper_s_column_order_after_a_json_round_trip(tmp_path):
    res = results()
    res["rows"]["SFT"]["a_new_metric"] = ci(0.1, 0.0, 0.2)  # not one of the lab's: at the end
    js, md = write_results(res, tmp_path)
    again = json.loads(js.read_text())
    assert list(again["rows"]["SFT"])[0] == "a_new_metric"  # write_json sorts keys
    columns = ["win_rate", "likert", "fails_to_follow", "perplexity", "fact_cloze", "a_new_metric"]
    assert list(results_table(again).columns) == columns
    assert md.read_text().startswith("| run | " + " | ".join(columns) + " |")
