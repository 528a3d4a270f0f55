"""Best of n: keep the sample a reward scores highest among n (Stiennon et al. 2020, Gao et al.
2022). The non-parametric stand-in for the KL-regularised optimum PPO looks for, and the pick
expert iteration fine-tunes on (benchmarks/best_of_n.py, benchmarks/expert_iteration.py)."""

from __future__ import annotations

import math

from rlhf.evaluate import win_outcomes


def kl_bound(n: int) -> float:
    """Upper bound on KL(best-of-n || base) in nats (Stiennon et al. 2020, appendix G.3)."""
    return math.log(n) - (n - 1) / n


def best_of(values: list[float], n: int, key: list[float]) -> list[int]:
    """Indices of the pick of each disjoint group of n (len(values) // n groups): the sample
    with the highest `key`, the first on a tie."""
    picks = []
    for g in range(len(values) // n):
        group = range(g * n, (g + 1) * n)
        picks.append(max(group, key=lambda i: key[i]))
    return picks


def bon_wins(quality: list[float], key: list[float], n: int, sft_greedy: float) -> float:
    """Mean win (ties half) against SFT's greedy quality of the best-of-n picks by `key`."""
    picks = best_of(quality, n, key)
    return sum(win_outcomes([quality[i] for i in picks], [sft_greedy] * len(picks))) / len(picks)
