"""Beyond the paper: a reward model that is the mean of several trained ones (`rm.ensemble`).

Reward models trained differently make different mistakes, so their mean ranks better than
any one of them; ensembles are also harder for a policy to over-optimise (Coste et al. 2024,
"Reward model ensembles help mitigate overoptimization"; Eisenstein et al. 2023). On the Tiny
World the SFT-initialised RM with the likelihood term (rlhf/likelihood.py: it checks answers)
and the MiniLM RM (rm.backbone=minilm: it reads English) err on different comparisons: 72.0% /
70.0% held-out accuracy together, 69.8% / 67.5% and 68.9% / 68.2% alone (docs/benchmarks.md).

    r(x, y) = mean_i(r_i(x, y) / s_i) * mean_i(s_i) + b

r_i: member i's reward, its own demonstration bias included; s_i: the standard deviation of
r_i over the distinct responses of the training comparisons, so that no member weighs more
for having a wider scale; the product keeps a single RM's scale (what ppo.kl_coef was tuned
against). Each member scores demonstrations at mean 0 (paper 3.5), so their mean does too; b,
measured as for a trained RM, removes what float error is left.

An ensemble run trains nothing: its model/ holds ensemble.json (the member runs, s_i, b) and
loads wherever an RM run does (`rlhf.reward.load_reward_model`). PPO starts its value model from
the first member that reads the policy's tokens (paper 3.5), else from the policy.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rlhf.config import LabConfig
from rlhf.errors import ConfigError, RunError
from rlhf.runs import Run, recorded_run, saved_config

ENSEMBLE_FILE = "ensemble.json"


class EnsembleRM(torch.nn.Module):
    """The scale-matched mean of member reward models (rlhf.reward.RewardModel), with the same
    `score` as one."""

    def __init__(
        self,
        members: list,
        scales: list[float],
        runs: list[str],
        bias: float = 0.0,
        known: dict[tuple[str, str], float] | None = None,
    ):
        super().__init__()
        if len(members) != len(scales) or len(members) != len(runs):
            raise ValueError("one scale and one run per member")
        self.members = torch.nn.ModuleList(members)
        self.scales, self.runs, self.bias = [float(s) for s in scales], list(runs), bias
        # (prompt, response) -> reward before the bias, for texts already scored (combine's
        # training responses): the stage scores them again for its training accuracy, and a
        # MiniLM member takes ~35 s for them. Not saved; a loaded ensemble starts empty.
        self.known = dict(known or {})

    def _mean(self, prompts: list[str], responses: list[str], batch_size: int) -> torch.Tensor:
        """(N,) the scale-matched mean of the members' rewards, before the bias."""
        scores = [m.score(prompts, responses, batch_size) for m in self.members]
        return scaled_mean(scores, self.scales)

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str], batch_size: int = 64) -> torch.Tensor:
        """(N,) rewards: each member scores the texts with its own tokenizer."""
        keys = list(zip(prompts, responses, strict=True))
        out = torch.tensor([self.known.get(k, math.nan) for k in keys], dtype=torch.float32)
        todo = [i for i, k in enumerate(keys) if k not in self.known]
        if todo:
            out[todo] = self._mean(
                [prompts[i] for i in todo], [responses[i] for i in todo], batch_size
            )
        return out + self.bias

    def value_init_dir(self, tokenizer) -> Path | None:
        """The model directory of the first member that reads `tokenizer`'s tokens, or None."""
        for m in self.members:
            found = m.value_init_dir(tokenizer)
            if found is not None:
                return found
        return None


