"""What the dashboard's pages share: the workspace, models behind st.cache_resource (each
loaded once per process and model directory, whichever page asks), and the message a page
shows when there is nothing to show yet. Pages (dashboard/pages/*.py) hold layout only.

`rlhf dashboard --workspace DIR` passes the workspace as RLHF_WORKSPACE.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import streamlit as st

from rlhf.config import load
from rlhf.errors import RunError
from rlhf.outputs import (
    PAPER_KINDS,
    Judge,
    PolicyRun,
    policy_runs,
    ppo_runs,
    reward_runs,
    world_of_run,
)
from rlhf.runs import Run, read_eval, recorded_run

# model directory -> times it was loaded in this process: the cache's own test reads it
LOADS: Counter[str] = Counter()

RUN_FIRST = (
    "make demo                                  # the whole tiny pipeline, about 18 minutes\n"
    "# or stage by stage:\n"
    "rlhf world build --recipe tiny && rlhf pretrain --recipe tiny && rlhf sft --recipe tiny\n"
    "rlhf compare --recipe tiny && rlhf rm --recipe tiny && rlhf ppo --recipe tiny"
)


def workspace() -> Path:
    """The lab's workspace: RLHF_WORKSPACE, else the default of rlhf.config (lab/)."""
    env = os.environ.get("RLHF_WORKSPACE")
    return Path(env) if env else load("tiny").workspace_dir


def nothing_yet(what: str, command: str) -> None:
    """The page's empty state: what is missing and the exact command that makes it."""
    st.info(f"{what} Run this first (workspace: `{workspace()}`):")
    st.code(command, language="bash")


