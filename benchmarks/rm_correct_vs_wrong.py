"""Does a reward model tell a right answer from a wrong one? Per task family, on one split of
the world's prompts (validation by default): the world's own correct answer and its wrong
answer to each prompt (`--draws` pairs a prompt, worded by the world as its labelers'
demonstrations are), and how often each RM scores the correct one higher, with a 95%
bootstrap interval that resamples prompts (rlhf.evaluate.clustered_ci). The gold
labeler's accuracy on the same pairs is the ceiling (insult and misconception prompts have
no single right answer of this kind; the world's "correct" reply is a refusal, or the truth).

Held-out accuracy on the labelers' rankings mixes this with form (length, EOS, a refusal);
this isolates correctness, where the tiny SFT-initialised RM is weakest.

`--likelihood POLICY_RUN` adds a column: the answer the policy (an SFT run, say) finds more
likely, by the mean log-probability of its tokens (and EOS) after the prompt. It asks whether
the knowledge the RM lacks is in the model the RM starts from.

`--split` picks the prompts: val or test (held out from the RM), train (the prompts of the
RM's own comparisons: what it remembers) or rl (world.rl_per_family: the prompts only PPO and
GRPO sample, of the train split's combinations past the train prompts and of combinations no
split took; PPO's rollouts are scored on them and on the train prompts).

    PYTHONPATH=. .venv/bin/python benchmarks/rm_correct_vs_wrong.py --runs RM_RUN [RM_RUN ...]
        [--likelihood SFT_RUN] [--split val|test|train|rl] [--draws 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import torch

from rlhf.errors import LabError
from rlhf.evaluate import clustered_ci
from rlhf.likelihood import padded_logprob
from rlhf.models import load_policy
from rlhf.outputs import world_of_run
from rlhf.reward import encode_pairs, load_reward_model
from rlhf.runs import Run
from rlhf.world.build import RL_SPLIT, SPLITS


def pairs(world: Any, split: str, draws: int, seed: int) -> list[tuple[Any, str, str]]:
    """(prompt, correct, wrong), `draws` a prompt of `split`, drawn with one seeded generator;
    draws whose two answers are the same text are left out (no pair)."""
    rng = random.Random(seed)
    out = []
    for p in world.prompts(split):
        for _ in range(draws):
            right, wrong = world.respond(p, "correct", rng), world.respond(p, "wrong", rng)
            if right.strip() != wrong.strip():
                out.append((p, right, wrong))
    return out


def accuracy_by_family(
    right: list[float], wrong: list[float], prompts: list[Any], seed: int
) -> dict[str, dict[str, float]]:
    """family (and "all") -> clustered_ci (over prompts) of 1 / 0.5 / 0 per pair: the correct
    answer scored above, equal to, below the wrong one."""
    hits: dict[str, tuple[list[float], list[str]]] = {}
    for a, b, p in zip(right, wrong, prompts, strict=True):
        h = 1.0 if a > b else 0.5 if a == b else 0.0
        for key in (p.family, "all"):
            hits.setdefault(key, ([], []))
            hits[key][0].append(h)
            hits[key][1].append(p.id)
    return {f: clustered_ci(v, ids, 1000, seed) for f, (v, ids) in sorted(hits.items())}


@torch.no_grad()
def mean_logprob(
    model: Any, tokenizer: Any, prompts: list[str], responses: list[str], batch_size: int = 64
) -> list[float]:
    """Per pair, the mean log-probability of the response's tokens and its EOS after the
    prompt, as the RM reads the pair (prompt + " " + response + EOS, nothing cut), through the
    policy's own unembedding (rlhf.likelihood.padded_logprob, the RM's likelihood term)."""
    out: list[float] = []
    for i in range(0, len(prompts), batch_size):
        part = (prompts[i : i + batch_size], responses[i : i + batch_size])
        enc = encode_pairs(tokenizer, *part, 10_000, response_mask=True)  # right-padded
        hidden = model.base_model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state  # (N, T, H)
        unembedding = model.get_output_embeddings().weight  # (V, H)
        lp = padded_logprob(unembedding, hidden, enc["input_ids"], enc["response_mask"])
        out += lp.tolist()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", required=True, metavar="RM_RUN", help="RM run dirs")
    ap.add_argument(
        "--likelihood", metavar="POLICY_RUN", help="also rank by this policy's likelihood"
    )
    ap.add_argument("--split", default="val", choices=(*SPLITS, RL_SPLIT))
    ap.add_argument("--draws", type=int, default=4, help="answer pairs per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        runs = [Run.open(d) for d in args.runs]
        world = world_of_run(runs[0].dir)
        rms = {r.dir.name: load_reward_model(r.model_dir) for r in runs}
        policy = load_policy(Run.open(args.likelihood).model_dir) if args.likelihood else None
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    rows = pairs(world, args.split, args.draws, args.seed)
    if not rows:  # the rl split is empty in a world without world.rl_per_family
        print(f"error: this world has no {args.split} prompts ({world.dir})", file=sys.stderr)
        raise SystemExit(2)
    prompts = [p for p, _, _ in rows]
    texts = [p.text for p in prompts]
    gold_right = [world.gold.score(p, r).quality for p, r, _ in rows]
    gold_wrong = [world.gold.score(p, w).quality for p, _, w in rows]
    result = {"gold labeler": accuracy_by_family(gold_right, gold_wrong, prompts, args.seed)}
    for name, rm in rms.items():
        right = rm.score(texts, [r for _, r, _ in rows]).tolist()
        wrong = rm.score(texts, [w for _, _, w in rows]).tolist()
        result[name] = accuracy_by_family(right, wrong, prompts, args.seed)
    if policy is not None:
        model, tokenizer = policy
        right = mean_logprob(model.eval(), tokenizer, texts, [r for _, r, _ in rows])
        wrong = mean_logprob(model, tokenizer, texts, [w for _, _, w in rows])
        name = f"likelihood of {Path(args.likelihood).name}"
        result[name] = accuracy_by_family(right, wrong, prompts, args.seed)

    cols = list(result)
    n_prompts = len({p.id for p in prompts})
    print(
        f"Correct answer scored above the wrong one: {len(rows)} pairs of {n_prompts} "
        f"{args.split} prompts; 95% intervals over prompts\n"
    )
    print("| family | pairs | " + " | ".join(cols) + " |")
    print("| --- | ---: |" + " ---: |" * len(cols))
    for f in result["gold labeler"]:
        cells = [
            f"{result[c][f]['mean']:.1%} [{result[c][f]['lo']:.1%}, {result[c][f]['hi']:.1%}]"
            for c in cols
        ]
        print(f"| {f} | {result['gold labeler'][f]['n']} | " + " | ".join(cells) + " |")
    return result


if __name__ == "__main__":
    main()
