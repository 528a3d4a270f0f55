"""Altair chart builders shared by notebooks and the dashboard.

Inputs are plain data the stages write: metrics.jsonl rows (`Run.metrics()`), eval.json
reports, and DataFrames of `rlhf.reward` (`pair_frame`, `accuracy_by`). Every builder raises
ValueError on empty input, naming itself, rather than drawing an empty chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd

from rlhf.breakdown import KINDS, WHAT


def metric_frame(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> pd.DataFrame:
    """Long table (step, metric, value) of the given metric names, one row per logged value."""
    records = [
        {"step": r["step"], "metric": name, "value": r[name]}
        for r in rows
        for name in names
        if name in r and r[name] is not None
    ]
    return pd.DataFrame(records, columns=["step", "metric", "value"])


def loss_curve(
    rows: Sequence[dict[str, Any]],
    title: str = "Pretraining loss",
    y_title: str = "loss (nats/token)",
) -> alt.Chart:
    """Train and held-out loss (train/loss, eval/loss) against optimizer step."""
    df = metric_frame(rows, ["train/loss", "eval/loss"])
    if df.empty:
        raise ValueError("loss_curve: no train/loss or eval/loss in these metrics")
    return (
        alt.Chart(df, title=title)
        .mark_line(point=alt.OverlayMarkDef(size=20))
        .encode(
            x=alt.X("step:Q", title="optimizer step"),
            y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
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


def _require(df: pd.DataFrame, columns: Sequence[str], who: str) -> None:
    if df is None or len(df) == 0:
        raise ValueError(f"{who}: no rows to draw")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{who}: missing column(s) {', '.join(missing)} (have {list(df.columns)})")


# Axis title and domain of the per-family metrics of evaluate.behaviour_report.
FAMILY_METRICS = {
    "likert_mean": ("gold Likert mean (1-7)", [1, 7]),
    "fails_to_follow": ("fails to follow", [0, 1]),
    "correct": ("correct", [0, 1]),
}


def family_bars(
    reports: dict[str, dict[str, Any]], metric: str = "likert_mean", title: str | None = None
) -> alt.Chart:
    """Grouped bars of one per-family metric, a bar per policy within each task family.

    `reports` maps a policy name to its behaviour report (`evaluate.behaviour_report`, e.g.
    the "base" and "sft" entries of an SFT run's eval.json); bars keep the mapping's order."""
    records = [
        {"family": family, "policy": name, "value": row[metric], "n": row.get("n")}
        for name, report in reports.items()
        for family, row in report.get("per_family", {}).items()
        if row.get(metric) is not None
    ]
    if not records:
        raise ValueError(f"family_bars: no per-family '{metric}' in these reports")
    axis_title, domain = FAMILY_METRICS.get(metric, (metric, None))
    scale = alt.Scale(domain=domain) if domain else alt.Scale()
    policies = list(reports)
    return (
        alt.Chart(pd.DataFrame(records), title=title or f"{axis_title} per task family")
        .mark_bar()
        .encode(
            x=alt.X("family:N", title=None, axis=alt.Axis(labelAngle=-30)),
            xOffset=alt.XOffset("policy:N", sort=policies),
            y=alt.Y("value:Q", title=axis_title, scale=scale),
            color=alt.Color("policy:N", title="policy", sort=policies),
            tooltip=["family", "policy", alt.Tooltip("value:Q", format=".2f"), "n"],
        )
        .properties(width=max(300, 60 * len({r["family"] for r in records})), height=240)
    )


def k_histogram(ks: Sequence[int], title: str = "Responses ranked per prompt (K)") -> alt.Chart:
    """Comparisons per number of ranked responses K (paper 3.4: K = 4..9)."""
    if len(ks) == 0:
        raise ValueError("k_histogram: no comparisons")
    counts = pd.Series(list(ks), name="K").value_counts().sort_index()
    df = counts.rename("comparisons").reset_index()
    return (
        alt.Chart(df, title=title)
        .mark_bar()
        .encode(
            x=alt.X("K:O", title="K (responses in the ranking)", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("comparisons:Q", title="comparisons"),
            tooltip=["K", "comparisons"],
        )
        .properties(width=280, height=200)
    )


def chosen_rejected_hist(pairs: pd.DataFrame, maxbins: int = 30) -> alt.Chart:
    """Overlaid histograms of the reward of the chosen and of the rejected response over every
    ranked pair (`reward.pair_frame`); a response counts once per pair it is in."""
    _require(pairs, ["r_chosen", "r_rejected"], "chosen_rejected_hist")
    df = pairs[["r_chosen", "r_rejected"]].rename(
        columns={"r_chosen": "chosen", "r_rejected": "rejected"}
    )
    df = df.melt(var_name="response", value_name="reward")
    return (
        alt.Chart(df, title=f"RM reward of chosen vs rejected ({len(pairs):,} pairs)")
        .mark_bar(opacity=0.55, binSpacing=0)
        .encode(
            x=alt.X("reward:Q", bin=alt.Bin(maxbins=maxbins), title="RM reward"),
            y=alt.Y("count():Q", stack=None, title="pairs"),
            color=alt.Color(
                "response:N",
                title=None,
                scale=alt.Scale(domain=["chosen", "rejected"], range=["#1b9e77", "#d95f02"]),
            ),
            tooltip=["response:N", alt.Tooltip("count():Q", title="pairs")],
        )
        .properties(width=320, height=220)
    )


def margin_hist(pairs: pd.DataFrame, maxbins: int = 30) -> alt.LayerChart:
    """Histogram of r(chosen) - r(rejected) per ranked pair with a rule at 0: the pairs right of
    it are the ones the RM orders as the labeler did (its accuracy, ties aside)."""
    _require(pairs, ["margin"], "margin_hist")
    df = pairs[["margin"]].assign(
        RM=lambda d: d["margin"].gt(0).map({True: "agrees", False: "disagrees"})
    )
    acc = float((df["margin"] > 0).mean() + 0.5 * (df["margin"] == 0).mean())
    bars = (
        alt.Chart()
        .mark_bar(binSpacing=0)
        .encode(
            # anchor=0: no bin straddles 0, so a bin is all "agrees" or all "disagrees"
            x=alt.X(
                "margin:Q", bin=alt.Bin(maxbins=maxbins, anchor=0), title="r(chosen) − r(rejected)"
            ),
            y=alt.Y("count():Q", title="pairs"),
            color=alt.Color(
                "RM:N",
                title="RM",
                scale=alt.Scale(domain=["agrees", "disagrees"], range=["#1b9e77", "#d95f02"]),
            ),
            tooltip=["RM:N", alt.Tooltip("count():Q", title="pairs")],
        )
    )
    zero = alt.Chart().mark_rule(color="black", strokeDash=[4, 3]).encode(x=alt.datum(0))
    return alt.layer(
        bars, zero, data=df, title=f"Margin per pair: accuracy {acc:.1%} of {len(df):,}"
    ).properties(width=320, height=220)


def accuracy_bars(
    acc: pd.DataFrame, by: str, title: str | None = None, chance: float = 0.5
) -> alt.LayerChart:
    """Horizontal bars of pairwise accuracy per value of `by` (a `reward.accuracy_by` frame:
    columns `by`, accuracy, pairs), with chance (a coin flip: 50%) marked."""
    _require(acc, [by, "accuracy", "pairs"], "accuracy_bars")
    df = acc[[by, "accuracy", "pairs"]].rename(columns={by: "name"})
    bars = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=alt.X("accuracy:Q", title="pairwise accuracy", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("name:N", title=None, sort="-x"),
            tooltip=[
                alt.Tooltip("name:N", title=by),
                alt.Tooltip("accuracy:Q", format=".1%"),
                "pairs:Q",
            ],
        )
    )
    labels = bars.mark_text(align="left", dx=3, fontSize=10).encode(
        text=alt.Text("pairs:Q", format=",")
    )
    rule = alt.Chart().mark_rule(color="gray", strokeDash=[4, 3]).encode(x=alt.datum(chance))
    return alt.layer(
        bars, labels, rule, data=df, title=title or f"RM accuracy by {by} (label: pairs)"
    ).properties(width=300, height=max(60, 22 * len(df)))


def checking_bars(checking: pd.DataFrame, title: str | None = None) -> alt.LayerChart:
    """Per family, on pairs of one right and one wrong answer (a `reward.answer_checking`
    frame: columns family, rm, labelers, pairs): how often the RM and the labelers prefer the
    right one, side by side, with chance marked. An RM that checks answers matches its
    labelers; one that judges only form stays near 50%."""
    _require(checking, ["family", "rm", "labelers", "pairs"], "checking_bars")
    df = checking.melt(
        id_vars=["family", "pairs"],
        value_vars=["rm", "labelers"],
        var_name="who",
        value_name="share",
    )
    df["who"] = df["who"].map({"rm": "reward model", "labelers": "labelers"})
    bars = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=alt.X("share:Q", title="prefers the right answer", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("family:N", title=None),
            yOffset=alt.YOffset("who:N", sort=["reward model", "labelers"]),
            color=alt.Color("who:N", title=None, legend=BOTTOM),
            tooltip=["family:N", "who:N", alt.Tooltip("share:Q", format=".1%"), "pairs:Q"],
        )
    )
    rule = alt.Chart().mark_rule(color="gray", strokeDash=[4, 3]).encode(x=alt.datum(0.5))
    return alt.layer(
        bars, rule, data=df, title=title or "Right vs wrong answer: who prefers the right one"
    ).properties(width=300, height=max(80, 36 * checking["family"].nunique()))


def rank_correlation(x: pd.Series, y: pd.Series) -> float:
    """Spearman's rho: the Pearson correlation of the ranks (average ranks for ties)."""
    return float(x.rank().corr(y.rank()))


def score_vs_gold(
    frame: pd.DataFrame, score: str = "reward", gold: str = "likert", title: str | None = None
) -> alt.Chart:
    """Reward-model score against the gold Likert of the same responses: one box per Likert
    value, the rank correlation in the title. A good RM rises from left to right."""
    _require(frame, [score, gold], "score_vs_gold")
    df = frame[[score, gold]].dropna()
    if df.empty:
        raise ValueError("score_vs_gold: no rows with both a score and a gold Likert")
    rho = rank_correlation(df[score], df[gold])
    rho_text = f"Spearman ρ = {rho:.2f}, " if rho == rho else ""  # NaN when a column is constant
    return (
        alt.Chart(df, title=title or f"RM score vs gold Likert ({rho_text}{len(df):,} responses)")
        .mark_boxplot(extent="min-max", size=22)
        .encode(
            x=alt.X(f"{gold}:O", title="gold Likert (1-7)", axis=alt.Axis(labelAngle=0)),
            y=alt.Y(f"{score}:Q", title="RM score"),
        )
        .properties(width=320, height=240)
    )


# ----------------------------------------------------------------------------- PPO (stage 3)

BOTTOM = alt.Legend(orient="bottom", labelLimit=0, columns=2)  # long run labels: below, uncut

PPO_CURVES = (
    "objective/scores",
    "objective/gold",
    "objective/kl",
    "objective/entropy",
    "policy/clipfrac",
    "val/vf_loss",
    "ptx/loss",
)


def ppo_curves(
    runs: dict[str, Sequence[dict[str, Any]]], names: Sequence[str] = PPO_CURVES
) -> alt.FacetChart:
    """One small panel per metric against PPO step, a line per run (runs: label -> rows of
    its metrics.jsonl). Panels have their own y scale: reward, KL and losses differ in size."""
    frames = [metric_frame(rows, names).assign(run=label) for label, rows in runs.items()]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if df.empty:
        raise ValueError(f"ppo_curves: none of {', '.join(names)} in these metrics")
    return (
        alt.Chart(df)
        .mark_line()
        .encode(
            x=alt.X("step:Q", title="PPO step"),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("run:N", title="run", legend=BOTTOM),
            tooltip=["run", "step", "metric", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=220, height=140)
        .facet(facet=alt.Facet("metric:N", title=None, sort=list(names)), columns=3)
        .resolve_scale(y="independent")
    )


def reward_vs_kl(
    runs: dict[str, Sequence[dict[str, Any]]], prefix: str = "objective"
) -> alt.FacetChart:
    """RM score and gold quality against KL to the reference, a point per logged step (Gao et
    al. 2022's picture: the proxy keeps rising with KL, gold need not). prefix "objective":
    each step's rollouts; "overopt": the fixed probe batch (ppo.overopt_every), the cleaner
    curve. The two rewards are on different scales, so each gets its own panel."""
    kl_key = f"{prefix}/kl"
    records = [
        {"run": label, "step": r["step"], "kl": r[kl_key], "reward": name, "value": r[key]}
        for label, rows in runs.items()
        for r in rows
        for name, key in (("RM score", f"{prefix}/scores"), ("gold quality", f"{prefix}/gold"))
        if r.get(key) is not None and r.get(kl_key) is not None
    ]
    df = pd.DataFrame(records)
    if df.empty:
        raise ValueError(f"reward_vs_kl: no {kl_key} with {prefix}/scores or {prefix}/gold")
    return (
        alt.Chart(df)
        .mark_line(point=True, opacity=0.7)
        .encode(
            x=alt.X("kl:Q", title="KL(policy || SFT) per response (nats)"),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("run:N", title="run", legend=BOTTOM),
            order=alt.Order("step:Q"),  # the line follows training, not the KL axis
            tooltip=[
                "run",
                "step",
                alt.Tooltip("kl:Q", format=".2f"),
                alt.Tooltip("value:Q", format=".3f"),
            ],
        )
        .properties(width=300, height=200)
        .facet(column=alt.Column("reward:N", title=None))
        .resolve_scale(y="independent")
    )


def token_kl_html(tokens: Sequence[str], kl: Sequence[float], scale: float = 2.0) -> str:
    """The tokens of one response as HTML spans shaded by their per-token KL (log pi - log
    pi_ref; red: the policy made this token likelier than SFT did, blue: less likely), the value
    in each span's tooltip. `scale` is the |KL| of full colour."""
    if len(tokens) != len(kl):
        raise ValueError(f"token_kl_html: {len(tokens)} tokens but {len(kl)} KL values")
    import html

    spans = []
    for tok, k in zip(tokens, kl, strict=True):
        a = min(abs(float(k)) / scale, 1.0)
        rgb = "220,50,47" if k > 0 else "38,139,210"
        spans.append(
            f'<span title="KL {float(k):+.3f}" style="background: rgba({rgb},{a:.2f}); '
            f'white-space: pre-wrap">{html.escape(tok)}</span>'
        )
    style = "font-family: monospace; line-height: 1.8; overflow-wrap: anywhere"
    return f"<div style='{style}'>" + "".join(spans) + "</div>"


# ----------------------------------------------------------------------------- results table


def metric_bars(
    results: dict[str, Any], metrics: Sequence[str], title: str, y_title: str = ""
) -> alt.LayerChart:
    """One bar per run and metric (side by side within a run) with its 95% interval as an
    error bar, from `rlhf.results.evaluate_runs` output; runs without the metric are left out.
    The paper's Fig. 1 is metric_bars(results, ["win_rate"], ...)."""
    labels = results.get("labels") or list(results["rows"])
    records = [
        {"run": label, "metric": m, **{k: ci[k] for k in ("mean", "lo", "hi", "n")}}
        for label in labels
        for m in metrics
        if (ci := results["rows"][label].get(m)) and ci.get("n")
    ]
    df = pd.DataFrame(records)
    if df.empty:
        raise ValueError(f"metric_bars: no run has {', '.join(metrics)}")
    # Past four runs the labels stand on end: level, or turned part way, Vega drops every other
    # one where they would overlap (a dashboard column of 7 runs showed base, PPO, PPO round 0
    # and GRPO, and no SFT). One metric needs no legend, and its width goes to the bars.
    angle = 0 if len(labels) <= 4 else -90
    legend = alt.Legend(title=None) if len(metrics) > 1 else None
    base = alt.Chart(df, title=title).encode(
        x=alt.X("run:N", title=None, sort=labels, axis=alt.Axis(labelAngle=angle)),
        xOffset=alt.XOffset("metric:N", sort=list(metrics)),
        color=alt.Color("metric:N", sort=list(metrics), legend=legend),
    )
    bars = base.mark_bar().encode(
        y=alt.Y("mean:Q", title=y_title or ", ".join(metrics)),
        tooltip=[
            "run",
            "metric",
            alt.Tooltip("mean:Q", format=".3f"),
            alt.Tooltip("lo:Q", format=".3f"),
            alt.Tooltip("hi:Q", format=".3f"),
            "n",
        ],
    )
    errors = base.mark_errorbar(ticks=True).encode(
        y=alt.Y("lo:Q", title=y_title or ", ".join(metrics)), y2="hi:Q"
    )
    return (bars + errors).properties(width=max(220, 90 * len(labels)), height=220)


def breakdown_bars(frame: pd.DataFrame, title: str = "Where the win rate comes from") -> alt.Chart:
    """A stacked bar per policy of its test prompts' outcomes against SFT, from
    `rlhf.breakdown.breakdown_frame`: answers made right (dark green), other wins, ties (grey),
    other losses and answers made wrong (dark red), left to right."""
    _require(frame, ["run", "kind", "what", "count", "share"], "breakdown_bars")
    df = frame.assign(order=frame["kind"].map({k: i for i, k in enumerate(KINDS)}))
    runs = list(dict.fromkeys(df["run"]))
    return (
        alt.Chart(df, title=title)
        .mark_bar()
        .encode(
            x=alt.X("share:Q", title="share of test prompts", axis=alt.Axis(format="%")),
            y=alt.Y("run:N", title=None, sort=runs),
            color=alt.Color(
                "what:N",
                title=None,
                scale=alt.Scale(
                    domain=[WHAT[k] for k in KINDS],
                    range=["#1a7f37", "#8fd19e", "#d0d7de", "#f5a3a3", "#b42318"],
                ),
                legend=BOTTOM,
            ),
            order=alt.Order("order:Q"),
            tooltip=["run", "what", "count", alt.Tooltip("share:Q", format=".1%")],
        )
        # A height per bar, not in total: a fixed height would also hold the legend, and
        # Streamlit squeezes the bars into what is left.
        .properties(width=420, height=alt.Step(26))
    )


# ----------------------------------------------------------------------------- dashboard: rewards


def score_boxes(frame: pd.DataFrame, score: str = "rm_score") -> alt.FacetChart:
    """RM score distributions: a box per policy within each task family (a
    `rlhf.outputs.score_frame`: columns policy, family, and the score)."""
    _require(frame, ["policy", "family", score], "score_boxes")
    df = frame[["policy", "family", score]].dropna()
    if df.empty:
        raise ValueError(f"score_boxes: no rows with a {score}")
    policies = list(dict.fromkeys(df["policy"]))
    return (
        alt.Chart(df)
        .mark_boxplot(extent="min-max", size=14)
        .encode(
            x=alt.X("policy:N", title=None, sort=policies, axis=alt.Axis(labels=False)),
            y=alt.Y(f"{score}:Q", title="RM score"),
            color=alt.Color("policy:N", sort=policies, legend=BOTTOM),
        )
        .properties(width=110, height=160)
        .facet(facet=alt.Facet("family:N", title=None), columns=4)
    )


def score_scatter(frame: pd.DataFrame, score: str = "rm_score", gold: str = "quality") -> alt.Chart:
    """RM score against the gold labeler's quality (0..1) of the same responses, a point per
    response coloured by policy, with the rank correlation in the title: where the proxy
    and the truth part ways, the points spread."""
    _require(frame, ["policy", score, gold], "score_scatter")
    df = frame.dropna(subset=[score, gold])
    if df.empty:
        raise ValueError("score_scatter: no rows with both an RM score and a gold quality")
    rho = rank_correlation(df[score], df[gold])
    rho_text = f"Spearman ρ = {rho:.2f}, " if rho == rho else ""
    tooltip = [c for c in ("policy", "prompt_id", "response") if c in df.columns]
    policies = list(dict.fromkeys(df["policy"]))  # score_boxes' order: a policy keeps its colour
    return (
        alt.Chart(
            df,
            title=alt.Title(
                "RM score vs gold quality", subtitle=f"{rho_text}{len(df):,} responses"
            ),
        )
        .mark_circle(size=40, opacity=0.5)
        .encode(
            x=alt.X(f"{gold}:Q", title="gold quality (0-1)"),
            y=alt.Y(f"{score}:Q", title="RM score"),
            color=alt.Color("policy:N", sort=policies, legend=BOTTOM),
            tooltip=tooltip + [alt.Tooltip(f"{score}:Q", format=".2f"), f"{gold}:Q"],
        )
        .properties(width=380, height=260)
    )


def interval_bars(frame: pd.DataFrame, title: str, chance: float = 0.5) -> alt.LayerChart:
    """Horizontal bars (columns name, value, lo, hi) with their intervals as rules and chance
    marked: RM accuracy per labeler group, say. Bars are coloured by the part of the name
    before " · " (RM, gold, before, after, ...)."""
    _require(frame, ["name", "value", "lo", "hi"], "interval_bars")
    if frame.empty:
        raise ValueError("interval_bars: no rows")
    df = frame.assign(kind=frame["name"].str.split(" · ").str[0])
    y = alt.Y("name:N", title=None, sort=list(df["name"]), axis=alt.Axis(labelLimit=320))
    bars = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=alt.X("value:Q", title="pairwise accuracy", scale=alt.Scale(domain=[0, 1])),
            y=y,
            color=alt.Color("kind:N", legend=None),
            tooltip=[
                "name",
                alt.Tooltip("value:Q", format=".1%"),
                alt.Tooltip("lo:Q", format=".1%"),
                alt.Tooltip("hi:Q", format=".1%"),
            ],
        )
    )
    errors = alt.Chart().mark_rule(color="black", strokeWidth=2).encode(x="lo:Q", x2="hi:Q", y=y)
    rule = alt.Chart().mark_rule(color="gray", strokeDash=[4, 3]).encode(x=alt.datum(chance))
    return alt.layer(bars, errors, rule, data=df, title=title).properties(
        width=360, height=alt.Step(24)
    )
