"""Beyond the paper: DPO (Rafailov et al. 2023) on the same comparisons the reward model learns
from, as an extra row of the results table beside PPO and PPO-ptx.

    1. the policy: the SFT run of this config (`dpo.sft_run`, else as PPO finds it); the
       reference: the same SFT model, frozen (DPO's implicit KL anchor, as PPO's pi_ref)
    2. data: the RM's training comparisons (rlhf.reward.training_comparisons, split as the RM
       splits them: train prompts ranked by training labelers), each ranking expanded to every
       (chosen, rejected) pair with strictly different ranks (Comparison.pairs); responses get
       the leading space the prompt's "A:" wants, as SFT's completions and the RM's inputs
    3. TRL DPOTrainer, sigmoid loss with dpo.beta; TRL appends EOS to both responses. CPU
       settings forced (TRL 1.x defaults to bf16 + gradient checkpointing)
    4. resume from run/checkpoint/ if it exists; the final model is saved to run/model/
    5. eval.json: greedy answers of DPO and SFT on dpo.eval_prompts test prompts, judged by the
       gold labeler: win rate against SFT (ties half) and Likert, 95% bootstrap intervals.
       `rlhf eval --runs ...` gives the full row (every test prompt, the alignment tax)

`train(cfg)` returns the Run; `rlhf dpo --recipe R` calls it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from datasets import Dataset

from rlhf.callbacks import LogToRun, cosine_schedule, train_resuming, trainer_args
from rlhf.config import LabConfig, check_length
from rlhf.errors import RunError
from rlhf.evaluate import judged_answers, win_outcomes, with_ci
from rlhf.models import ensure_pad_token, load_policy, save_model
from rlhf.pretrain import pick_eval_prompts
from rlhf.runs import Run, moved_source, read_eval, run_stage, upstream
from rlhf.store import Comparison
from rlhf.world import build_world


class LogDPO(LogToRun):
    """TRL's DPO logs under the lab's names (dpo/ for its implicit-reward statistics)."""

    NAMES = {
        **LogToRun.NAMES,
        "rewards/accuracies": "dpo/accuracy",
        "rewards/margins": "dpo/margin",
        "rewards/chosen": "dpo/reward_chosen",
        "rewards/rejected": "dpo/reward_rejected",
        "logps/chosen": "dpo/logps_chosen",
        "logps/rejected": "dpo/logps_rejected",
    }


def train(cfg: LabConfig, run_dir: str | os.PathLike | None = None, progress: bool = True) -> Run:
    """Train (or resume, or return if already done) the DPO run in `run_dir`."""
    from rlhf.reward import no_comparisons, training_comparisons

    check_length(cfg, "dpo")  # checks first: a bad config leaves no run directory
    start = upstream(cfg, "sft", cfg.dpo.sft_run, "dpo.sft_run")  # missing: no run dir left
    rows, skipped = training_comparisons(cfg)  # none yet (no rlhf compare): no run dir left
    if not rows:
        raise RunError(no_comparisons(cfg, skipped))
    return run_stage(cfg, "dpo", run_dir, lambda run: _train(cfg, run, progress, start, rows))


def stale(run: Run, cfg: LabConfig) -> str | None:
    """Why a finished DPO run of this config should not be reused: it started from another SFT
    run than this config now resolves to, or the store's training comparisons changed."""
    from rlhf.reward import data_fingerprint, training_comparisons

    try:
        report = read_eval(run)
        now = upstream(cfg, "sft", cfg.dpo.sft_run, "dpo.sft_run")
    except RunError:
        return None
    if moved := moved_source(run, {"sft_run": now}):
        return moved
    data = data_fingerprint(training_comparisons(cfg)[0], cfg.rm.data)
    if report.get("data") and report["data"] != data:
        return f"the comparisons changed since {run.dir} trained on them"
    return None


def training_rows(
    cfg: LabConfig, world: Any, rows: list[Comparison]
) -> tuple[list[Comparison], dict[str, Any]]:
    """(the RM's training comparisons, the fingerprint of all its comparisons, as the RM's), of
    `rows`: every comparison the RM reads (rlhf.reward.training_comparisons)."""
    from rlhf.reward import data_fingerprint, split_comparisons, split_file_comparisons

    if cfg.rm.data:
        train_rows = split_file_comparisons(rows)["train"]
    else:
        train_rows = split_comparisons(rows, {lab.id for lab in world.heldout_labelers})["train"]
    return train_rows, data_fingerprint(rows, cfg.rm.data)