def policy(model_dir: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a policy directory, in eval mode; one copy per directory however
    its path is spelled, shared across sessions (read only: sampling never changes weights)."""
    return _policy(str(Path(model_dir).resolve()))


def reward_model(model_dir: str | Path) -> Any:
    """A rlhf.reward.RewardModel, loaded once per directory."""
    return _reward_model(str(Path(model_dir).resolve()))


@st.cache_resource(show_spinner="Loading the model…", max_entries=16)
def _policy(model_dir: str) -> tuple[Any, Any]:
    from rlhf.models import load_policy

    LOADS[model_dir] += 1
    return load_policy(model_dir)


@st.cache_resource(show_spinner="Loading the reward model…", max_entries=8)
def _reward_model(model_dir: str) -> Any:
    from rlhf.reward import load_reward_model

    LOADS[model_dir] += 1
    return load_reward_model(model_dir)


@st.cache_resource(show_spinner="Opening the Tiny World…", max_entries=4)
def world_of(run_dir: str) -> Any:
    """The world a run was trained on (rlhf.outputs.world_of_run), opened once."""
    return world_of_run(run_dir)


def policies() -> list[PolicyRun]:
    return policy_runs(workspace())


LIVE_REFRESH_S = 3.0  # seconds between redraws of a page that follows a run still training


def training_runs() -> list[PolicyRun]:
    """rlhf.outputs.ppo_runs of the workspace: running, finished, then stopped or failed."""
    return ppo_runs(workspace())


def progress_line(p: PolicyRun) -> str:
    """Where a PPO run that has not finished is: "PPO 20261126-124310: running, step 23 of 60
    (1.6 s a step, about 1 min left)"; stopped (its process is gone) or failed (why), with the
    step its checkpoint resumes from."""
    g = p.run.progress()
    where = f"step {g['step']} of {g['steps']}"
    if g["state"] == "running":
        if g["s_per_step"] is None:
            return f"{p.short}: running, before its first step"
        if g["step"] >= g["steps"]:
            return f"{p.short}: running, {where}: training done, writing its report"
        left = g["eta_s"]
        eta = f"{left:.0f} s" if left < 90 else f"{left / 60:.0f} min"
        return f"{p.short}: running, {where} ({g['s_per_step']:.1f} s a step, about {eta} left)"
    state, error = p.run.state, p.run.status.get("error", "")
    why = "its process is gone" if state == "stopped" else error.removesuffix(": ")
    why = "interrupted" if why == "KeyboardInterrupt" else why
    saved = p.run.checkpoint_dir / "state.json"
    back = (
        f"resumable from step {json.loads(saved.read_text())['step']}: run its command again, "
        f"or pass --run-dir {p.run.dir}"
        if saved.exists()
        else f"no checkpoint to resume from: {p.run.dir}"
    )
    return f"{p.short}: {state} at {where} ({why}; {back})"


def policies_or_stop(what: str) -> list[PolicyRun]:
    """The workspace's policies; with none, the page says `what` is missing, what to run, and
    stops."""
    runs = policies()
    if not runs:
        nothing_yet(what, RUN_FIRST)
        st.stop()
    return runs


def newest_of_each_kind(runs: list[PolicyRun]) -> list[str]:
    """Labels of the newest base, SFT, PPO and PPO-ptx run (the default selection; the runs
    beyond the paper, DPO, GRPO and LoRA ones, are listed to choose from, not preselected)."""
    newest: dict[str, str] = {}
    for p in runs:  # policy_runs: newest first within a kind
        if p.kind in PAPER_KINDS:
            newest.setdefault(p.kind, p.label)
    return list(newest.values())


def ppo_pair(runs: list[PolicyRun]) -> list[str]:
    """The KL drift page's default choice of `training_runs`: any run training now, then the
    newest finished PPO and PPO-ptx runs (the paper's pair, side by side as in notebook 04);
    the first two runs when there are neither."""
    live = [p.label for p in runs if p.run.state == "running"]
    finished = newest_of_each_kind([p for p in runs if p.run.done])  # of PPO runs: the pair
    return live + finished or [p.label for p in runs[:2]]


def paid_for(run: Run) -> tuple[str, dict[str, Any]] | None:
    """(the run's reward, `rm_vs_gold` of its eval.json): the gold losses its reward scored
    above SFT's answer (rlhf.breakdown.rm_vs_gold). The reward is its eval.json's: "rm", or an
    oracle arm's "gold" / "labelers" (rlhf.ppo_report.reward_name names it). None for a run not
    finished, or whose report predates it or cannot be read."""
    if not run.done:
        return None
    try:
        report = read_eval(run)
    except RunError:
        return None
    paid = report.get("rm_vs_gold")
    if not paid:
        return None
    return report.get("reward", "rm"), paid


def reward_run_choices() -> list[Run]:
    return reward_runs(workspace())


def judge(rm_run: Run | None, sft_fallback: PolicyRun | None = None) -> Judge:
    """The RM of `rm_run`, its SFT model as the KL reference and its world; without an RM,
    the newest SFT policy as the reference and its world."""
    if rm_run is not None:
        sft_dir = read_eval(rm_run).get("sft_run")
        if sft_dir:  # the SFT run in this workspace, also when it was copied or moved since
            sft_dir = recorded_run(sft_dir, rm_run.dir.parent.parent)
        ref = policy(str(Run.open(sft_dir).model_dir))[0] if sft_dir else None
        return Judge(ref, reward_model(str(rm_run.model_dir)), world_of(str(rm_run.dir)))
    if sft_fallback is not None:
        return Judge(
            policy(str(sft_fallback.model_dir))[0], None, world_of(str(sft_fallback.run.dir))
        )
    return Judge()


def short(path: str | Path) -> str:
    """A run directory's name, for labels."""
    return Path(path).name


@st.cache_data(show_spinner="Answering test prompts and scoring them…", max_entries=8)
def scored_answers(policy_dirs: dict[str, str], rm_run_dir: str, per_family: int) -> Any:
    """rlhf.outputs.score_frame for these policies (label -> model dir) on the first
    `per_family` test prompts of each task family of the RM's world, cached by its inputs."""
    from rlhf.outputs import score_frame

    rm_run = Run.open(rm_run_dir)
    world = world_of(str(rm_run.dir))
    prompts = []
    for family in sorted({p.family for p in world.prompts("test")}):
        prompts += world.prompts("test", family)[:per_family]
    models = {label: policy(d) for label, d in policy_dirs.items()}
    j = Judge(None, reward_model(str(rm_run.model_dir)), world)
    return score_frame(models, prompts, j)
