"""The workspace at a glance: every run with its stage, kind, recipe, status, duration and the
one or two numbers that say how it went (the dashboard's Runs page, `rlhf runs`-style)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from rlhf.errors import RunError
from rlhf.results import run_kinds
from rlhf.runs import Run, list_runs, read_eval


def _mean(x: Any) -> float | None:
    """A figure stored either as a number or as {"mean", "lo", "hi", "n"}."""
    if isinstance(x, dict):
        return x.get("mean")
    return x if isinstance(x, int | float) else None


def key_metrics(run: Run) -> dict[str, float | None]:
    """The headline numbers of a finished run's eval.json, by stage."""
    try:
        ev = read_eval(run)
    except RunError:
        return {}
    stage = run.stage
    if stage == "pretrain":
        return {
            "heldout perplexity": ev.get("heldout_perplexity"),
            "fact cloze": ev.get("fact_cloze_accuracy"),
        }
    if stage == "sft":
        return {
            "Likert": (ev.get("sft") or {}).get("likert_mean"),
            "fails to follow": (ev.get("sft") or {}).get("fails_to_follow"),
        }
    if stage == "rm":
        return {
            "RM acc. (training labelers)": ev.get("accuracy/val_train_labelers"),
            "RM acc. (held-out labelers)": ev.get("accuracy/val_heldout_labelers"),
        }
    if stage == "ppo":
        return {
            "win rate vs SFT": _mean(ev.get("win_rate_vs_sft")),
            "Likert": _mean(ev.get("likert/policy")),
            "RM score": _mean(ev.get("rm_score/policy")),
        }
    if stage in ("dpo", "grpo"):  # their own report: fewer test prompts than `rlhf eval`'s
        return {
            "win rate vs SFT": _mean(ev.get("win_rate_vs_sft")),
            "Likert": _mean(ev.get("likert/policy")),
        }
    return {}


def runs_frame(workspace: str | Path) -> pd.DataFrame:
    """One row per run, oldest first: run, stage, kind, recipe, seed, status, started,
    duration_s, then the key metrics (columns differ by stage; NaN where they do not apply)."""
    rows = []
    kind_of = run_kinds(workspace)
    for run in list_runs(Path(workspace)):
        cfg = run.raw_config()
        status = run.status
        try:
            kind = kind_of(run)
        except RunError:
            kind = run.stage
        rows.append(
            {
                "run": run.dir.name,
                "stage": run.stage,
                "kind": kind,
                "recipe": Path(str(cfg.get("recipe", ""))).stem,
                "seed": cfg.get("seed"),
                "status": run.state,  # "stopped": marked running, its process gone
                "started": status.get("started"),
                "duration_s": status.get("wall_time_s"),
                **key_metrics(run),
                "path": str(run.dir),
            }
        )
    return pd.DataFrame(rows)


def results_of(workspace: str | Path) -> dict[str, Any] | None:
    """<workspace>/results/results.json (written by `rlhf eval` / `rlhf pipeline`), or None."""
    f = Path(workspace) / "results" / "results.json"
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{f}: corrupted ({e.msg} at line {e.lineno})") from None
