"""Losses as pure tensor functions: the K-wise ranking loss of the reward model (InstructGPT,
Ouyang et al. 2022, Eq. 1, 3.5) and the pieces of PPO (stage 3): the KL-shaped reward, GAE,
whitening, the clipped surrogate and the clipped value loss.

Reward model.

A labeler ranks K responses to one prompt; every pair (y_w, y_l) with y_w ranked above y_l gives
a term −log σ(r(x, y_w) − r(x, y_l)). The paper treats all C(K, 2) pairs of one prompt as ONE
batch element (section 3.5): each response goes through the model once, not once per pair, and a
prompt's pairs are averaged before prompts are averaged, so a prompt with many responses does not
outweigh one with few (training on pairs shuffled apart overfits in a single epoch, per the paper).

Layout (B prompts, K = most responses of any prompt in the batch):

    rewards (B, K)  float, r(x, y_k); entries of absent responses are ignored (any value, even NaN)
    ranks   (B, K)  integer, lower is better; equal ranks are ties (no pair); negative = absent

PPO (B episodes, T = longest response; `mask` (B, T) is 1 on response tokens, EOS included, and
0 on the padding after them; every tensor below is (B, T) unless said otherwise):

    logprobs, ref_logprobs   log pi(y_t | x, y_<t) of the sampled token under policy / reference
    kl                       logprobs - ref_logprobs (the per-token estimator of the KL)
    rewards                  -beta * kl at every token, plus the RM score at the last token
    values                   V(x, y_<t), the value model's estimate before token t is emitted
    advantages, returns      GAE(gamma, lambda); returns = advantages + values

The trainer owns the models and the batching.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "gae",
    "kl_shaped_rewards",
    "kwise_accuracy",
    "kwise_ranking_loss",
    "masked_mean",
    "masked_var",
    "policy_loss",
    "value_loss",
    "whiten",
]


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


# ----------------------------------------------------------------------------- PPO


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over the positions where mask is 1 (over all of them, or along `dim`)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of x over the masked positions (Bessel-corrected by default, as TRL)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        var = var * n / (n - 1).clamp(min=1.0)
    return var


def whiten(
    x: Tensor,
    mask: Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    moments: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """(x - mean) / std over the masked positions; masked-out positions come back as 0.

    With shift_mean=False the mean is added back (lm-human-preference-details whitens rewards
    that way, keeping their sign). `moments`: the (mean, var) to use instead of x's own, e.g.
    rlhf.distributed.masked_moments, those of every process's batch together."""
    mean, var = moments if moments is not None else (masked_mean(x, mask), masked_var(x, mask))
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def kl_shaped_rewards(
    scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token rewards of the paper's objective (3.5, after Ziegler et al. 2019).

    scores (B,) are the RM's (with the EOS penalty already applied). Returns (rewards, kl,
    non_score_reward), each (B, T) and 0 off the mask: the KL penalty -kl_coef * kl at every
    response token and the score added at the last response token only."""
    m = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * m  # (B, T)
    non_score_reward = -kl_coef * kl  # (B, T)
    last = (mask.sum(1) - 1).clamp(min=0)  # (B,) index of the last response token (EOS if any)
    rewards = non_score_reward.clone()
    rewards[torch.arange(len(scores)), last] += scores * (mask.sum(1) > 0).to(scores.dtype)
    return rewards, kl, non_score_reward


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over response tokens.

    rewards, values, mask: (B, T); the value after the last response token is 0 (the episode
    ends). delta_t = r_t + gamma * V_{t+1} - V_t and A_t = sum_{k >= 0} (gamma*lam)^k delta_{t+k},
    computed for all t at once as a (T, T) upper-triangular discount matrix. Returns
    (advantages, returns), (B, T), 0 off the mask; returns = advantages + values."""
    m = mask.to(values.dtype)
    r, v = rewards * m, values * m  # (B, T): nothing after the end
    v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)  # (B, T) V_{t+1}, 0 at end
    delta = r + gamma * v_next - v  # (B, T)
    T = rewards.shape[1]
    idx = torch.arange(T)
    power = (idx[None, :] - idx[:, None]).clamp(min=0).to(values.dtype)  # (T, T): k = j - t
    discount = torch.where(
        idx[None, :] >= idx[:, None], (gamma * lam) ** power, torch.zeros_like(power)
    )  # (T, T) [t, j] = (gamma*lam)^(j-t) for j >= t
    advantages = (delta @ discount.T) * m  # (B, T): A_t = sum_j discount[t, j] * delta_j
    return advantages, (advantages + v) * m


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cliprange: float
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017), averaged over response tokens.

    Returns (loss, clipfrac, approxkl): the share of tokens where the clipped term was taken,
    and 0.5 * mean((log ratio)^2), the estimate of KL(old || new) TRL logs."""
    logratio = logprobs - old_logprobs  # (B, T)
    ratio = torch.exp(logratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
    approxkl = 0.5 * masked_mean(logratio.detach() ** 2, mask)
    return loss, clipfrac.detach(), approxkl


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float
) -> tuple[Tensor, Tensor]:
    """Clipped value loss (PPO2, as TRL and lm-human-preference-details): the larger of the
    squared errors of the new value and of the old value moved at most cliprange_value.
    Returns (0.5 * mean over tokens, the share of tokens where the clipped error was larger)."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    err, err_clipped = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(err, err_clipped), mask)
    clipfrac = masked_mean((err_clipped > err).to(values.dtype), mask)
    return loss, clipfrac.detach()
