"""Beyond the paper: GRPO (Shao et al. 2024) against our reward model, as an extra row of the
results table beside PPO and PPO-ptx.

    1. the policy: the SFT run of this config (`grpo.sft_run`, else as PPO finds it); TRL
       loads the frozen reference from it when grpo.beta > 0
    2. prompts: the world's train prompts and rl split's (as PPO's rollouts)
    3. reward: the RM run's score of each (prompt, response) text, with its demonstration bias
       (RewardModel.score), minus grpo.missing_eos_penalty when the response has no EOS (as
       PPO); TRL normalises rewards within each prompt's group of num_generations responses:
       the group mean replaces PPO's value model as the baseline
    4. TRL GRPOTrainer, sized as PPO: grpo.steps rollouts of batch_size responses, each
       trained on grpo_epochs times in mini_batch_size gradient steps (TRL's
       generation_batch_size, per_device_train_batch_size, num_iterations; TRL's max_steps
       counts gradient steps); CPU settings forced (TRL 1.x defaults to bf16 + gradient
       checkpointing); resume from run/checkpoint/; the final model is saved to run/model/
    5. eval.json: win rate against SFT and Likert on grpo.eval_prompts test prompts (as DPO's)

`train(cfg)` returns the Run; `rlhf grpo --recipe R` calls it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from datasets import Dataset

from rlhf.callbacks import LogToRun, train_resuming, trainer_args
from rlhf.config import LabConfig, check_length
from rlhf.dpo import summary, versus_sft  # noqa: F401 - `rlhf grpo` prints summary
from rlhf.errors import ConfigError, RunError
from rlhf.models import ensure_pad_token, load_policy, save_model
from rlhf.reward import RewardModel, load_reward_model
from rlhf.runs import Run, moved_source, run_stage, upstream
from rlhf.world import build_world


class LogGRPO(LogToRun):
    """TRL's GRPO logs under the lab's names (objective/ as PPO's, response/ for lengths)."""

    NAMES = {
        **LogToRun.NAMES,
        "reward": "objective/scores",
        "reward_std": "objective/scores_std",
        "kl": "objective/kl",
        "entropy": "policy/entropy_avg",
        "completions/mean_length": "response/length",
        "completions/clipped_ratio": "response/no_eos_rate",
    }


def train(cfg: LabConfig, run_dir: str | os.PathLike | None = None, progress: bool = True) -> Run:
    """Train (or resume, or return if already done) the GRPO run in `run_dir`."""
    check(cfg)  # bad sizes leave no run directory behind
    check_length(cfg, "grpo")
    sources = sft_run(cfg), rm_run(cfg)  # nor does a missing SFT or RM run
    return run_stage(cfg, "grpo", run_dir, lambda run: _train(cfg, run, progress, sources))


def stale(run: Run, cfg: LabConfig) -> str | None:
    """Why a finished GRPO run of this config should not be reused: it started from another
    SFT or RM run than this config now resolves to (as rlhf.ppo.stale), else None."""
    try:
        sources = {"sft_run": sft_run(cfg), "rm_run": rm_run(cfg)}
    except RunError:
        return None
    return moved_source(run, sources)


def check(cfg: LabConfig) -> None:
    """A clear error for sizes TRL would reject later, or that split a rollout."""
    g = cfg.grpo
    if min(g.steps, g.mini_batch_size, g.grpo_epochs) < 1 or g.num_generations < 2:
        raise ConfigError("grpo.steps, mini_batch_size, grpo_epochs >= 1, num_generations >= 2")
    for name, n in (("mini_batch_size", g.mini_batch_size), ("num_generations", g.num_generations)):
        if g.batch_size % n:
            raise ConfigError(
                f"grpo.batch_size ({g.batch_size}) must be a multiple of {name} ({n})"
            )


def sft_run(cfg: LabConfig) -> Run:
    return upstream(cfg, "sft", cfg.grpo.sft_run, "grpo.sft_run")


def rm_run(cfg: LabConfig) -> Run:
    return upstream(cfg, "rm", cfg.grpo.rm_run, "grpo.rm_run")


def rm_reward(rm: RewardModel, eos_id: int, missing_eos_penalty: float):
    """A TRL reward function: the RM's score of each (prompt, completion) text, minus the
    penalty where the sampled ids hold no EOS (the response ran into max_new_tokens)."""

    def rm_score(prompts, completions, completion_ids, **_: Any) -> list[float]:
        scores = rm.score(list(prompts), list(completions)).tolist()
        return [
            s - (0.0 if eos_id in ids else missing_eos_penalty)
            for s, ids in zip(scores, completion_ids, strict=True)
        ]

    return rm_score


def _train(cfg: LabConfig, run: Run, progress: bool, sources: tuple[Run, Run]) -> None:
    """`sources`: the (SFT, RM) runs it starts from, resolved by train."""
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    t_start = time.perf_counter()
    g = cfg.grpo
    world = build_world(cfg, progress=progress)
    start, rm_source = sources
    model, tokenizer = load_policy(start.model_dir)  # pads left: TRL generates
    ensure_pad_token(tokenizer, model)
    rm = load_reward_model(rm_source.model_dir)
    prompts = Dataset.from_list([{"prompt": p.text} for p in world.rl_prompts()])

    args = TRLGRPOConfig(
        **trainer_args(run, cfg.seed, progress, g.log_every, g.checkpoint_every, keep=2),
        learning_rate=g.lr,
        lr_scheduler_type="constant",
        max_steps=g.steps * g.updates_per_rollout,  # TRL counts gradient steps
        generation_batch_size=g.batch_size,
        per_device_train_batch_size=g.mini_batch_size,
        num_iterations=g.grpo_epochs,
        epsilon=g.cliprange,
        num_generations=g.num_generations,
        max_completion_length=g.max_new_tokens,
        temperature=g.temperature,
        top_p=1.0,
        top_k=0,
        beta=g.beta,
        loss_type=g.loss_type,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rm_reward(rm, tokenizer.eos_token_id, g.missing_eos_penalty),
        args=args,
        train_dataset=prompts,
        processing_class=tokenizer,
        callbacks=[LogGRPO(run)],
    )
    train_resuming(trainer, run)
    policy = trainer.model.eval()
    save_model(policy, tokenizer, run.model_dir)

    sft, _ = load_policy(start.model_dir)
    ensure_pad_token(tokenizer, sft)
    report = {
        "sft_run": str(start.dir),
        "rm_run": str(rm_source.dir),
        "steps": trainer.state.global_step,
        "rollouts": trainer.state.global_step // g.updates_per_rollout,
        "rollout_prompts": len(prompts),  # what the rollouts drew from: World.rl_prompts()
        **versus_sft(cfg, world, policy, sft, tokenizer, g.eval_prompts, g.max_new_tokens),
    }
    rows = [r for r in run.metrics() if "objective/scores" in r]
    if rows:
        report["training"] = {
            k: {"first": rows[0].get(k), "last": rows[-1].get(k)}
            for k in ("objective/scores", "objective/kl", "response/length")
        }
    report["wall_time_s"] = time.perf_counter() - t_start
    run.write_eval(report)
    run.set_status("done", wall_time_s=report["wall_time_s"])
