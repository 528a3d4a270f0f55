"""Policies side by side, each output with what the lab knows of it: the dashboard's Compare
and Rewards pages and `benchmarks/dashboard_latency.py` call this, so what the page shows is
what the benchmark times.

    runs = policy_runs(workspace)                 # every finished base/SFT/PPO/DPO/GRPO run
    judge = Judge(reference, reward_model, world) # any of them may be None
    outs = side_by_side({"SFT": (m, tok), "PPO": (m2, tok)}, prompt, judge, n=1)

An Output carries the RM score (with its demonstration bias, paper 3.5), the gold labeler's
Likert and flags (world prompts only), the response's tokens with their per-token KL to the
reference, log pi(y_t) - log pi_ref(y_t) under each model's own distribution (temperature 1,
the k1 estimator PPO's penalty uses, design.md stage 3), and their sum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rlhf.errors import RunError
from rlhf.generation import Generation, generate
from rlhf.ppo import forward_logprobs, pack
from rlhf.results import run_kinds
from rlhf.runs import POLICY_STAGES, Run, list_runs, read_eval, same_run

PAPER_KINDS = ("base", "SFT", "PPO", "PPO-ptx")  # the paper's policies: the default selections
# Beyond the paper (rlhf.results.label_of): listed after the paper's kinds, in this order.
EXTRA_KINDS = (
    *("DPO", "GRPO", "PPO-ptx+LoRA", "PPO+LoRA", "SFT+LoRA"),
    *("PPO+gold", "PPO-ptx+gold", "PPO+labelers", "PPO-ptx+labelers"),  # the oracle arms
)
POLICY_KINDS = PAPER_KINDS + EXTRA_KINDS


@dataclass
class PolicyRun:
    """A run whose model is a policy (finished, except in ppo_runs): its kind (base, SFT, PPO,
    PPO-ptx, DPO, GRPO, PPO-ptx+LoRA, ...) and a label unique in the workspace
    ("DPO · dpo__tiny__0__20261126-…")."""

    kind: str
    run: Run

    @property
    def label(self) -> str:
        return f"{self.kind} · {self.run.dir.name}"

    @property
    def short(self) -> str:
        """Kind and start time, for chart legends: "PPO-ptx 20261125-220707"."""
        return f"{self.kind} {self.run.dir.name.rsplit('__', 1)[-1]}"

    @property
    def model_dir(self) -> Path:
        return self.run.model_dir


def policy_runs(workspace: str | Path, kind: Callable[[Run], str] | None = None) -> list[PolicyRun]:
    """Every finished pretrain, SFT, PPO, DPO and GRPO run with a saved model, in pipeline
    order (POLICY_KINDS: base, SFT, PPO, PPO-ptx, then the runs beyond the paper), newest first
    within a kind. A PPO run of an earlier round of iterated collection is "PPO round 0", after
    PPO-ptx, as in the results table. `kind`: rlhf.results.run_kinds of the workspace, when
    the caller has it already."""
    out = []
    kind = kind or run_kinds(workspace)
    for stage in POLICY_STAGES:
        for run in reversed(list_runs(Path(workspace), stage)):  # newest first
            if run.done and (run.model_dir / "config.json").exists():
                out.append(PolicyRun(kind(run), run))
    order = {k: i for i, k in enumerate(POLICY_KINDS)}
    earlier_round = order["PPO-ptx"] + 0.5  # after the last round's runs, as in the table

    def rank(p: PolicyRun) -> float:
        return earlier_round if " round " in p.kind else order.get(p.kind, len(order))

    return sorted(out, key=rank)  # stable within a kind


def ppo_runs(workspace: str | Path) -> list[PolicyRun]:
    """Every PPO run with curves to show: the ones training now (newest first), the finished
    ones (as policy_runs orders them), then the stopped or failed ones that logged a step (a
    run stopped by a NaN keeps its curves up to it). Run.state tells them apart."""
    live, ended = [], []
    kind = run_kinds(workspace)
    for run in reversed(list_runs(Path(workspace), "ppo")):
        state = run.state
        if state == "running":
            live.append(PolicyRun(kind(run), run))
        elif not run.done and run.metrics():
            ended.append(PolicyRun(kind(run), run))
    done = [p for p in policy_runs(workspace, kind) if p.run.stage == "ppo"]
    return live + done + ended


def reward_runs(workspace: str | Path) -> list[Run]:
    """Finished reward-model runs, the one the newest PPO run trained against first (what the
    pipeline made), then the others newest first."""
    runs = [r for r in reversed(list_runs(Path(workspace), "rm")) if r.done]
    for ppo in reversed(list_runs(Path(workspace), "ppo")):
        try:
            used = Path(read_eval(ppo).get("rm_run") or "")
        except RunError:
            continue
        first = [r for r in runs if same_run(used, r) or r.dir.resolve() == used.resolve()]
        return first + [r for r in runs if r not in first]
    return runs


def world_of_run(run_dir: str | Path) -> Any:
    """The Tiny World a run was trained on (its saved config's world section), from the
    workspace that holds the run (<workspace>/runs/<run>), wherever that workspace now is."""
    from rlhf.world import load_world

    cfg = Run.open(run_dir).config
    cfg.workspace = str(Path(run_dir).resolve().parent.parent)
    return load_world(cfg, verify=False)


@dataclass
class Judge:
    """What scores the outputs. reference: the frozen SFT model the KL is measured to;
    reward: a rlhf.reward.RewardModel; world: the Tiny World whose gold labeler gives the
    Likert and flags of its own prompts. Each is optional."""

    reference: Any = None
    reward: Any = None
    world: Any = None


@dataclass
class Output:
    """One sampled response to the prompt, with its scores."""

    policy: str
    text: str
    tokens: list[str]  # the response tokens as decoded one by one, EOS included if emitted
    kl: list[float]  # per token log pi - log pi_ref; empty without a reference
    kl_total: float | None  # their sum: the response's KL estimate (nats)
    score: float | None  # RM score, bias included
    likert: int | None  # gold Likert 1..7 (world prompts)
    quality: float | None  # gold quality 0..1
    flags: dict[str, bool] = field(default_factory=dict)  # gold metadata flags that are set
    length: int = 0  # response tokens, EOS included
    ended: bool = False  # ended with EOS rather than at max_new_tokens


def side_by_side(
    policies: dict[str, tuple[Any, Any]],
    prompt: str,
    judge: Judge,
    world_prompt: Any = None,
    n: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 48,
    seed: int = 0,
    min_new_tokens: int = 0,
) -> list[Output]:
    """n outputs of each policy (label -> (model, tokenizer)) for one prompt text, scored by
    the judge; `world_prompt` (a rlhf.world Prompt) enables the gold Likert and flags.
    Every policy samples with the same seed, so a rerun with the same controls is the same;
    temperature 0 decodes greedily; min_new_tokens holds EOS back (the latency benchmark's
    full-length outputs)."""
    if not policies:
        raise ValueError("side_by_side: choose at least one policy")
    if not prompt.strip():
        raise ValueError("side_by_side: the prompt is empty")
    outputs: list[Output] = []
    texts: list[str] = []
    for label, (model, tokenizer) in policies.items():
        g = generate(
            model,
            tokenizer,
            [prompt] * n,
            max_new_tokens=max_new_tokens,
            temperature=temperature if temperature > 0 else 1.0,
            top_p=top_p,
            greedy=temperature == 0,
            seed=seed,
            batch_size=n,
            min_new_tokens=min_new_tokens,
        )
        kl = token_kl(model, judge.reference, g, tokenizer)  # (n, R) or None
        for i in range(n):
            length = int(g.response_mask[i].sum())
            ids = g.response_ids[i, :length].tolist()
            row_kl = [] if kl is None else [float(x) for x in kl[i, :length]]
            j = (
                judge.world.gold.score(world_prompt, g.texts[i])
                if judge.world and world_prompt
                else None
            )
            outputs.append(
                Output(
                    policy=label,
                    text=g.texts[i],
                    tokens=[tokenizer.decode([t]) for t in ids],
                    kl=row_kl,
                    kl_total=sum(row_kl) if kl is not None else None,
                    score=None,
                    likert=j.likert if j else None,
                    quality=j.quality if j else None,
                    flags={k: v for k, v in j.flags.items() if v} if j else {},
                    length=length,
                    ended=bool(g.ended[i]),
                )
            )
            texts.append(g.texts[i])
    if judge.reward is not None:  # one batched call for every policy's outputs
        scores = judge.reward.score([prompt] * len(texts), texts).tolist()
        for out, s in zip(outputs, scores, strict=True):
            out.score = s
    return outputs


@torch.no_grad()
def token_kl(model: Any, reference: Any, g: Generation, tokenizer: Any) -> torch.Tensor | None:
    """(n, R) log pi(y_t) - log pi_ref(y_t) of the sampled tokens, 0 off the response mask;
    None without a reference or when the reference reads other token ids."""
    if reference is None:
        return None
    if reference.config.vocab_size != model.config.vocab_size:
        return None
    pk = pack(g, filler_id=tokenizer.pad_token_id)
    logp, _ = forward_logprobs(model, g, 1.0, pk)  # (n, R)
    ref_logp, _ = forward_logprobs(reference, g, 1.0, pk)  # (n, R)
    return (logp - ref_logp) * g.response_mask


def frame(outputs: list[Output]) -> pd.DataFrame:
    """One row per output: policy, response, RM score, gold Likert, KL, length, flags."""
    return pd.DataFrame(
        [
            {
                "policy": o.policy,
                "response": o.text,
                "rm_score": o.score,
                "likert": o.likert,
                "kl": o.kl_total,
                "length": o.length,
                "ended": o.ended,
                "flags": ", ".join(sorted(o.flags)),
            }
            for o in outputs
        ]
    )


def score_frame(
    policies: dict[str, tuple[Any, Any]],
    prompts: list[Any],
    judge: Judge,
    max_new_tokens: int = 48,
) -> pd.DataFrame:
    """Greedy answers of every policy to world prompts (as `rlhf eval` decodes), each scored by
    the RM and the gold labeler: one row per (policy, prompt) with columns policy, prompt_id,
    family, response, rm_score, likert, quality. The Rewards page's distributions and RM-vs-gold
    scatter."""
    if not prompts:
        raise ValueError("score_frame: no prompts")
    texts = [p.text for p in prompts]
    rows = []
    for label, (model, tokenizer) in policies.items():
        g = generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, greedy=True)
        scores = (
            judge.reward.score(texts, g.texts).tolist()
            if judge.reward is not None
            else [None] * len(prompts)
        )
        for p, text, s in zip(prompts, g.texts, scores, strict=True):
            j = judge.world.gold.score(p, text) if judge.world else None
            rows.append(
                {
                    "policy": label,
                    "prompt_id": p.id,
                    "family": p.family,
                    "response": text,
                    "rm_score": s,
                    "likert": j.likert if j else None,
                    "quality": j.quality if j else None,
                }
            )
    return pd.DataFrame(rows)
