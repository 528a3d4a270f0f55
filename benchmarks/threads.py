"""Pretraining speed at 1 vs 2 torch threads, so a recipe's `threads` is measured, not guessed.

The model has the recipe's size (default: tiny, i.e. rlhf/config.py defaults) and trains on
random tokens: speed does not depend on the data. Thread counts are interleaved (1, 2, 1, 2, ...)
so a change in machine load hits both alike; the median of the rounds is reported.

    .venv/bin/python benchmarks/threads.py [--recipe tiny] [--steps 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rlhf import config as lab_config
from rlhf.models import build_base_model, count_parameters
from rlhf.pretrain import make_optimizer


class _VocabOnly:
    """Just what build_base_model reads from a tokenizer (no corpus needed for a speed test)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.pad_token_id, self.eos_token_id, self.bos_token_id = 0, 1, 1

    def __len__(self) -> int:
        return self.vocab_size


def tokens_per_sec(model, optimizer, x: torch.Tensor, steps: int) -> float:
    """Full optimizer steps (forward, backward, clip, AdamW) on the (B, T) batch x."""
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return steps * x.numel() / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="tiny")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per thread count")
    args = ap.parse_args()

    cfg = lab_config.load(args.recipe)
    p = cfg.pretrain
    model = build_base_model(p, _VocabOnly(cfg.world.vocab_size), seed=0).train()
    optimizer = make_optimizer(model, p)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2, cfg.world.vocab_size, (p.batch_size, p.block_size), generator=g)  # (B, T)
    print(
        f"recipe {args.recipe}: {count_parameters(model) / 1e6:.2f}M params, "
        f"batch {p.batch_size} x block {p.block_size} = {x.numel()} tokens/step, "
        f"{args.steps} steps x {args.rounds} rounds per thread count"
    )
    torch.set_num_threads(1)
    tokens_per_sec(model, optimizer, x, 1)  # warm-up (allocator, kernels)
    results: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results[threads].append(tokens_per_sec(model, optimizer, x, args.steps))
    print(f"{'threads':>8} {'tokens/sec (median)':>20} {'min':>8} {'max':>8}")
    med = {}
    for threads, vals in results.items():
        med[threads] = statistics.median(vals)
        print(f"{threads:>8} {med[threads]:>20.0f} {min(vals):>8.0f} {max(vals):>8.0f}")
    print(f"ratio 2 threads / 1 thread: {med[2] / med[1]:.2f}")


if __name__ == "__main__":
    main()
