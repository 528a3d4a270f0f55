"""Reward-model training speed: K-wise batching (paper 3.5) vs rankings expanded into pairs.

The same rankings and the same initial model (the SFT model with a seeded scalar head, one
copy per method) trained two ways, one epoch each:

    K-wise  rlhf.reward.KwiseTrainer + KwiseCollator, as `rlhf rm` trains: a batch element is
            one ranking, its K responses are forwarded once (B rankings per step)
    pairs   every ranking expanded into its C(K,2) (chosen, rejected) pairs (ties give none),
            shuffled, trained with TRL's RewardTrainer: each response is forwarded K - 1 times

Same number of comparisons seen: both take the same optimizer steps over the same rankings.
K-wise takes n = ceil(R / B) steps (R rankings, B = rm.batch_size); each pairs step holds about
P / n shuffled pairs (P pairs), which is B * C(K,2) when no ranking has a tie. So both follow the
same lr schedule (AdamW, rm.lr, cosine, 5% warm-up), and without ties a pairs step's loss (mean
over its pairs) has the scale of the K-wise loss (mean over rankings of the mean over their
C(K,2) pairs): one lr suits both. A pairs step is split by gradient accumulation into forwards
of at most B * K sequences, the size of a K-wise forward, so the methods differ in how many
forwards they make, not in how big each is. One forward of B * C(K,2) pairs (1,152 sequences at
K = 9, B = 16) would need ~8 GB on the tiny model (estimated), and CPU time per sequence grows
with the forward size (micro model: 1.9 ms at 144 sequences, 2.4 ms at 1,152), which would
flatter K-wise. `--pairs-per-forward 0`: no accumulation.

Ties give no pair, so with the world's labelers (who tie same-kind answers of equal quality:
at K = 9 about 15 of the 36 pairs of a ranking remain) the pairs baseline forwards far fewer than
K - 1 copies of each response. `--break-ties` has the labelers rank every response strictly, so
each ranking holds all C(K,2) pairs: the setting of the K - 1 bound (3x at K = 4, 8x at K = 9).

Both get identical token ids: prompt + " " + response + EOS, cut from the left at rm.max_length,
made by rlhf.reward.encode_pairs (the pairs pre-tokenized into TRL's chosen_ids/rejected_ids, so
TRL neither re-tokenizes, appends EOS, nor drops over-long pairs). Only trainer.train() is timed;
that includes KwiseCollator's tokenizing, which the pre-tokenized pairs skip, and K-wise runs
first, so a one-time warm-up lands on its side. Sequences and tokens forwarded are counted by a
hook on the model. Held-out accuracy is rlhf.reward.accuracy on val prompts ranked by training
labelers, the same call for both. Sampled comparisons are cached in <workspace>/cache/ (sampling
is not timed).

    .venv/bin/python benchmarks/rm_kwise_vs_pairs.py --recipe tiny [--ks 4 9] [--out r.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import math
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, TrainingArguments

from rlhf import config as lab_config
from rlhf import reward
from rlhf.compare import sample_responses
from rlhf.errors import RunError
from rlhf.models import load_policy, quiet_progress
from rlhf.store import Comparison
from rlhf.world import build_world

CACHE_VERSION = 1


# ----------------------------------------------------------------------------- data


def comparisons(cfg, world, sft_dir: Path, k: int, split: str, n: int, args) -> list[Comparison]:
    """Rankings of exactly k distinct SFT samples for up to n prompts of `split`, each by one
    training labeler; cached in <workspace>/cache/bench_rm_K{k}_{split}.json."""
    c = cfg.compare
    samples = k + (k if args.extra_samples is None else args.extra_samples)
    key = {"version": CACHE_VERSION, "sft_model": str(sft_dir), "seed": args.seed, "k": k}
    key |= {"split": split, "prompts": n, "samples": samples, "temperature": c.temperature}
    key |= {"top_p": c.top_p, "max_new_tokens": c.max_new_tokens, "break_ties": args.break_ties}
    strict = "_strict" if args.break_ties else ""
    path = cfg.workspace_dir / "cache" / f"bench_rm_K{k}_{split}{strict}.json"
    if path.exists() and (cached := json.loads(path.read_text()))["key"] == key:
        print(f"K={k} {split}: {len(cached['rows'])} rankings from {path}")
        return [Comparison(**row) for row in cached["rows"]]

    pool = world.prompts(split)
    prompts = random.Random(args.seed).sample(pool, min(n, len(pool)))  # same prompts for every K
    model, tokenizer = load_policy(sft_dir)
    seed = args.seed + 100 * k + (50 if split == "val" else 0)
    groups = sample_responses(model, tokenizer, prompts, [samples] * len(prompts), c, seed, True)
    rng = random.Random(f"{args.seed}-{k}-{split}")
    rows = []
    for p, distinct in zip(prompts, groups, strict=True):
        if len(distinct) < k:
            continue  # fewer than k distinct samples: the prompt is dropped
        lab = rng.choice(world.labelers)
        if args.break_ties:  # a negative margin: every response gets its own rank
            lab = dataclasses.replace(lab, tie_margin=-1.0)
        ranking = lab.rank(p, distinct[:k], world.gold)
        rows.append(Comparison(p.text, distinct[:k], ranking, lab.id, prompt_id=p.id))
    print(f"K={k} {split}: {len(rows)} of {len(prompts)} prompts had {k} distinct samples")
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ("prompt", "responses", "ranking", "labeler", "prompt_id")
    data = [{f: getattr(r, f) for f in fields} for r in rows]
    path.write_text(json.dumps({"key": key, "rows": data}) + "\n")
    return rows


def pair_dataset(rows: list[Comparison], tokenizer, max_length: int, seed: int) -> Dataset:
    """Every ranked pair as TRL's pre-tokenized preference row (chosen_ids, rejected_ids),
    shuffled; the ids are encode_pairs' rows with the padding stripped."""
    flat = reward.encode_pairs(
        tokenizer,
        [c.prompt for c in rows for _ in c.responses],
        [r for c in rows for r in c.responses],
        max_length,
    )
    ids = [
        x[: int(m.sum())].tolist()
        for x, m in zip(flat["input_ids"], flat["attention_mask"], strict=True)
    ]
    pairs, i = [], 0
    for c in rows:
        by_text = dict(zip(c.responses, ids[i : i + len(c.responses)], strict=True))
        i += len(c.responses)
        pairs += [(by_text[ch], by_text[rj]) for ch, rj in c.pairs()]
    random.Random(seed).shuffle(pairs)
    return Dataset.from_dict(
        {"chosen_ids": [a for a, _ in pairs], "rejected_ids": [b for _, b in pairs]}
    )