def training_pairs(cfg: LabConfig, train_rows: list[Comparison]) -> list[dict[str, str]]:
    """(prompt, chosen, rejected) rows of every pair in the RM's training comparisons."""
    pairs = [
        {"prompt": c.prompt, "chosen": " " + chosen.strip(), "rejected": " " + rejected.strip()}
        for c in train_rows
        for chosen, rejected in c.pairs()
    ]
    if not pairs:
        raise RunError(
            f"no training comparisons for this config; run: rlhf compare --recipe {cfg.recipe}"
        )
    return pairs


def versus_sft(
    cfg: LabConfig,
    world: Any,
    policy: Any,
    sft: Any,
    tokenizer: Any,
    n_prompts: int,
    max_new_tokens: int,
) -> dict[str, Any]:
    """Greedy answers of `policy` and `sft` to n test prompts, judged by the gold labeler: the
    win rate against SFT (ties half) and both Likert means, with 95% bootstrap intervals."""
    prompts = pick_eval_prompts(world, n_prompts)
    tokenizer.padding_side = "left"
    quality, likert, samples = {}, {}, {}
    for name, model in (("policy", policy), ("sft", sft)):
        texts, judged = judged_answers(model.eval(), tokenizer, world, prompts, max_new_tokens)
        quality[name] = [j.quality for j in judged]
        likert[name] = [float(j.likert) for j in judged]
        samples[name] = texts
    n, seed = cfg.ppo.bootstrap, cfg.seed
    return {
        "win_rate_vs_sft": with_ci(win_outcomes(quality["policy"], quality["sft"]), n, seed),
        "likert/policy": with_ci(likert["policy"], n, seed),
        "likert/sft": with_ci(likert["sft"], n, seed),
        "n_prompts": len(prompts),
        "samples": [
            {"prompt": q.text, "sft": samples["sft"][i], "policy": samples["policy"][i]}
            for i, q in enumerate(prompts[:8])
        ],
    }


def _train(cfg: LabConfig, run: Run, progress: bool, start: Run, rows: list[Comparison]) -> None:
    """`start`: the SFT run it starts from (and its reference); `rows`: the RM's comparisons;
    both read by train before the run directory exists."""
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    t_start = time.perf_counter()
    d = cfg.dpo
    world = build_world(cfg, progress=progress)
    model, tokenizer = load_policy(start.model_dir, padding_side="right")
    ref, _ = load_policy(start.model_dir)
    ensure_pad_token(tokenizer, model, ref)
    train_rows, data = training_rows(cfg, world, rows)
    pairs = training_pairs(cfg, train_rows)

    args = TRLDPOConfig(
        **trainer_args(run, cfg.seed, progress, d.log_every, d.checkpoint_every, keep=2),
        beta=d.beta,
        loss_type=["sigmoid"],
        **cosine_schedule(d.lr, d.epochs, d.max_steps, d.batch_size),
        max_length=d.max_length,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref.eval(),
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        callbacks=[LogDPO(run)],
    )
    train_resuming(trainer, run)
    policy = trainer.model.eval()
    save_model(policy, tokenizer, run.model_dir)

    report = {
        "sft_run": str(start.dir),
        "train_pairs": len(pairs),
        "data": data,
        "steps": trainer.state.global_step,
        **versus_sft(cfg, world, policy, ref, tokenizer, d.eval_prompts, d.max_new_tokens),
    }
    last = [r for r in run.metrics() if "dpo/accuracy" in r]
    if last:
        report["training"] = {k: last[-1][k] for k in last[-1] if k.startswith("dpo/")}
    report["wall_time_s"] = time.perf_counter() - t_start
    run.write_eval(report)
    run.set_status("done", wall_time_s=report["wall_time_s"])


def summary(report: dict[str, Any]) -> str:
    """DPO vs SFT figures of eval.json (printed by `rlhf dpo` and `rlhf grpo`)."""

    def ci(c: dict[str, float], pct: bool = False) -> str:
        f = (lambda x: f"{x:.1%}") if pct else (lambda x: f"{x:.2f}")
        return f"{f(c['mean'])} [{f(c['lo'])}, {f(c['hi'])}]"

    return "\n".join(
        [
            f"win rate vs SFT   {ci(report['win_rate_vs_sft'], pct=True)} "
            f"(n={report['n_prompts']} test prompts, gold labeler, ties half)",
            f"gold Likert       {ci(report['likert/policy'])} (SFT {ci(report['likert/sft'])})",
            f"steps             {report['steps']}",
            f"wall time         {report['wall_time_s']:.0f} s",
        ]
    )
