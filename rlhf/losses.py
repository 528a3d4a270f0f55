"""Reward-model losses: the K-wise ranking loss of InstructGPT (Ouyang et al. 2022, Eq. 1, 3.5).

A labeler ranks K responses to one prompt; every pair (y_w, y_l) with y_w ranked above y_l gives
a term −log σ(r(x, y_w) − r(x, y_l)). The paper treats all C(K, 2) pairs of one prompt as ONE
batch element (section 3.5): each response goes through the model once, not once per pair, and a
prompt's pairs are averaged before prompts are averaged, so a prompt with many responses does not
outweigh one with few (training on pairs shuffled apart overfits in a single epoch, per the paper).

Layout (B prompts, K = most responses of any prompt in the batch):

    rewards (B, K)  float, r(x, y_k); entries of absent responses are ignored (any value, even NaN)
    ranks   (B, K)  integer, lower is better; equal ranks are ties (no pair); negative = absent

Pure tensor functions; the trainer owns the model and the batching.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["kwise_accuracy", "kwise_ranking_loss"]


def _check(rewards: Tensor, ranks: Tensor) -> None:
    if not isinstance(rewards, Tensor) or not isinstance(ranks, Tensor):
        raise ValueError("rewards and ranks must be torch tensors")
    if rewards.dim() != 2 or ranks.dim() != 2:
        raise ValueError(
            f"rewards and ranks must be 2-D (B, K); got rewards {tuple(rewards.shape)}, "
            f"ranks {tuple(ranks.shape)}"
        )
    if rewards.shape != ranks.shape:
        raise ValueError(
            f"rewards and ranks must have the same shape; got rewards {tuple(rewards.shape)}, "
            f"ranks {tuple(ranks.shape)}"
        )
    if not rewards.dtype.is_floating_point:
        raise ValueError(f"rewards must be a floating-point tensor; got dtype {rewards.dtype}")
    if ranks.dtype.is_floating_point or ranks.dtype.is_complex or ranks.dtype == torch.bool:
        raise ValueError(
            f"ranks must be an integer tensor (lower = better, negative = absent); "
            f"got dtype {ranks.dtype}"
        )


def _pair_mask(ranks: Tensor) -> tuple[Tensor, Tensor]:
    """Return (pairs, present): pairs[b, i, j] is True when response i beats response j."""
    present = ranks >= 0  # (B, K)
    both = present[:, :, None] & present[:, None, :]  # (B, K, K)
    better = ranks[:, :, None] < ranks[:, None, :]  # (B, K, K) rank_i < rank_j; ties give neither
    return both & better, present


def _reward_gaps(rewards: Tensor, present: Tensor) -> Tensor:
    # Zero the absent slots first, so padding (even NaN or inf) reaches neither value nor gradient.
    r = torch.where(present, rewards, torch.zeros_like(rewards))  # (B, K)
    return r[:, :, None] - r[:, None, :]  # (B, K, K) r_i − r_j


def kwise_ranking_loss(rewards: Tensor, ranks: Tensor) -> Tensor:
    """InstructGPT Eq. 1: mean over prompts of the mean over their pairs of −log σ(r_w − r_l).

    With no ties a prompt of K responses has C(K, 2) pairs, which is the paper's 1/C(K, 2); with
    ties the divisor is the number of ordered pairs that remain. A prompt with no pair (one
    response, or all tied) is left out of the mean over prompts. If no prompt has a pair the
    result is a zero that still has a grad_fn, so `loss.backward()` works on any batch.
    """
    _check(rewards, ranks)
    pairs, present = _pair_mask(ranks)  # (B, K, K), (B, K)
    gaps = _reward_gaps(rewards, present)  # (B, K, K)
    # logsigmoid rather than log(sigmoid(.)): finite for any gap, e.g. −1000.
    nll = torch.where(pairs, -F.logsigmoid(gaps), torch.zeros_like(gaps))  # (B, K, K)
    n_pairs = pairs.sum(dim=(1, 2))  # (B,)
    has_pairs = n_pairs > 0  # (B,)
    if not bool(has_pairs.any()):
        return gaps.sum() * 0.0  # zero, on rewards' graph
    per_prompt = nll.sum(dim=(1, 2)) / n_pairs.clamp(min=1)  # (B,)
    return per_prompt[has_pairs].mean()


@torch.no_grad()
def kwise_accuracy(rewards: Tensor, ranks: Tensor) -> tuple[float, int]:
    """Share of ranked pairs the rewards order correctly (r_w > r_l; equal rewards count half).

    Pooled over all pairs of the batch, not averaged per prompt. Returns (accuracy, n_pairs);
    accuracy is NaN when there is no pair, so weight by n_pairs when combining batches.
    """
    _check(rewards, ranks)
    pairs, present = _pair_mask(ranks)  # (B, K, K)
    gaps = _reward_gaps(rewards.detach(), present)  # (B, K, K)
    score = (gaps > 0).double() + 0.5 * (gaps == 0).double()  # (B, K, K)
    n_pairs = int(pairs.sum())
    if n_pairs == 0:
        return float("nan"), 0
    return float(score[pairs].sum()) / n_pairs, n_pairs