# ----------------------------------------------------------------------------- training


def timed_train(trainer, model) -> dict:
    """trainer.train() under a wall clock, counting the sequences and tokens the model sees."""
    seen = {"sequences": 0, "tokens": 0}

    def count(module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]  # (N, T)
        seen["sequences"] += ids.shape[0]
        seen["tokens"] += ids.numel()

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    hook.remove()
    return {"wall_s": wall, "steps": out.global_step, "train_loss": out.training_loss, **seen}


def heldout(model, tokenizer, max_length: int, val: list[Comparison]) -> dict:
    rm = reward.RewardModel(model.eval(), tokenizer, 0.0, max_length)
    per_prompt = [reward.accuracy(rm, [c]) for c in val]  # for the paired standard error
    n = sum(k for _, k in per_prompt)
    acc = sum(a * k for a, k in per_prompt if k) / n if n else float("nan")  # pooled over pairs
    return {"heldout_acc": acc, "heldout_pairs": n, "per_prompt": per_prompt}


def pair_batching(n_pairs: int, steps: int, most: int) -> tuple[int, int]:
    """(pairs per forward, forwards per step) for `steps` optimizer steps per epoch: the Trainer
    takes ceil(ceil(n_pairs / micro) / accum). At most `most` pairs per forward (0: no limit),
    fewest forwards first. Exact whenever n_pairs >= steps * (steps - 1) (true at the default
    sizes: uniform batches cannot always hit `steps` on fewer pairs), else the nearest."""
    per_step = math.ceil(n_pairs / steps)  # B * C(K,2) without ties
    first = math.ceil(per_step / most) if most > 0 else 1
    best = (math.inf, per_step, first)
    for accum in range(first, per_step + 1):
        for micro in range(min(most or per_step, per_step), 0, -1):
            miss = abs(math.ceil(math.ceil(n_pairs / micro) / accum) - steps)
            if miss == 0:
                return micro, accum
            best = min(best, (miss, micro, accum), key=lambda b: b[0])
    return best[1], best[2]


