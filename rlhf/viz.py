"""Altair chart builders shared by notebooks and the dashboard. Input: run metrics rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd


def metric_frame(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> pd.DataFrame:
    """Long table (step, metric, value) of the given metric names, one row per logged value."""
    records = [
        {"step": r["step"], "metric": name, "value": r[name]}
        for r in rows
        for name in names
        if name in r and r[name] is not None
    ]
    return pd.DataFrame(records, columns=["step", "metric", "value"])


def loss_curve(rows: Sequence[dict[str, Any]], title: str = "Pretraining loss") -> alt.Chart:
    """Train and held-out loss (nats/token) against optimizer step."""
    df = metric_frame(rows, ["train/loss", "eval/loss"])
    if df.empty:
        raise ValueError("loss_curve: no train/loss or eval/loss in these metrics")
    return (
        alt.Chart(df, title=title)
        .mark_line(point=alt.OverlayMarkDef(size=20))
        .encode(
            x=alt.X("step:Q", title="optimizer step"),
            y=alt.Y("value:Q", title="loss (nats/token)", scale=alt.Scale(zero=False)),
            color=alt.Color("metric:N", title=None),
            tooltip=["step", "metric", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=520, height=260)
    )


def rate_bars(rates: dict[str, float], title: str, x_title: str = "rate") -> alt.Chart:
    """Horizontal bars of named rates in [0, 1] (e.g. fails-to-follow per task family)."""
    df = pd.DataFrame({"name": list(rates), "rate": list(rates.values())})
    return (
        alt.Chart(df, title=title)
        .mark_bar()
        .encode(
            x=alt.X("rate:Q", title=x_title, scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("name:N", title=None, sort="-x"),
            tooltip=["name", alt.Tooltip("rate:Q", format=".0%")],
        )
        .properties(width=420, height=max(80, 22 * len(df)))
    )
