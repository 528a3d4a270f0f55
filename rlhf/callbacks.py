"""transformers Trainer callbacks shared by the stages built on a Trainer (SFT, the RM).

LogToRun     the Trainer's logs -> the run's metrics.jsonl, under the lab's metric names
ProgressBar  the Trainer's tqdm bar, with the latest loss as its postfix instead of a
             printed dict per log step (which buried the stage's own summary)
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from rlhf.errors import RunError
from rlhf.runs import Run


class LogToRun(TrainerCallback):
    """Copies the Trainer's logs into metrics.jsonl under the lab's names."""

    NAMES = {"loss": "train/loss", "eval_loss": "eval/loss", "learning_rate": "train/lr"}

    def __init__(self, run: Run):
        self.run = run

    def on_log(self, args, state, control, logs=None, **kwargs):
        row = {self.NAMES[k]: float(v) for k, v in (logs or {}).items() if k in self.NAMES}
        if row and state.is_world_process_zero:  # one process writes (accelerate launch)
            self.run.log(state.global_step, row)


class ProgressBar(ProgressCallback):
    """The Trainer's progress bar, showing the last training loss rather than printing logs."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        bar = self.training_bar
        if state.is_world_process_zero and bar is not None and "loss" in (logs or {}):
            bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)


def trainer_args(
    run: Run, seed: int, progress: bool, log_every: int, checkpoint_every: int, keep: int
) -> dict:
    """The keyword arguments every stage's TrainingArguments (or TRL config) shares: float32
    on the CPU (TRL 1.x configs default to bf16 and activation checkpointing), checkpoints in
    the run's checkpoint dir every `checkpoint_every` steps (the newest `keep` kept, with their
    optimizer state so a killed run resumes), metrics every `log_every` steps, seeded data
    order, no reporting and no worker processes. Each stage adds its own schedule and sizes."""
    import torch

    return dict(
        output_dir=str(run.checkpoint_dir),
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        logging_steps=log_every,
        save_strategy="steps",
        save_steps=checkpoint_every,
        save_total_limit=keep,
        save_only_model=False,
        seed=seed,
        data_seed=seed,
        report_to=[],
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )


def cosine_schedule(lr: float, epochs: float, max_steps: int, batch_size: int) -> dict:
    """The schedule and batch size SFT, the RM and DPO share: `epochs` passes (or `max_steps`
    optimizer steps if > 0), cosine decay from `lr` after a 5% warm-up."""
    return dict(
        learning_rate=lr,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps > 0 else -1,
        per_device_train_batch_size=batch_size,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
    )


def use_progress_bar(trainer) -> None:
    """Swap the Trainer's progress callback for `ProgressBar`; without a bar (disable_tqdm),
    drop the PrinterCallback that would print every log dict instead."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ProgressBar)
    trainer.pop_callback(PrinterCallback)


def last_checkpoint_step(ckpt_dir: Path) -> int:
    """The step of the newest `checkpoint-<step>` directory (0 if none)."""
    steps = [
        int(p.name.split("-")[1]) for p in ckpt_dir.glob("checkpoint-*") if p.name[11:].isdigit()
    ]
    return max(steps, default=0)


def check_resumable(ckpt: Path) -> None:
    """A RunError naming the checkpoint when its state or weights cannot be read (a kill
    mid-write on a filesystem without atomic renames, a file edited or truncated): the Trainer
    failed with a SafetensorError or JSONDecodeError traceback on every retry, as the run's
    command picks the same interrupted run each time. As PPO's and pretraining's own resume."""
    from safetensors import SafetensorError, safe_open

    try:
        json.loads((ckpt / "trainer_state.json").read_text())
        for weights in ckpt.glob("*.safetensors"):
            with safe_open(str(weights), "pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is no mapping)
                    f.get_slice(name)
    except (OSError, ValueError, SafetensorError) as e:
        raise RunError(
            f"{ckpt}: cannot resume from this checkpoint ({type(e).__name__}: {e}); "
            "delete it to restart the run from the one before (or from step 0)"
        ) from None


def train_resuming(trainer, run: Run) -> None:
    """Train, resuming from the newest checkpoint in the run's checkpoint/ if there is one.

    Metrics logged after that checkpoint (all of them, without one: a run killed before its
    first) are dropped first: the resumed steps log them again."""
    use_progress_bar(trainer)
    ckpt = run.checkpoint_dir
    has_ckpt = ckpt.exists() and any(ckpt.glob("checkpoint-*"))
    if has_ckpt:
        check_resumable(ckpt / f"checkpoint-{last_checkpoint_step(ckpt)}")
    if trainer.is_world_process_zero():
        run.truncate_metrics(last_checkpoint_step(ckpt))  # 0 without a checkpoint
    with _without_noise():
        trainer.train(resume_from_checkpoint=True if has_ckpt else None)


class _NoiseFilter(logging.Filter):
    """Drops two transformers warnings that tell the user nothing to act on: the tied LM head
    "missing" from a checkpoint (tied weights are saved once, as the embedding; loading the
    best checkpoint keeps the tie) and checkpoints saved within one second of each other
    ("mtime may not be reliable": they are then ordered by step, which is right)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        tied_head = "missing keys in the checkpoint" in msg and "'lm_head.weight']" in msg
        tied_head = tied_head and msg.count("'") == 2  # lm_head.weight is the only key missing
        return not (tied_head or "mtime may not be reliable" in msg)


# TRL 1.16 reads `model.is_gradient_checkpointing`, which transformers 5 deprecates with a
# FutureWarning, printed 14 times in `make demo` (2 in DPO, 12 in GRPO: once per generation).
TRL_DEPRECATION = r"`is_gradient_checkpointing` is deprecated"


@contextlib.contextmanager
def _without_noise() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("transformers.trainer", "transformers.trainer_utils")]
    noise = _NoiseFilter()
    for lg in loggers:
        lg.addFilter(noise)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=TRL_DEPRECATION, category=FutureWarning)
            yield
    finally:
        for lg in loggers:
            lg.removeFilter(noise)
