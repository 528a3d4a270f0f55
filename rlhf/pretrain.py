"""Stage 0: pretrain a tiny Llama-style LM on the Tiny World corpus (the paper's GPT-3, in small).

One loop, read top to bottom (after nanoGPT's train.py):

    1. world -> tokenizer -> token stream (EOS after each document) -> (N, T) blocks
    2. model (rlhf.models.build_base_model) + AdamW (decay on matrices only)
    3. resume from run/checkpoint/ if it exists (same step count, same data order, same loss)
    4. steps: seeded per-epoch permutation of blocks, warm-up + cosine LR, grad clip;
       log train/*, eval/* to metrics.jsonl; checkpoint every `checkpoint_every` steps
    5. save the model + tokenizer to run/model/, then the behaviour report to eval.json

`train(cfg)` returns the Run; `rlhf pretrain --recipe R` calls it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model
from tqdm.auto import tqdm

from rlhf.config import LabConfig, PretrainConfig
from rlhf.errors import RunError
from rlhf.evaluate import behaviour_report, blocks, fact_cloze_accuracy, heldout_loss
from rlhf.files import atomic_dir
from rlhf.models import build_base_model, check_shape, count_parameters, save_model
from rlhf.runs import Run, run_stage
from rlhf.tokenizer import encode_documents


def train(cfg: LabConfig, run_dir: str | os.PathLike | None = None, progress: bool = True) -> Run:
    """Pretrain (or resume, or return if already done) the run in `run_dir` (new dir if None)."""
    check_shape(cfg.pretrain)  # a bad shape leaves no run directory behind
    return run_stage(cfg, "pretrain", run_dir, lambda run: _train(cfg, run, progress))


def lr_at(step: int, pcfg: PretrainConfig, total_steps: int) -> float:
    """Linear warm-up to lr, then cosine decay to min_lr at total_steps (nanoGPT's get_lr)."""
    if step < pcfg.warmup_steps:
        return pcfg.lr * (step + 1) / pcfg.warmup_steps
    span = max(1, total_steps - pcfg.warmup_steps)
    progress = min(1.0, (step - pcfg.warmup_steps) / span)
    return pcfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (pcfg.lr - pcfg.min_lr)


def make_optimizer(model: torch.nn.Module, pcfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights (linear layers and the tied embedding) and none
    on 1-D parameters (RMSNorm gains), as nanoGPT's configure_optimizers; betas (0.9, 0.95)
    as GPT-3 (Brown et al. 2020, B.1) and nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": pcfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=pcfg.lr, betas=(0.9, 0.95), eps=1e-8)


def epoch_order(n_blocks: int, seed: int, epoch: int) -> torch.Tensor:
    """(n_blocks,) permutation for one epoch, a pure function of (seed, epoch): a resumed run
    sees the same batches as an uninterrupted one."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n_blocks, generator=g)


def pick_eval_prompts(world: Any, n: int) -> list[Any]:
    """n test prompts taken round-robin over the families (sorted), so each family is present."""
    by_family: dict[str, list[Any]] = {}
    for p in world.prompts("test"):
        by_family.setdefault(p.family, []).append(p)
    queues = [by_family[f] for f in sorted(by_family)]
    picked: list[Any] = []
    for i in range(max((len(q) for q in queues), default=0)):
        picked += [q[i] for q in queues if i < len(q)]
    return picked[:n]


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """model.safetensors + optimizer.pt + trainer_state.pt (+ a readable state.json), written
    into a temp dir and swapped in, so a kill leaves the previous checkpoint intact."""
    with atomic_dir(ckpt_dir) as tmp:
        save_safetensors_model(model, str(tmp / "model.safetensors"))  # handles the tied weight
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"rng": torch.get_rng_state(), **state}, tmp / "trainer_state.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def load_checkpoint(
    ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model, optimizer and torch RNG in place; returns the trainer state (step, ...)."""
    try:
        load_safetensors_model(model, str(ckpt_dir / "model.safetensors"))
        # weights_only: tensors and plain containers only, never arbitrary pickled objects.
        optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True))
        state = torch.load(ckpt_dir / "trainer_state.pt", weights_only=True)
    except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as e:
        raise RunError(
            f"{ckpt_dir}: cannot resume from this checkpoint ({type(e).__name__}: {e}); "
            "delete it to restart the run from step 0"
        ) from None
    torch.set_rng_state(state.pop("rng"))
    return state


# ----------------------------------------------------------------------------- the loop


