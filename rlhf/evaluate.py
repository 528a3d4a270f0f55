"""Measurements of a policy on the Tiny World (stage-0 part; the evaluation stage extends it).

perplexity / heldout_loss   the alignment tax on language modelling (paper 4.2)
fact_cloze_accuracy         a zero-shot world "NLP" task: complete a fact stated in the corpus
behaviour_report            how the model answers test prompts, judged by the gold labeler
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.generation import generate
from rlhf.models import load_policy
from rlhf.tokenizer import encode_documents


def blocks(ids: list[int], block_size: int, keep_remainder: bool) -> list[torch.Tensor]:
    """Cut a token stream into consecutive blocks of block_size (the last may be shorter)."""
    n_full = len(ids) // block_size
    out = [torch.tensor(ids[i * block_size : (i + 1) * block_size]) for i in range(n_full)]
    if keep_remainder and len(ids) - n_full * block_size >= 2:  # one prediction needs 2 tokens
        out.append(torch.tensor(ids[n_full * block_size :]))
    return out


@torch.no_grad()
def block_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    documents: Sequence[str],
    block_size: int,
    batch_size: int = 16,
) -> tuple[list[float], list[int]]:
    """(summed next-token NLL in nats, predicted tokens), one of each per block.

    Documents are encoded as in pretraining (EOS after each, concatenated) and cut into
    non-overlapping blocks; within a block each token is predicted from the ones before it
    in the block, so the first token of a block is never predicted."""
    chunks = blocks(encode_documents(tokenizer, documents), block_size, keep_remainder=True)
    if not chunks:
        raise ValueError("heldout_loss: documents hold fewer than 2 tokens")
    was_training = model.training
    model.eval()
    nll_sums: list[float] = []
    counts: list[int] = []
    try:
        for start in range(0, len(chunks), batch_size):
            batch = chunks[start : start + batch_size]
            T = max(len(c) for c in batch)
            x = torch.full((len(batch), T), tokenizer.pad_token_id)  # (B, T) right-padded
            mask = torch.zeros(len(batch), T, dtype=torch.long)  # (B, T)
            for i, c in enumerate(batch):
                x[i, : len(c)], mask[i, : len(c)] = c, 1
            logits = model(input_ids=x, attention_mask=mask).logits.float()  # (B, T, V)
            logp = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, T-1, V): predicts x[:, 1:]
            nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)  # (B, T-1)
            target_mask = mask[:, 1:].float()  # (B, T-1)
            nll_sums += (nll * target_mask).sum(1).tolist()
            counts += target_mask.sum(1).long().tolist()
    finally:
        model.train(was_training)
    return nll_sums, counts


def heldout_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    documents: Sequence[str],
    block_size: int,
    batch_size: int = 16,
) -> float:
    """Mean next-token negative log-likelihood (nats) over every token of the documents (the
    blocks of `block_nll`)."""
    nll_sums, counts = block_nll(model, tokenizer, documents, block_size, batch_size)
    return sum(nll_sums) / sum(counts)


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    documents: Sequence[str],
    block_size: int,
    batch_size: int = 16,
) -> float:
    """exp(mean next-token NLL) over the documents (see heldout_loss)."""
    return math.exp(heldout_loss(model, tokenizer, documents, block_size, batch_size))


def _starts_with_answer(completion: str, answer: str) -> bool:
    """The completion begins with the answer as a whole word ("Vell." yes, "Vellox" no)."""
    text, answer = completion.lstrip(), answer.strip()
    if not text.startswith(answer):
        return False
    rest = text[len(answer) :]
    return not rest or not rest[0].isalnum()


def fact_cloze_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[Any],
    batch_size: int = 32,
) -> float:
    """Share of ClozeItems whose greedy completion of `context` starts with `answer`."""
    hits = fact_cloze_hits(model, tokenizer, items, batch_size)
    return sum(hits) / len(hits)


def fact_cloze_hits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[Any],
    batch_size: int = 32,
) -> list[bool]:
    """Per ClozeItem: does the greedy completion of `context` start with `answer`?

    A trailing space in the context is left for the model to produce: byte-level BPE folds
    the space into the next word (" Vell"), so a context ending in a space is out of
    distribution."""
    if not items:
        raise ValueError("fact_cloze_accuracy: no cloze items")
    contexts = [it.context.rstrip(" ") for it in items]
    longest = max(len(tokenizer(" " + it.answer.strip())["input_ids"]) for it in items)
    out = generate(
        model, tokenizer, contexts, max_new_tokens=longest + 2, greedy=True, batch_size=batch_size
    )
    return [_starts_with_answer(t, it.answer) for t, it in zip(out.texts, items, strict=True)]


def behaviour_report(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: Any,
    prompts: Sequence[Any],
    max_new_tokens: int,
    batch_size: int = 32,
    n_samples: int = 3,
) -> dict[str, Any]:
    """Greedy responses to `prompts` (world Prompts), judged by `world.gold`.

    Returns rates over all prompts (fails_to_follow, eos_rate, likert_mean), the share of
    misconception prompts answered with the popular falsehood (flag popular_false; the
    base model should repeat the corpus's misconceptions as GPT-3 does, paper 4.3), and per
    family: n, fails_to_follow, likert_mean, plus `samples` (a few prompt/response pairs)."""
    if not prompts:
        raise ValueError("behaviour_report: no prompts")
    out, judgements = _judged(model, tokenizer, world, prompts, max_new_tokens, batch_size)
    by_family: dict[str, list[tuple[Any, str, Any]]] = defaultdict(list)
    for prompt, text, j in zip(prompts, out.texts, judgements, strict=True):
        by_family[prompt.family].append((prompt, text, j))

    def rate(js: list[Any], flag: str) -> float:
        return sum(bool(j.flags.get(flag)) for j in js) / len(js)

    judged = [j for rows in by_family.values() for _, _, j in rows]
    report: dict[str, Any] = {
        "n_prompts": len(prompts),
        "fails_to_follow": rate(judged, "fails_to_follow"),
        "likert_mean": sum(j.likert for j in judged) / len(judged),
        "eos_rate": float(out.ended.float().mean()),
        "misconception_popular_false": None,
        "per_family": {},
        "samples": {},
    }
    if "misconception" in by_family:
        js = [j for _, _, j in by_family["misconception"]]
        report["misconception_popular_false"] = rate(js, "popular_false")
    for family in sorted(by_family):
        rows = by_family[family]
        js = [j for _, _, j in rows]
        report["per_family"][family] = {
            "n": len(rows),
            "fails_to_follow": rate(js, "fails_to_follow"),
            "correct": rate(js, "correct"),
            "likert_mean": sum(j.likert for j in js) / len(js),
        }
        report["samples"][family] = [
            {"prompt": p.text, "response": t, "likert": j.likert} for p, t, j in rows[:n_samples]
        ]
    return report


def sample_table(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: Any,
    prompts: Sequence[Any],
    max_new_tokens: int = 48,
    greedy: bool = True,
    seed: int = 0,
) -> Any:
    """A DataFrame of responses to `prompts` with the gold Likert and the flags that are set."""
    import pandas as pd

    out = generate(
        model,
        tokenizer,
        [p.text for p in prompts],
        max_new_tokens=max_new_tokens,
        greedy=greedy,
        seed=seed,
    )
    rows = []
    for p, text, ended in zip(prompts, out.texts, out.ended.tolist(), strict=True):
        j = world.gold.score(p, text)
        rows.append(
            {
                "family": p.family,
                "prompt": p.instruction,
                "response": text,
                "EOS": ended,
                "likert": j.likert,
                "flags": ", ".join(k for k, v in j.flags.items() if v),
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- intervals


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling items with
    replacement): (low, high) at `level`. One value or none gives (nan, nan)."""
    x = torch.as_tensor(list(values), dtype=torch.float64)
    if len(x) < 2:
        return float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(x), (n_resamples, len(x)), generator=g)  # (n_resamples, N)
    means = x[idx].mean(1)
    alpha = (1.0 - level) / 2
    lo, hi = torch.quantile(means, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    return float(lo), float(hi)


def judged_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: Any,
    prompts: Sequence[Any],
    max_new_tokens: int,
    batch_size: int = 32,
) -> tuple[list[str], list[Any]]:
    """A policy's greedy answers to world prompts and the gold labeler's Judgement of each:
    what every win rate of the lab compares."""
    out, judgements = _judged(model, tokenizer, world, prompts, max_new_tokens, batch_size)
    return out.texts, judgements


