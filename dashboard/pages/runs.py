"""Runs: every run in the workspace with its stage, kind, recipe, status, duration and key
metrics, and the results table of the latest `rlhf eval` / `rlhf pipeline`."""

from pathlib import Path

import pandas as pd
import streamlit as st

from rlhf import dashboard as dash
from rlhf.breakdown import breakdown_frame, breakdown_table, family_table
from rlhf.catalog import results_of, runs_frame
from rlhf.results import results_table, versus_lines, versus_table, win_breakdowns
from rlhf.viz import breakdown_bars, metric_bars

st.title("Runs")
runs = runs_frame(dash.workspace())
if runs.empty:
    dash.nothing_yet("No runs in this workspace yet.", dash.RUN_FIRST)
    st.stop()

stages = st.multiselect(
    "Stages",
    sorted(runs["stage"].unique()),
    default=sorted(runs["stage"].unique()),
    key="runs_stages",
)
shown = runs[runs["stage"].isin(stages)].drop(columns=["path"]).dropna(axis=1, how="all")
st.dataframe(
    shown,
    hide_index=True,
    key="runs_table",
    column_config={
        "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
        **{
            c: st.column_config.NumberColumn(c, format="%.3f")
            for c in shown.columns
            if pd.api.types.is_float_dtype(shown[c]) and c != "duration_s"
        },
    },
)
st.caption(f"{len(runs)} runs under `{dash.workspace() / 'runs'}`")

with st.expander("A run's config"):
    name = st.selectbox("Run", list(runs["run"])[::-1], key="runs_config_pick")
    path = runs.loc[runs["run"] == name, "path"].iloc[0]
    st.json(Path(path, "config.json").read_text(), expanded=False)

st.header("Results")
results = results_of(dash.workspace())
if results is None:
    dash.nothing_yet(
        "No results table yet: `rlhf eval` writes it.",
        "rlhf pipeline --recipe tiny    # or: rlhf eval --runs <run dirs>",
    )
    st.stop()
st.caption(
    f"Each figure: mean [95% bootstrap interval] over {results['n_test_prompts']} test prompts "
    "(docs/results.md explains every column)."
)
st.dataframe(results_table(results), key="runs_results")
versus = versus_table(results)
if not versus.empty:  # the runs beyond the paper (pipeline.extras) held to PPO-ptx
    st.subheader(f"Compared with {results['versus']['reference']}")
    st.dataframe(versus, key="runs_versus")
    st.markdown("\n".join(f"- {line}" for line in versus_lines(results)))
# Streamlit fits title, axes and labels into a chart's height: the bars need this much more.
CHART_HEIGHT = 360
left, right = st.columns(2)
with left:
    try:
        st.altair_chart(
            metric_bars(results, ["win_rate"], "Gold win rate against SFT"), height=CHART_HEIGHT
        )
    except ValueError as e:
        st.caption(str(e))
with right:
    try:
        st.altair_chart(metric_bars(results, ["likert"], "Gold Likert (1-7)"), height=CHART_HEIGHT)
    except ValueError as e:
        st.caption(str(e))

if where := win_breakdowns(results):  # results.json written before rlhf.breakdown: none
    st.subheader("Where the win rate comes from")
    st.caption(
        "Each test prompt against SFT's answer: answers made right where SFT was wrong, other "
        "wins (same correctness: a fuller right answer, a less wrong one), ties, other losses, "
        "answers made wrong where SFT was right."
    )
    st.altair_chart(breakdown_bars(breakdown_frame(where), title="Test prompts by outcome"))
    st.dataframe(breakdown_table(where), key="runs_breakdown")
    with st.expander("Per task family"):
        st.dataframe(family_table(where), key="runs_breakdown_family")
