"""rlhf.losses: the vectorised K-wise loss and accuracy against an explicit enumeration of pairs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from rlhf.losses import kwise_accuracy, kwise_ranking_loss

torch.set_num_threads(1)


def ranked_pairs(ranks_row: list[int]) -> list[tuple[int, int]]:
    """(winner, loser) index pairs of one prompt, by itertools; ties and absent give none."""
    present = [k for k, rank in enumerate(ranks_row) if rank >= 0]
    pairs = []
    for i, j in itertools.combinations(present, 2):
        if ranks_row[i] < ranks_row[j]:
            pairs.append((i, j))
        elif ranks_row[j] < ranks_row[i]:
            pairs.append((j, i))
    return pairs


def reference_loss(rewards: torch.Tensor, ranks: torch.Tensor) -> float:
    """Eq. 1 in plain Python floats: mean over prompts with pairs of the mean pair −log σ."""
    per_prompt = []
    for r_row, k_row in zip(rewards.tolist(), ranks.tolist(), strict=True):
        pairs = ranked_pairs(k_row)
        if pairs:
            terms = [-math.log(1 / (1 + math.exp(-(r_row[w] - r_row[lo])))) for w, lo in pairs]
            per_prompt.append(sum(terms) / len(terms))
    return sum(per_prompt) / len(per_prompt) if per_prompt else 0.0


def reference_loss_autograd(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """The same enumeration built from scalar tensor ops, so autograd gives a reference gradient."""
    per_prompt = []
    for b, k_row in enumerate(ranks.tolist()):
        pairs = ranked_pairs(k_row)
        if pairs:
            terms = [-F.logsigmoid(rewards[b, w] - rewards[b, lo]) for w, lo in pairs]
            per_prompt.append(torch.stack(terms).mean())
    return torch.stack(per_prompt).mean()


def reference_accuracy(rewards: torch.Tensor, ranks: torch.Tensor) -> tuple[float, int]:
    score, n = 0.0, 0
    for r_row, k_row in zip(rewards.tolist(), ranks.tolist(), strict=True):
        for w, lo in ranked_pairs(k_row):
            n += 1
            score += 1.0 if r_row[w] > r_row[lo] else 0.5 if r_row[w] == r_row[lo] else 0.0
    return (score / n if n else float("nan")), n


def random_batch(seed: int, b: int = 6, k: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards (B, K) float64 and ranks (B, K) int64 with ties, mixed K (4..9) and absent slots."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(b, k, generator=g, dtype=torch.float64) * 2
    ranks = torch.randint(0, 4, (b, k), generator=g)  # only 4 rank levels: many ties
    n_present = torch.randint(4, k + 1, (b,), generator=g)  # mixed K within the batch
    for row in range(b):
        ranks[row, n_present[row] :] = -1
    ranks[0, 3] = -2  # any negative rank is absent, also in the middle of a row
    ranks[-1, :] = torch.tensor([2, 2, -1, 2, -1, 2, -1, -1, 2])[:k]  # all tied: no valid pair
    return rewards, ranks


@pytest.mark.parametrize("seed", range(5))
def test_loss_matches_explicit_pairs(seed):
    rewards, ranks = random_batch(seed)
    loss = kwise_ranking_loss(rewards, ranks)
    assert loss.dtype == torch.float64
    assert math.isclose(loss.item(), reference_loss(rewards, ranks), rel_tol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_gradient_matches_explicit_pairs(seed):
    rewards, ranks = random_batch(seed)
    r1 = rewards.clone().requires_grad_()
    r2 = rewards.clone().requires_grad_()
    kwise_ranking_loss(r1, ranks).backward()
    reference_loss_autograd(r2, ranks).backward()
    assert torch.allclose(r1.grad, r2.grad, rtol=1e-10, atol=1e-12)
    assert (r1.grad[ranks < 0] == 0).all()  # absent responses get no gradient
    assert (r1.grad[-1] == 0).all()  # nor does a prompt whose responses are all tied


def test_gradcheck():
    rewards, ranks = random_batch(0, b=3, k=5)
    ranks[-1] = torch.tensor([0, 1, 1, 2, -1])
    rewards.requires_grad_()
    assert torch.autograd.gradcheck(lambda r: kwise_ranking_loss(r, ranks), (rewards,))


def test_prompt_without_pair_is_left_out_not_counted_as_zero():
    rewards = torch.tensor([[1.0, 0.0, 5.0], [3.0, 1.0, 2.0]], dtype=torch.float64)
    ranks = torch.tensor([[0, 1, -1], [0, 0, 0]])  # second prompt: all tied
    expected = -F.logsigmoid(torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(kwise_ranking_loss(rewards, ranks), expected)


def test_no_pair_in_batch_gives_zero_with_grad_fn():
    rewards = torch.randn(3, 4, requires_grad=True)
    ranks = torch.tensor([[0, 0, -1, -1], [1, -1, -1, -1], [-1, -1, -1, -1]])
    loss = kwise_ranking_loss(rewards, ranks)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert (rewards.grad == 0).all()
    assert kwise_ranking_loss(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 4).long()) == 0


def test_equals_trl_pairwise_loss_for_k2():
    g = torch.Generator().manual_seed(1)
    rewards = torch.randn(16, 2, generator=g, dtype=torch.float64)
    chosen_first = torch.rand(16, generator=g) < 0.5
    ranks = torch.where(chosen_first[:, None], torch.tensor([0, 1]), torch.tensor([1, 0]))
    rewards_chosen = torch.where(chosen_first, rewards[:, 0], rewards[:, 1])
    rewards_rejected = torch.where(chosen_first, rewards[:, 1], rewards[:, 0])
    trl_loss = -F.logsigmoid(rewards_chosen - rewards_rejected).mean()  # RewardTrainer's loss
    assert torch.allclose(kwise_ranking_loss(rewards, ranks), trl_loss)


def test_invariant_to_a_constant_per_prompt():
    rewards, ranks = random_batch(2)
    shift = torch.tensor([10.0, -3.0, 0.5, 100.0, -7.0, 1.0], dtype=torch.float64)[:, None]
    assert torch.allclose(
        kwise_ranking_loss(rewards + shift, ranks), kwise_ranking_loss(rewards, ranks)
    )


def test_absent_rewards_are_ignored_even_nan():
    rewards, ranks = random_batch(3)
    rewards.requires_grad_()
    padded = rewards.detach().clone()
    padded[ranks < 0] = float("nan")
    padded.requires_grad_()
    loss = kwise_ranking_loss(padded, ranks)
    assert torch.allclose(loss, kwise_ranking_loss(rewards, ranks))
    loss.backward()
    assert torch.isfinite(padded.grad).all()


def test_stable_for_large_reward_gaps():
    rewards = torch.tensor([[1000.0, -1000.0], [-1000.0, 1000.0]], requires_grad=True)
    loss = kwise_ranking_loss(rewards, torch.tensor([[0, 1], [0, 1]]))
    assert torch.isfinite(loss) and math.isclose(loss.item(), 1000.0, rel_tol=1e-6)
    loss.backward()
    assert torch.isfinite(rewards.grad).all()


def test_float32_and_int32_ranks():
    rewards, ranks = random_batch(4)
    loss = kwise_ranking_loss(rewards.float(), ranks.int())
    assert loss.dtype == torch.float32
    assert math.isclose(loss.item(), reference_loss(rewards, ranks), rel_tol=1e-5)


@pytest.mark.parametrize(
    ("rewards", "ranks", "match"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 3), "ranks must be an integer tensor"),
        (torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long), "same shape"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), "2-D"),
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), "rewards"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool), "ranks must be an integer"),
    ],
)
def test_bad_inputs_raise(rewards, ranks, match):
    with pytest.raises(ValueError, match=match):
        kwise_ranking_loss(rewards, ranks)
    with pytest.raises(ValueError, match=match):
        kwise_accuracy(rewards, ranks)


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_matches_explicit_pairs(seed):
    rewards, ranks = random_batch(seed)
    rewards = rewards.round()  # integer rewards: some reward ties, which count half
    accuracy, n_pairs = kwise_accuracy(rewards, ranks)
    ref_accuracy, ref_n = reference_accuracy(rewards, ranks)
    assert n_pairs == ref_n > 0
    assert math.isclose(accuracy, ref_accuracy, rel_tol=1e-12)


def test_accuracy_small_cases():
    rewards = torch.tensor([[3.0, 2.0, 2.0, 9.0]], requires_grad=True)
    ranks = torch.tensor([[0, 1, 2, -1]])
    # pairs (0,1) right, (0,2) right, (1,2) tie in reward: 2.5 / 3
    assert kwise_accuracy(rewards, ranks) == (pytest.approx(2.5 / 3), 3)
    accuracy, n_pairs = kwise_accuracy(rewards, torch.tensor([[0, 0, -1, -1]]))
    assert math.isnan(accuracy) and n_pairs == 0