def _judged(model, tokenizer, world, prompts, max_new_tokens: int, batch_size: int):
    """(the greedy generation, with its texts and EOS flags; the gold Judgement of each text):
    judged_answers and behaviour_report, which also reads the EOS flags."""
    texts = [p.text for p in prompts]
    g = generate(model, tokenizer, texts, max_new_tokens, greedy=True, batch_size=batch_size)
    return g, [world.gold.score(p, t) for p, t in zip(prompts, g.texts, strict=True)]


def win_outcomes(quality: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per prompt: 1 if the policy's gold quality beats the baseline's, 0.5 on a tie, else 0
    (the paper's win rate counts ties half)."""
    return [
        1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(quality, baseline, strict=True)
    ]


def greedy_judgements(
    model_dir: Any, world: Any, prompts: Sequence[Any], max_new_tokens: int
) -> list[Any]:
    """The gold labeler's Judgements of the greedy answers to `prompts` of the policy saved in
    `model_dir` (a run's model/ folder), batched by 128: what the benchmarks compare."""
    model, tokenizer = load_policy(model_dir)
    return judged_answers(model, tokenizer, world, prompts, max_new_tokens, batch_size=128)[1]


def with_ci(values: Sequence[float], n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """{"mean", "lo", "hi", "n"}: the mean of `values` with its 95% bootstrap interval."""
    lo, hi = bootstrap_ci(values, n_resamples, seed)
    return {
        "mean": sum(values) / len(values) if values else float("nan"),
        "lo": lo,
        "hi": hi,
        "n": len(values),
    }


def ratio_ci(
    sums: torch.Tensor, counts: torch.Tensor, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lo, hi) of sum(sums) / sum(counts), the interval (95%) from resampling the units
    (clusters, text blocks) with replacement and taking each resample's ratio of sums. Fewer
    than 2 units give (mean, nan, nan)."""
    mean = float(sums.sum() / counts.sum())
    if len(sums) < 2:
        return mean, float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(sums), (n_resamples, len(sums)), generator=g)  # (R, units)
    ratios = sums[idx].sum(1) / counts[idx].sum(1)  # (R,)
    lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=ratios.dtype))
    return mean, float(lo), float(hi)


def clustered_ci(
    values: Sequence[float], clusters: Sequence[Any], n_resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """with_ci for values that come in correlated clusters (every ranked pair of one prompt's
    samples, judged by several labelers): whole clusters are resampled (`ratio_ci`).
    Resampling single pairs would read 1,000 pairs of 168 prompts as 1,000 independent draws
    and give too narrow an interval."""
    if not values:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    index = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    ids = torch.tensor([index[c] for c in clusters])
    x = torch.as_tensor(list(values), dtype=torch.float64)
    sums = torch.zeros(len(index), dtype=torch.float64).index_add_(0, ids, x)  # (C,)
    counts = torch.zeros(len(index), dtype=torch.float64).index_add_(0, ids, torch.ones_like(x))
    mean, lo, hi = ratio_ci(sums, counts, n_resamples, seed)
    return {"mean": mean, "lo": lo, "hi": hi, "n": len(x)}