def run_k(cfg, base, tokenizer, train, val, k: int, args, out_dir: str) -> dict:
    r, B = cfg.rm, cfg.rm.batch_size
    n_pairs = sum(1 for c in train for _ in c.pairs())
    steps = math.ceil(len(train) / B)  # per epoch, both methods
    fwd = math.ceil(B * k / 2) if args.pairs_per_forward is None else args.pairs_per_forward
    micro, accum = pair_batching(n_pairs, steps, fwd)
    common = dict(
        output_dir=out_dir,
        use_cpu=True,
        bf16=False,
        fp16=False,
        learning_rate=r.lr,
        num_train_epochs=args.epochs,  # rm.max_steps is ignored: whole epochs for both
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=r.weight_decay,
        logging_strategy="no",
        save_strategy="no",
        seed=args.seed,
        data_seed=args.seed,
        report_to=[],
        disable_tqdm=args.quiet,
        dataloader_num_workers=0,
    )
    results = {}

    # (a) K-wise, first: a one-time warm-up cost lands on K-wise's side of the ratio.
    model = copy.deepcopy(base).train()
    trainer = reward.KwiseTrainer(
        model=model,
        args=TrainingArguments(
            per_device_train_batch_size=B, remove_unused_columns=False, **common
        ),
        train_dataset=train,
        data_collator=reward.KwiseCollator(tokenizer, r.max_length),
    )
    results["K-wise"] = timed_train(trainer, model) | heldout(model, tokenizer, r.max_length, val)
    results["K-wise"] |= {"rankings": len(train), "pairs": n_pairs, "per_step": f"{B} rankings"}
    del trainer, model
    gc.collect()

    # (b) pairs with TRL's RewardTrainer.
    from huggingface_hub import constants
    from trl import RewardConfig, RewardTrainer

    constants.HF_HUB_DISABLE_TELEMETRY = True  # RewardTrainer pings the Hub on init otherwise
    data = pair_dataset(train, tokenizer, r.max_length, args.seed)
    model = copy.deepcopy(base).train()
    trainer = RewardTrainer(
        model=model,
        args=RewardConfig(
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=accum,
            activation_checkpointing=False,  # RewardConfig turns it on (gradient_checkpointing=True)
            max_length=r.max_length,
            dataset_num_proc=None,
            center_rewards_coefficient=None,
            **common,
        ),
        train_dataset=data,
        processing_class=tokenizer,
    )
    if len(trainer.train_dataset) != n_pairs:
        raise RuntimeError(f"RewardTrainer kept {len(trainer.train_dataset)} of {n_pairs} pairs")
    results["pairs"] = timed_train(trainer, model) | heldout(model, tokenizer, r.max_length, val)
    per_step = f"{micro * accum} pairs ({accum} x {micro})"
    results["pairs"] |= {"rankings": len(train), "pairs": n_pairs, "per_step": per_step}
    del trainer, model
    gc.collect()
    return results


# ----------------------------------------------------------------------------- report


def paired_diff(a: list, b: list) -> tuple[float, float]:
    """Pooled accuracy difference a - b over prompts and its standard error clustered by
    prompt (pairs of one prompt are not independent), from per-prompt (accuracy, pairs)."""
    rows = [(na, xa - xb) for (xa, na), (xb, _) in zip(a, b, strict=True) if na]
    total, m = sum(n for n, _ in rows), len(rows)
    d = sum(n * x for n, x in rows) / total
    var = sum((n / total) ** 2 * (x - d) ** 2 for n, x in rows) * m / max(1, m - 1)
    return d, math.sqrt(var)


