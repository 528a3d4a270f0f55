"""Stage 1: supervised fine-tuning of the base model on labeler demonstrations (paper 3.5).

    1. the base model: `sft.base_model` (a real model: smollm2, a hub id, a directory), else
       `sft.base_run`, else the newest finished pretrain run of this world
    2. data: world demonstrations as TRL prompt/completion rows (train; val for the loss), or
       sft.data's (rlhf.data; its last 10% for the loss)
    3. TRL SFTTrainer, loss on the completion (response) tokens only; TRL appends EOS, so the
       policy learns to stop. CPU settings forced (TRL 1.x defaults to bf16 + checkpointing)
    4. resume from run/checkpoint/ (the Trainer's own checkpoint) if it exists
    5. the final model: the checkpoint with the lowest validation loss (paper C.1 selects by
       RM score; no RM exists yet at this stage), saved to run/model/. With sft.lora_r > 0
       only LoRA adapters train (TRL's peft_config; checkpoints hold the adapters alone) and
       are merged into the weights here, so run/model/ is a plain model like any other
    6. eval.json: base vs SFT on the test prompts, judged by the gold labeler

Under `accelerate launch` every process trains (the Trainer's DDP); the main process alone
writes the run's files and evaluates (rlhf.distributed).

`train(cfg)` returns the Run; `rlhf sft --recipe R` calls it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from datasets import Dataset

from rlhf import distributed as dist
from rlhf.callbacks import LogToRun, cosine_schedule, train_resuming, trainer_args
from rlhf.config import LabConfig, check_length
from rlhf.data import data_changed, fingerprint, load_demonstrations
from rlhf.errors import DataError, RunError
from rlhf.evaluate import behaviour_report
from rlhf.models import (
    check_lora_targets,
    count_parameters,
    ensure_pad_token,
    load_policy,
    lora_config,
    save_model,
)
from rlhf.pretrain import pick_eval_prompts
from rlhf.runs import Run, find_done, read_eval, recipe_changes, run_stage
from rlhf.world import build_world


def train(cfg: LabConfig, run_dir: str | os.PathLike | None = None, progress: bool = True) -> Run:
    """Fine-tune (or resume, or return if already done) the run in `run_dir` (new if None)."""
    check_length(cfg, "sft")  # checks first: a bad config leaves no run directory
    data = None
    # The model to start from, before any run exists: a hub model fetched (or failing offline),
    # sft.base_run checked, or the world's pretrain run found (none: the command that makes it).
    base_dir = base_model_dir(cfg)
    if cfg.sft.data:  # read first: bad data leaves no run directory behind
        digest = fingerprint(cfg.sft.data)
        data = (*file_datasets(cfg.sft.data), digest)
        check_prompt_lengths(cfg.sft.data, data[0], base_dir, cfg.sft.max_length)
    return run_stage(cfg, "sft", run_dir, lambda run: _train(cfg, run, progress, base_dir, data))


def stale(run: Run, cfg: LabConfig) -> str | None:
    """Why a finished SFT run of this config should not be reused (sft.data changed), else None."""
    return data_changed(read_eval(run), cfg.sft.data) if cfg.sft.data else None


def base_model_dir(cfg: LabConfig) -> Path:
    """The pretrained model SFT starts from (a clear error if there is none)."""
    if cfg.sft.base_model:
        from rlhf.models import resolve_base_model

        return resolve_base_model(cfg.sft.base_model)
    if cfg.sft.base_run:
        return Run.open(cfg.sft.base_run).model_dir
    base = find_done(cfg, "pretrain", ("world", "pretrain"))
    if base is None:
        raise RunError(
            f"no finished pretrain run for this world in {cfg.workspace_dir / 'runs'}; "
            f"run: rlhf pretrain --recipe {cfg.recipe}"
            f"{recipe_changes(cfg, ('world', 'pretrain'))} (or set sft.base_run)"
        )
    return base.model_dir


def load_base(base_dir: Path) -> tuple[Any, Any]:
    """(model in train mode, tokenizer padding right) to fine-tune; a tokenizer without a pad
    token (GPT-2's) gets one (rlhf.models.ensure_pad_token)."""
    model, tokenizer = load_policy(base_dir, padding_side="right")
    ensure_pad_token(tokenizer, model)
    return model.train(), tokenizer


def demo_dataset(world: Any, split: str) -> Dataset:
    """TRL prompt/completion rows; the completion starts with the space the prompt's "A:" wants."""
    rows = [
        {"prompt": d.prompt, "completion": " " + d.response} for d in world.demonstrations(split)
    ]
    return Dataset.from_list(rows)


def file_datasets(path: str) -> tuple[Dataset, Dataset]:
    """(train, val) prompt/completion rows of a demonstrations file: val is its last 10%."""
    pairs = load_demonstrations(path)
    if len(pairs) < 2:
        raise DataError(f"{path}: only 1 demonstration; SFT needs 2 or more (train, validation)")
    rows = [{"prompt": p, "completion": c} for p, c in pairs]
    n_val = max(1, len(rows) // 10)
    return Dataset.from_list(rows[:-n_val]), Dataset.from_list(rows[-n_val:])


def check_prompt_lengths(path: str, train: Dataset, base_dir: Path, max_length: int) -> None:
    """TRL drops a demonstration whose prompt fills sft.max_length (no completion token is
    left to train on): say how many, and stop when none would remain (that was a ValueError
    traceback from the data loader, num_samples=0, after the run had started)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in train["prompt"]]
    long = sum(n >= max_length for n in lengths)
    if long == len(lengths):
        raise DataError(
            f"{path}: every training prompt is {max_length} tokens or longer (sft.max_length): "
            "no completion token is left to train on; raise sft.max_length or shorten them"
        )
    if long:
        print(
            f"note: {long} of {len(lengths)} training demonstrations of {path} have prompts of "
            f"sft.max_length={max_length} tokens or more; they are dropped",
            file=sys.stderr,
        )


def _train(
    cfg: LabConfig,
    run: Run,
    progress: bool,
    base_dir: Path,
    data: tuple[Dataset, Dataset, str] | None = None,
) -> None:
    """`base_dir`: base_model_dir's. `data`: sft.data's (train, val, sha256), else the world's
    demonstrations are used."""
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    t_start = time.perf_counter()
    s = cfg.sft
    with dist.main_first():  # built (or read) once, by the main process first
        world = build_world(cfg, progress=progress)
    model, tokenizer = load_base(base_dir)
    train_ds, val_ds = (
        data[:2] if data else (demo_dataset(world, "train"), demo_dataset(world, "val"))
    )

    args = TRLSFTConfig(
        **trainer_args(run, cfg.seed, progress, s.log_every, s.checkpoint_every, keep=2),
        **cosine_schedule(s.lr, s.epochs, s.max_steps, s.batch_size),
        per_device_eval_batch_size=s.batch_size,
        weight_decay=s.weight_decay,
        max_length=s.max_length,
        completion_only_loss=True,
        eval_strategy="steps",
        eval_steps=s.checkpoint_every,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        ddp_find_unused_parameters=False,  # every parameter is used (accelerate launch)
    )
    lora = None
    if s.lora_r:
        check_lora_targets(model, s.lora_targets, "sft.lora_targets")
        lora = lora_config(s.lora_r, s.lora_alpha, s.lora_dropout, s.lora_targets)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        callbacks=[LogToRun(run)],
        peft_config=lora,  # None: full fine-tuning
    )
    trainable = count_parameters(trainer.model)
    total = sum(p.numel() for p in trainer.model.parameters())
    train_resuming(trainer, run)
    val_loss = trainer.evaluate()["eval_loss"]
    sft_model = trainer.model.eval()
    if lora:  # PeftModel -> the plain model with W + B A * alpha / r in place of each W
        sft_model = sft_model.merge_and_unload().eval()
    digests = dist.param_digests(sft_model)  # one per process: equal after DDP
    if not dist.is_main():
        return
    save_model(sft_model, tokenizer, run.model_dir)

    # Base vs SFT on the same test prompts (greedy), judged by the gold labeler.
    base, _ = load_policy(base_dir)
    ensure_pad_token(tokenizer, base)  # the same vocabulary as the SFT model
    tokenizer.padding_side = "left"
    prompts = pick_eval_prompts(world, s.eval_prompts)
    report = {
        "base_run": "" if s.base_model else str(base_dir.parent),
        "base_model": str(base_dir) if s.base_model else "",
        "train_demonstrations": len(train_ds),
        "val_demonstrations": len(val_ds),
        "steps": trainer.state.global_step,
        "val_loss": val_loss,
        "trainable_params": trainable,
        "total_params": total,  # with lora_r > 0: the adapters' included (before the merge)
        "param_sha256_by_process": digests,
        "base": behaviour_report(base, tokenizer, world, prompts, s.max_new_tokens),
        "sft": behaviour_report(sft_model, tokenizer, world, prompts, s.max_new_tokens),
    }
    if data:
        report |= {"data": s.data, "data_sha256": data[2]}
    report["wall_time_s"] = time.perf_counter() - t_start
    run.write_eval(report)
    run.set_status("done", wall_time_s=report["wall_time_s"])


def summary(report: dict[str, Any]) -> str:
    """Base vs SFT figures of eval.json (printed by `rlhf sft`)."""
    b, s = report["base"], report["sft"]
    rows = [
        ("", "base", "SFT"),
        ("gold Likert mean", f"{b['likert_mean']:.2f}", f"{s['likert_mean']:.2f}"),
        ("fails to follow", f"{b['fails_to_follow']:.1%}", f"{s['fails_to_follow']:.1%}"),
        ("ends with EOS", f"{b['eos_rate']:.1%}", f"{s['eos_rate']:.1%}"),
        ("test prompts", str(b["n_prompts"]), str(s["n_prompts"])),
    ]
    rows.append(("wall time", "", f"{report['wall_time_s']:.0f} s"))
    return "\n".join(f"{a:<18}{b_:>10}{c:>10}" for a, b_, c in rows)