def member_runs(cfg: LabConfig) -> list[Run]:
    """rm.ensemble's runs (directories, or names in this workspace's runs/), checked: at least
    two, each a finished RM run (not an ensemble) of this config's world. Raises ConfigError
    naming the field and the run."""
    names = cfg.rm.ensemble
    if len(names) < 2:
        raise ConfigError(f"rm.ensemble needs at least two RM runs, got {len(names)}: {names}")
    if cfg.rm.backbone or cfg.rm.likelihood_weight or cfg.rm.data:
        raise ConfigError(
            "rm.ensemble combines trained RMs: set rm.backbone, rm.likelihood_weight and rm.data "
            "on its members' runs, not on the ensemble"
        )
    want = saved_config(cfg, "rm")["world"]
    runs = []
    for name in names:
        path = Path(name).expanduser()
        if len(path.parts) == 1 and not path.is_dir():  # a run's name: in this workspace
            path = cfg.workspace_dir / "runs" / name
        try:
            run = Run.open(recorded_run(path, cfg.workspace_dir))
        except RunError as e:
            raise ConfigError(f"rm.ensemble: {e}") from None
        where = f"rm.ensemble: {run.dir}"
        if run.stage != "rm" or not run.done:
            raise ConfigError(f"{where}: not a finished RM run")
        if (run.model_dir / ENSEMBLE_FILE).exists():
            raise ConfigError(f"{where}: an ensemble itself; name its members instead")
        if run.raw_config().get("world") != want:
            raise ConfigError(f"{where}: trained on another world than this config's")
        runs.append(run)
    if len({r.dir.resolve() for r in runs}) < len(runs):
        raise ConfigError(f"rm.ensemble names a run twice: {names}")
    return runs


def combine(runs: list[Run], prompts: list[str], responses: list[str]) -> EnsembleRM:
    """The ensemble of `runs`' RMs, each scaled by its spread over (prompts, responses): the
    training comparisons' distinct responses, whose rewards it keeps (`known`: the stage scores
    them again). Its bias is 0 until the stage measures it."""
    from rlhf.reward import load_reward_model

    members = [load_reward_model(r.model_dir) for r in runs]
    scores, scales = [], []
    for run, m in zip(runs, members, strict=True):
        scores.append(m.score(prompts, responses))  # (N,)
        s = float(scores[-1].std())
        if not s > 0:  # 0 or nan: a member that scores everything alike cannot be scaled
            raise RunError(f"rm.ensemble: {run.dir} gives every training response one score")
        scales.append(s)
    keys = zip(prompts, responses, strict=True)
    known = dict(zip(keys, scaled_mean(scores, scales).tolist(), strict=True))
    return EnsembleRM(members, scales, [str(r.dir) for r in runs], known=known)


def scaled_mean(scores: list[torch.Tensor], scales: list[float]) -> torch.Tensor:
    """(N,) the mean of the members' (N,) scores, each divided by its spread, rescaled to the
    members' mean spread."""
    total = sum(r / s for r, s in zip(scores, scales, strict=True))  # (N,)
    return total / len(scores) * statistics.fmean(scales)


def save(rm: EnsembleRM, model_dir: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    info = {"members": rm.runs, "scales": rm.scales, "bias": rm.bias}
    tmp = model_dir / (ENSEMBLE_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    tmp.replace(model_dir / ENSEMBLE_FILE)


def load(model_dir: Path) -> EnsembleRM:
    """The ensemble saved in model_dir (<workspace>/runs/<run>/model): its members are found by
    name in the same workspace when it was copied or moved (rlhf.runs.recorded_run)."""
    from rlhf.reward import load_reward_model

    path = model_dir / ENSEMBLE_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
        runs, scales, bias = list(info["members"]), list(info["scales"]), float(info["bias"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunError(f"{path}: cannot read the ensemble ({type(e).__name__}: {e})") from None
    workspace = model_dir.resolve().parent.parent.parent
    members = []
    for name in runs:
        member = recorded_run(name, workspace) / "model"
        if not member.is_dir():
            raise RunError(f"{path}: member {name} is gone ({member} missing)")
        members.append(load_reward_model(member))
    return EnsembleRM(members, scales, runs, bias)


def members_frame(report: dict[str, Any]) -> pd.DataFrame:
    """An ensemble RM run's eval.json as a table: each member (its run's name, scale, held-out
    accuracy on both labeler groups as its own run measured them), then the ensemble itself.
    Empty for a trained RM."""
    columns = ["reward model", "scale", "training labelers", "held-out labelers"]
    rows = [
        [Path(m["run"]).name, m["scale"]]
        + [m.get(f"accuracy/val_{g}") for g in ("train_labelers", "heldout_labelers")]
        for m in report.get("ensemble") or []
    ]
    if rows:
        own = [report.get(f"accuracy/val_{g}") for g in ("train_labelers", "heldout_labelers")]
        rows.append(["the ensemble", None, *own])
    return pd.DataFrame(rows, columns=columns)