def report(k: int, res: dict) -> list[str]:
    lines = [
        f"### K = {k}",
        "",
        "| method | rankings | pairs | per step | steps | sequences forwarded | tokens forwarded "
        "(padded) | train wall s | held-out acc (pairs) |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in res.items():
        if name in ("K-wise", "pairs"):
            lines.append(
                f"| {name} | {m['rankings']:,} | {m['pairs']:,} | {m['per_step']} | {m['steps']} "
                f"| {m['sequences']:,} | {m['tokens']:,} | {m['wall_s']:.1f} "
                f"| {m['heldout_acc']:.1%} ({m['heldout_pairs']:,}) |"
            )
    verdict = "meets target" if res["ratio"] >= 5 else "below target"
    target = f", target >= 5x: {verdict}" if k == 9 else ""
    d, se = res["acc_diff"], res["acc_diff_se"]
    kw, pw = res["K-wise"], res["pairs"]
    seq, tok = pw["sequences"] / kw["sequences"], pw["tokens"] / kw["tokens"]
    worse = "no worse" if d >= 0 else ("worse, within 2 SE" if d >= -2 * se else "worse")
    lines += [
        "",
        f"ratio (pairs / K-wise wall time) at K={k}: {res['ratio']:.2f}x (bound {k - 1}x{target})",
        f"forwarded by pairs / K-wise: {seq:.2f}x sequences, {tok:.2f}x tokens with padding "
        "(shuffled pairs batch responses of many prompts, so they pad more)",
        f"held-out accuracy K-wise - pairs: {100 * d:+.1f} points (SE {100 * se:.1f}, clustered "
        f"by prompt): {worse}",
        "",
    ]
    return lines


def machine(threads: int) -> str:
    import transformers
    import trl

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: nproc {len(os.sched_getaffinity(0))}, torch threads {threads}, load average "
        f"{load}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"trl {trl.__version__}"
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--workspace", default=None)
    ap.add_argument("--ks", type=int, nargs="+", default=[4, 9])
    ap.add_argument("--train-prompts", type=int, default=400)
    ap.add_argument("--val-prompts", type=int, default=150)
    ap.add_argument("--extra-samples", type=int, help="samples beyond K per prompt (default K)")
    ap.add_argument("--pairs-per-forward", type=int, help="default ceil(B*K/2); 0: B*C(K,2)")
    ap.add_argument("--threads", type=int, default=None, help="default: the config's threads")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    ap.add_argument("--quiet", action="store_true", help="no training progress bars")
    ap.add_argument(
        "--break-ties",
        action="store_true",
        help="labelers give every response its own rank (all C(K,2) pairs: the K-1 bound)",
    )
    args = ap.parse_args(argv)
    kw = {"workspace": args.workspace} if args.workspace else {}
    cfg = lab_config.load(args.recipe, args.overrides, **kw)
    threads = args.threads or cfg.threads
    torch.set_num_threads(threads)
    try:
        sft_dir = reward.sft_model_dir(cfg)
    except RunError:
        msg = f"no finished SFT run in {cfg.workspace_dir}; run: rlhf sft --recipe {cfg.recipe}"
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None
    command = "python benchmarks/rm_kwise_vs_pairs.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    host = machine(threads)
    print(f"command: {command}\n{host}\nSFT model: {sft_dir}\n")

    world = build_world(cfg, progress=False)
    _, tokenizer = load_policy(sft_dir, padding_side="right")
    torch.manual_seed(args.seed)  # the score head's initialisation
    with quiet_progress():
        base = AutoModelForSequenceClassification.from_pretrained(
            str(sft_dir), num_labels=1, local_files_only=True
        )
    base.config.pad_token_id = tokenizer.pad_token_id

    results: dict = {"command": command, "machine": host, "sft_model": str(sft_dir)}
    lines = []
    for k in args.ks:
        train = comparisons(cfg, world, sft_dir, k, "train", args.train_prompts, args)
        val = comparisons(cfg, world, sft_dir, k, "val", args.val_prompts, args)
        if len(train) < cfg.rm.batch_size or not val:
            raise SystemExit(
                f"K={k}: {len(train)} train / {len(val)} val rankings; need more prompts"
            )
        with tempfile.TemporaryDirectory() as tmp:
            res = run_k(cfg, base, tokenizer, train, val, k, args, tmp)
        res["ratio"] = res["pairs"]["wall_s"] / res["K-wise"]["wall_s"]
        diff = paired_diff(res["K-wise"].pop("per_prompt"), res["pairs"].pop("per_prompt"))
        res["acc_diff"], res["acc_diff_se"] = diff
        results[f"K={k}"] = res
        lines += report(k, res)
        print("\n" + "\n".join(report(k, res)))
    if len(args.ks) > 1:  # all tables together, after the progress bars
        print("\n" + "\n".join([f"command: {command}", host, ""] + lines))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