def _train(cfg: LabConfig, run: Run, progress: bool) -> None:
    from rlhf.world import build_world  # the world package imports heavy generators

    pcfg = cfg.pretrain
    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    # 1. Data: the corpus as one token stream, cut into (N, T) blocks; labels = inputs
    # (transformers shifts them inside the loss).
    world = build_world(cfg, progress=progress)
    tokenizer = world.tokenizer()
    train_ids = encode_documents(tokenizer, world.train_documents())
    train_blocks = blocks(train_ids, pcfg.block_size, keep_remainder=False)
    heldout_docs = world.heldout_documents()
    n_blocks = len(train_blocks)
    steps_per_epoch = n_blocks // pcfg.batch_size  # the last partial batch of an epoch is dropped
    if steps_per_epoch < 1:
        raise RunError(
            f"pretrain: the corpus gives {n_blocks} blocks of {pcfg.block_size} tokens, fewer "
            f"than one batch (pretrain.batch_size={pcfg.batch_size}); lower batch_size/block_size"
        )
    data = torch.stack(train_blocks)  # (N, T)
    total_steps = pcfg.max_steps or max(1, math.ceil(pcfg.epochs * steps_per_epoch))
    tokens_per_step = pcfg.batch_size * pcfg.block_size

    # 2. Model and optimizer.
    model = build_base_model(pcfg, tokenizer, seed=cfg.seed)
    optimizer = make_optimizer(model, pcfg)

    # 3. Resume: the checkpoint holds everything the next step depends on.
    step, elapsed_before = 0, 0.0
    if (run.checkpoint_dir / "trainer_state.pt").exists():
        state = load_checkpoint(run.checkpoint_dir, model, optimizer)
        step, elapsed_before = int(state["step"]), float(state.get("elapsed_s", 0.0))
    run.truncate_metrics(step)  # what was logged after the checkpoint (all, without one)

    # 4. Train.
    model.train()
    bar = tqdm(
        total=total_steps, initial=step, desc="pretrain", disable=not progress, dynamic_ncols=True
    )
    order, order_epoch = None, -1
    busy_s, tokens_since_log = 0.0, 0  # time spent in training steps only (not eval/checkpoint)
    while step < total_steps:
        t_step = time.perf_counter()
        epoch, i = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(n_blocks, cfg.seed, epoch), epoch
        x = data[order[i * pcfg.batch_size : (i + 1) * pcfg.batch_size]]  # (B, T)

        lr = lr_at(step, pcfg, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = model(input_ids=x, labels=x).loss  # mean next-token NLL over B * (T-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if pcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), pcfg.grad_clip)
        optimizer.step()
        step += 1
        busy_s += time.perf_counter() - t_step
        tokens_since_log += tokens_per_step
        bar.update(1)

        metrics: dict[str, float] = {}
        if step % pcfg.log_every == 0 or step == total_steps:
            metrics = {
                "train/loss": loss.item(),
                "train/lr": lr,
                "train/tokens_per_sec": tokens_since_log / max(busy_s, 1e-9),
                "train/epoch": step / steps_per_epoch,
            }
            busy_s, tokens_since_log = 0.0, 0
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
        if step % pcfg.eval_every == 0 or step == total_steps:
            eval_loss = heldout_loss(model, tokenizer, heldout_docs, pcfg.block_size)
            metrics |= {"eval/loss": eval_loss, "eval/perplexity": math.exp(eval_loss)}
        if metrics:
            run.log(step, metrics)

        if step % pcfg.checkpoint_every == 0 and step < total_steps:
            elapsed = elapsed_before + time.perf_counter() - t_start
            state = {"step": step, "elapsed_s": elapsed}
            save_checkpoint(run.checkpoint_dir, model, optimizer, state)
    bar.close()

    # 5. Final model, then what it learned (eval.json) and how long it took (status.json).
    model.eval()
    save_model(model, tokenizer, run.model_dir)
    eval_loss = heldout_loss(model, tokenizer, heldout_docs, pcfg.block_size)
    report: dict[str, Any] = {
        "params": count_parameters(model),
        "corpus_tokens": len(train_ids),
        "train_tokens": total_steps * tokens_per_step,
        "steps": total_steps,
        "heldout_loss": eval_loss,
        "heldout_perplexity": math.exp(eval_loss),
        "fact_cloze_accuracy": fact_cloze_accuracy(model, tokenizer, world.cloze_items()),
    }
    prompts = pick_eval_prompts(world, pcfg.eval_prompts)
    report["behaviour"] = behaviour_report(model, tokenizer, world, prompts, pcfg.max_new_tokens)
    wall = elapsed_before + time.perf_counter() - t_start
    report["wall_time_s"] = wall
    run.write_eval(report)
    run.set_status("done", wall_time_s=wall)


def summary(report: dict[str, Any]) -> str:
    """The stage-0 figures of eval.json as a few lines (printed by `rlhf pretrain`), each with
    the target the foundation issue set for the tiny recipe."""
    b = report["behaviour"]
    popular = b["misconception_popular_false"]
    rows = [
        ("wall time", f"{report['wall_time_s']:.0f} s", "<= 300 s (tiny)"),
        ("parameters", f"{report['params']:,}", ""),
        ("train tokens", f"{report['train_tokens']:,}", ""),
        ("held-out perplexity", f"{report['heldout_perplexity']:.3f}", ""),
        ("fact-cloze accuracy", f"{report['fact_cloze_accuracy']:.1%}", ">= 80%"),
        ("popular misconception", "n/a" if popular is None else f"{popular:.1%}", ">= 60%"),
        ("fails to follow", f"{b['fails_to_follow']:.1%} of {b['n_prompts']}", ">= 50%"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k.ljust(width)}  {v:>18}  {t}".rstrip() for k, v, t in rows)
