"""rlhf.losses, PPO part: GAE against a plain Python loop, whitening, the KL-shaped reward's
layout, and the clipped policy and value losses against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.losses import (
    gae,
    kl_shaped_rewards,
    masked_mean,
    masked_var,
    policy_loss,
    value_loss,
    whiten,
)

torch.set_num_threads(1)


def random_episodes(seed: int, B: int = 6, T: int = 9):
    """rewards, values (B, T) and a mask of random lengths 0..T (right-padded)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = T  # one full-length row
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    return rewards, values, mask, lengths


def gae_loop(rewards, values, lengths, gamma, lam):
    """GAE one episode and one token at a time, in Python floats (the reference)."""
    B, T = rewards.shape
    adv = [[0.0] * T for _ in range(B)]
    ret = [[0.0] * T for _ in range(B)]
    for b in range(B):
        n = int(lengths[b])
        last = 0.0
        for t in reversed(range(n)):
            v_next = float(values[b, t + 1]) if t + 1 < n else 0.0  # episode ends after n
            delta = float(rewards[b, t]) + gamma * v_next - float(values[b, t])
            last = delta + gamma * lam * last
            adv[b][t] = last
            ret[b][t] = last + float(values[b, t])
    return torch.tensor(adv, dtype=torch.float64), torch.tensor(ret, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0), (0.9, 0.0)])
def test_gae_matches_a_python_loop(seed, gamma, lam):
    rewards, values, mask, lengths = random_episodes(seed)
    adv, ret = gae(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = gae_loop(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)


def test_gae_ignores_whatever_lies_beyond_the_mask():
    rewards, values, mask, _ = random_episodes(0)
    junk_r = torch.where(mask.bool(), rewards, torch.full_like(rewards, 1e6))
    junk_v = torch.where(mask.bool(), values, torch.full_like(values, -1e6))
    clean, junk = gae(rewards, values, mask, 1.0, 0.95), gae(junk_r, junk_v, mask, 1.0, 0.95)
    for a, b in zip(clean, junk, strict=True):
        torch.testing.assert_close(a, b)


def test_gae_with_lambda_1_and_gamma_1_is_return_minus_value():
    rewards, values, mask, lengths = random_episodes(1)
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    for b in range(len(lengths)):
        n = int(lengths[b])
        for t in range(n):
            assert math.isclose(float(ret[b, t]), float(rewards[b, t:n].sum()), rel_tol=1e-9)


def test_whiten_gives_mean_0_std_1_on_the_mask_and_0_off_it():
    _, values, mask, _ = random_episodes(2)
    x = values * 3 + 5
    w = whiten(x, mask)
    assert abs(float(masked_mean(w, mask))) < 1e-9
    assert math.isclose(float(masked_var(w, mask)), 1.0, rel_tol=1e-6)
    assert float(w[mask == 0].abs().sum()) == 0.0
    # shift_mean=False keeps the mean (rewards keep their sign)
    w2 = whiten(x, mask, shift_mean=False)
    assert math.isclose(float(masked_mean(w2, mask)), float(masked_mean(x, mask)), rel_tol=1e-9)


def test_masked_var_matches_torch_var_on_the_selected_values():
    _, values, mask, _ = random_episodes(3)
    torch.testing.assert_close(masked_var(values, mask), values[mask.bool()].var())
    torch.testing.assert_close(
        masked_var(values, mask, unbiased=False), values[mask.bool()].var(unbiased=False)
    )


def test_kl_shaped_reward_has_the_score_only_at_the_last_response_token():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 9.0]] * 4)
    ref = torch.tensor([[-1.5, -1.0, -0.5, 9.0]] * 4)
    scores = torch.tensor([2.0, -1.0, 0.5, 7.0])
    rewards, kl, nsr = kl_shaped_rewards(scores, logprobs, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(kl[0], torch.tensor([0.5, -1.0, 0.0, 0.0]))
    torch.testing.assert_close(nsr, -0.1 * kl)
    expected = nsr.clone()
    expected[0, 2] += 2.0  # last token of a 3-token response
    expected[1, 3] += -1.0
    expected[2, 0] += 0.5
    torch.testing.assert_close(rewards, expected)  # row 3 has no response: no reward at all
    assert float(rewards[mask == 0].abs().sum()) == 0.0
    # the per-episode total is score - beta * sum of kl
    torch.testing.assert_close(rewards.sum(1)[:3], scores[:3] - 0.1 * kl.sum(1)[:3])


def test_policy_loss_at_ratio_1_is_minus_the_mean_advantage():
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(4, 5, generator=g)
    adv = torch.randn(4, 5, generator=g)
    mask = torch.ones(4, 5)
    loss, clipfrac, approxkl = policy_loss(lp, lp, adv, mask, 0.2)
    assert math.isclose(float(loss), -float(adv.mean()), rel_tol=1e-6)
    assert float(clipfrac) == 0.0 and float(approxkl) == 0.0


def test_policy_loss_clips_a_large_ratio():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[2.0, 0.5]]))  # ratios 2 and 0.5
    adv = torch.tensor([[1.0, -1.0]])
    loss, clipfrac, approxkl = policy_loss(new, old, adv, torch.ones(1, 2), 0.2)
    # token 0: min(2*1, 1.2*1) = 1.2; token 1: min(0.5*-1, 0.8*-1) = -0.8; loss = -mean
    assert math.isclose(float(loss), -(1.2 - 0.8) / 2, rel_tol=1e-6)
    assert float(clipfrac) == 1.0
    assert math.isclose(float(approxkl), 0.5 * math.log(2) ** 2, rel_tol=1e-6)


def test_policy_loss_gradient_is_zero_where_clipped():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[2.0, 1.05]])).requires_grad_()
    loss, _, _ = policy_loss(new, old, torch.ones(1, 2), torch.ones(1, 2), 0.2)
    loss.backward()
    assert float(new.grad[0, 0]) == 0.0 and float(new.grad[0, 1]) != 0.0


def test_value_loss_takes_the_larger_of_clipped_and_unclipped_error():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    ret = torch.tensor([[1.0, 1.0]])
    loss, clipfrac = value_loss(new, old, ret, torch.ones(1, 2), 0.2)
    # token 0: clipped value 0.2, error 0.64 > 0; token 1: within the clip, error 0.81
    assert math.isclose(float(loss), 0.5 * (0.64 + 0.81) / 2, rel_tol=1e-6)
    assert float(clipfrac) == 0.5
