"""SmolLM2-135M-Instruct on the CPU: generation tokens/s and seconds per training step.

Needs the converted model (`rlhf models fetch smollm2`). Generation: rlhf.generation on the
world's test prompts, EOS suppressed so every row decodes --new-tokens. SFT and RM steps: one
forward + backward + AdamW step at the smollm2 recipe's sizes (SFT: sft.batch_size
demonstrations of up to sft.max_length tokens; RM: rm.batch_size comparisons of K = 4
responses through the scalar-head model). PPO: time/rollout + time/update of a finished PPO run
(--ppo-run), as logged by rlhf.ppo. Medians over --repeats.

    PYTHONPATH=. .venv/bin/python benchmarks/smollm2.py [--threads 2] [--ppo-run DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoModelForSequenceClassification

from rlhf import config as lab_config
from rlhf.generation import generate
from rlhf.models import SMOLLM2, cached_model_dir, load_policy
from rlhf.reward import encode_pairs
from rlhf.runs import Run
from rlhf.world import build_world


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workspace", default=None)
    ap.add_argument("--ppo-run", default=None, help="a finished PPO run of the smollm2 recipe")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    extra = {"workspace": args.workspace} if args.workspace else {}
    cfg = lab_config.load("smollm2", **extra)
    world = build_world(cfg, progress=False)
    model_dir = cached_model_dir(SMOLLM2)
    model, tok = load_policy(model_dir)

    prompts = [p.text for p in world.prompts("test")][: args.batch]
    gen_s = timed(
        lambda: generate(
            model, tok, prompts, args.new_tokens, min_new_tokens=args.new_tokens, batch_size=64
        ),
        args.repeats,
    )
    print(
        f"generation: {args.batch * args.new_tokens / gen_s:,.1f} new tokens/s "
        f"(batch {args.batch}, {args.new_tokens} new tokens, {gen_s:.2f} s)"
    )

    # SFT step: demonstrations, loss on every token (the response-only mask costs nothing).
    demos = world.demonstrations("train")[: cfg.sft.batch_size]
    tok.padding_side = "right"
    enc = tok(
        [d.prompt + " " + d.response for d in demos],
        padding=True,
        truncation=True,
        max_length=cfg.sft.max_length,
        return_tensors="pt",
    )
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft.lr)

    def sft_step() -> None:
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sft_s = timed(sft_step, args.repeats)
    print(f"SFT step: {sft_s:.2f} s ({cfg.sft.batch_size} x {enc['input_ids'].shape[1]} tokens)")

    rm = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=1, local_files_only=True
    )
    rm.config.pad_token_id = tok.pad_token_id
    n = cfg.rm.batch_size * 4  # K = 4 responses per comparison, each forwarded once
    batch = encode_pairs(
        tok,
        [d.prompt for d in world.demonstrations("train")[:n]],
        [d.response for d in world.demonstrations("train")[:n]],
        cfg.rm.max_length,
    )
    rm_opt = torch.optim.AdamW(rm.parameters(), lr=cfg.rm.lr)

    def rm_step() -> None:
        r = rm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        (-torch.nn.functional.logsigmoid(r[1:] - r[:-1]).mean()).backward()
        rm_opt.step()
        rm_opt.zero_grad(set_to_none=True)

    rm_s = timed(rm_step, args.repeats)
    print(
        f"RM step: {rm_s:.2f} s ({cfg.rm.batch_size} comparisons x K=4, "
        f"{tuple(batch['input_ids'].shape)} tokens)"
    )

    if args.ppo_run:
        rows = [m for m in Run.open(args.ppo_run).metrics() if "time/update" in m]
        steps = [m["time/rollout"] + m["time/update"] for m in rows]
        print(
            f"PPO step: {statistics.median(steps):.1f} s median over {len(steps)} steps "
            f"(rollout {statistics.median(m['time/rollout'] for m in rows):.1f} s, update "
            f"{statistics.median(m['time/update'] for m in rows):.1f} s)"
        )


if __name__ == "__main__":
    main()
