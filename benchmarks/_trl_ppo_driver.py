"""TRL side of benchmarks/ppo_vs_trl.py: TRL 1.12's experimental PPOTrainer, timed per PPO step.

Runs in the benchmark's own venv (trl==1.12.0, the last release with PPOTrainer), not in the
lab's: it imports only torch, transformers, datasets and trl, never `rlhf`. Usage (the
benchmark writes the spec):

    <trl venv>/bin/python benchmarks/_trl_ppo_driver.py SPEC.json OUT.json

SPEC holds the model dirs, the prompt texts, the PPO settings, threads, seed and `gc_freeze`;
OUT gets one record per PPO step (the first `warmup` are the warm-up) in the format of
ppo_vs_trl.ours_worker, so the benchmark reads both sides alike. A step is timed from one
`on_step_end` to the next (the first from `on_train_begin`): TRL's second gc.collect() of a
step runs after its on_step_end, so each timed interval after the first holds exactly two.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from importlib import metadata


def main(spec_path: str, out_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    import torch

    torch.set_num_threads(spec["threads"])
    t_load = time.perf_counter()

    import transformers
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        PrinterCallback,
        ProgressCallback,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as trl_ppo

    transformers.logging.set_verbosity_error()
    p = spec["ppo"]
    B, mb = p["batch_size"], p["mini_batch_size"]
    f32 = {"local_files_only": True, "dtype": torch.float32}
    tokenizer = AutoTokenizer.from_pretrained(spec["policy_dir"], local_files_only=True)
    tokenizer.padding_side = "left"  # TRL's rollout wants left-padded queries (as ours)
    policy = AutoModelForCausalLM.from_pretrained(spec["policy_dir"], **f32)
    ref = AutoModelForCausalLM.from_pretrained(spec["policy_dir"], **f32)
    reward = AutoModelForSequenceClassification.from_pretrained(spec["rm_dir"], num_labels=1, **f32)
    value = AutoModelForSequenceClassification.from_pretrained(spec["rm_dir"], num_labels=1, **f32)
    # The same prompts, as token ids without special tokens (rlhf.generation.generate's encoding).
    ids = tokenizer(spec["prompts"], add_special_tokens=False)["input_ids"]
    dataset = Dataset.from_dict({"input_ids": ids})

    # Our optimizer (rlhf.ppo._train's AdamW: two groups, betas, eps, fused) at a constant lr,
    # passed in, so TRL's default (one lr for both models, linear decay) is not a difference.
    optimizer = torch.optim.AdamW(
        [
            {"params": list(policy.parameters()), "lr": p["lr"]},
            {"params": list(value.parameters()), "lr": p["vf_lr"]},
        ],
        betas=(0.9, 0.95),
        eps=1e-5,
        weight_decay=0.0,
        fused=True,  # as rlhf.ppo.make_optimizer: the optimizer is not what is compared
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    counts = {"optimizer_steps": 0, "gc_collect": 0, "decode_steps": [], "generate_s": []}
    optimizer.register_step_post_hook(
        lambda *_: counts.__setitem__("optimizer_steps", 1 + counts["optimizer_steps"])
    )

    # Count TRL's gc.collect() calls (it calls `gc.collect()` through the module, so patching the
    # attribute sees them), and the time and decode steps (width of the responses) of each
    # rollout's sampling.
    real_collect = gc.collect

    def counting_collect(*a, **kw):
        counts["gc_collect"] += 1
        return real_collect(*a, **kw)

    gc.collect = counting_collect
    real_batch_generation = trl_ppo.batch_generation

    def recording_batch_generation(model, queries, *a, **kw):
        t0 = time.perf_counter()
        query_responses, logits = real_batch_generation(model, queries, *a, **kw)
        counts["generate_s"].append(time.perf_counter() - t0)
        counts["decode_steps"].append(query_responses.shape[1] - queries.shape[1])
        return query_responses, logits

    trl_ppo.batch_generation = recording_batch_generation

    class StepClock(TrainerCallback):
        """Wall time between consecutive on_step_end calls, with what happened in between."""

        def __init__(self):
            self.steps, self.logs, self.last = [], [], None
            self.mark = (0, 0)

        def on_train_begin(self, args, state, control, **kw):
            self.last = time.perf_counter()
            self.mark = (counts["optimizer_steps"], counts["gc_collect"])

        def on_log(self, args, state, control, logs=None, **kw):
            self.logs.append(dict(logs or {}))

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            log = self.logs[-1] if self.logs else {}
            self.steps.append(
                {
                    "s": now - self.last,
                    "decode_steps": counts["decode_steps"][-1],
                    "generate_s": counts["generate_s"][-1],
                    "eos_rate": log.get("val/num_eos_tokens", float("nan")) / B,
                    "optimizer_steps": counts["optimizer_steps"] - self.mark[0],
                    "gc_collect": counts["gc_collect"] - self.mark[1],
                    "score": log.get("objective/scores", float("nan")),
                    "kl": log.get("objective/kl", float("nan")),
                }
            )
            self.last = now
            self.mark = (counts["optimizer_steps"], counts["gc_collect"])

    clock = StepClock()
    n_steps = spec["warmup"] + spec["steps"]
    with tempfile.TemporaryDirectory() as out_dir:
        args = PPOConfig(
            output_dir=out_dir,
            use_cpu=True,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            # The rollout is per_device_train_batch_size * gradient_accumulation_steps episodes,
            # split into num_mini_batches minibatches, each one optimizer step when accumulation
            # is 1. (16 x 1 with 4 minibatches would be 16 episodes per rollout in 4s; 16 x 4
            # would step the optimizer once per 4 minibatches.)
            per_device_train_batch_size=B,
            gradient_accumulation_steps=1,
            num_mini_batches=B // mb,
            num_ppo_epochs=p["ppo_epochs"],
            local_rollout_forward_batch_size=B,  # the whole rollout in one batch, as ours
            total_episodes=n_steps * B,
            response_length=p["max_new_tokens"],
            temperature=p["temperature"],
            kl_coef=p["kl_coef"],
            kl_estimator="k1",  # log pi - log pi_ref, as ours
            cliprange=p["cliprange"],
            cliprange_value=p["cliprange_value"],
            vf_coef=p["vf_coef"],
            gamma=p["gamma"],
            lam=p["lam"],
            whiten_rewards=p["whiten_rewards"],
            stop_token="eos",
            missing_eos_penalty=p["missing_eos_penalty"],
            learning_rate=p["lr"],
            num_sample_generations=0,  # no evaluation generations
            eval_strategy="no",
            save_strategy="no",
            logging_steps=max(1, n_steps),
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=spec["seed"],
        )
        trainer = PPOTrainer(
            args=args,
            processing_class=tokenizer,
            model=policy,
            ref_model=ref,
            reward_model=reward,
            train_dataset=dataset,
            value_model=value,
            optimizers=(optimizer, scheduler),
            callbacks=[clock],
        )
        # PPOTrainer logs its metrics every step whatever logging_steps says; no printing of
        # them (ours prints nothing either).
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        load_s = time.perf_counter() - t_load
        if spec["gc_freeze"]:
            gc.freeze()  # every object alive now is never scanned again by gc.collect()
        trainer.train()

    names = ("trl", "torch", "transformers", "accelerate", "datasets")
    versions = {k: metadata.version(k) for k in names}
    out = {
        "variant": "trl-gc-frozen" if spec["gc_freeze"] else "trl",
        "load_s": load_s,
        "warmup": spec["warmup"],
        "steps": clock.steps,
        "threads": torch.get_num_threads(),
        "gc_freeze_count": gc.get_freeze_count(),
        "versions": versions,
        "python": sys.version.split()[0],
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
