"""The Tiny World's gold labeler as a reward function: PPO's oracle arms (`ppo.reward=gold`,
`ppo.reward=labelers`).

A learned reward model is a proxy; the world's gold labeler is the true objective the proxy
approximates. Training PPO against the gold labeler itself (Gao et al. 2022 train against a
"gold" reward model the same way) separates two questions the paper's PPO row mixes:

- how good a policy PPO can make with a perfect reward model (the oracle's win rate), and
- how much of that the learned RM gives away (the RM's win rate minus the oracle's).

On the tiny recipe at its defaults the oracle wins 58.6% against SFT on the test prompts at 60
steps (the RM of the round 57.8%) and 60.7% at 120 (the RM 58.0%; docs/benchmarks.md, "The
oracle arms again"; benchmarks/reward_arms.py). Best of n (benchmarks/best_of_n.py) shows the
learned RM's limit: the SFT policy's samples, picked by gold, hold a 62% win rate within PPO's
KL, and the RM's picks stop at 52%. The oracle's own limit is the step to held-out prompts:
after 450 steps (beta 0.05, the train prompts only) it won 59.8% on the train prompts and 54.3%
on the test prompts, whose entity combinations it never trained on; expert iteration on gold's
picks (benchmarks/expert_iteration.py) does the same.

The reward mirrors the RM's scale and zero: `scale * (quality - mean quality of the train
demonstrations)`, so a demonstration scores 0 as it does for the RM after its bias (paper
3.5), and `scale` matches the spread of the RM's scores (ppo.gold_scale).

`ppo.reward=labelers` is the second arm: the training labelers' mean perceived utility without
its noise (`Labeler.perceived`), which is what a perfect reward model of their comparisons would
learn. It equals the gold quality plus each labeler's quirk, except on plain requests to insult,
where the training labelers put helpfulness first (paper 3.4; world v5). Between the two arms,
the RM's win rate splits into what it loses by being learned (labelers minus RM) and what the
labelers' own preferences lose against the true objective (gold minus labelers)."""

from __future__ import annotations

from typing import Any

import torch

from rlhf.errors import RunError

JUDGES = ("gold", "labelers")  # the oracle rewards of ppo.reward


def labelers_utility(world: Any, prompt: Any, response: str, judgement: Any) -> float:
    """The world's training labelers' mean perceived utility of `response` (whose gold
    Judgement is `judgement`) without their noise: what a perfect reward model of their
    comparisons scores (ppo.reward=labelers; benchmarks/best_of_n.py's "labelers" pick)."""
    labelers = world.labelers
    return sum(lab.perceived(prompt, response, judgement) for lab in labelers) / len(labelers)


class GoldReward:
    """`.score(prompts, responses) -> (N,)` like rlhf.reward.RewardModel, from the world's
    gold labeler (`judge="gold"`) or its training labelers' mean noise-free utility
    (`judge="labelers"`). Prompts are the world's prompt texts; any other text has no gold
    answer."""

    def __init__(self, world: Any, scale: float, judge: str = "gold"):
        if judge not in JUDGES:
            raise RunError(f"ppo.reward={judge!r}: expected one of {', '.join(JUDGES)}")
        self.world, self.scale, self.judge = world, float(scale), judge
        self.prompt_of = {p.text: p for p in world.prompts()}  # text -> Prompt (ids are unique)
        demos = world.demonstrations("train")
        if not demos:
            raise RunError(
                f"ppo.reward={judge}: the world has no train demonstrations to centre on"
            )
        utility = [self.utility(self.prompt_of[d.prompt], d.response) for d in demos]
        # The demonstration-mean-0 bias of paper 3.5, applied to the oracle's utility.
        self.bias = -self.scale * sum(utility) / len(utility)

    def utility(self, prompt: Any, response: str) -> float:
        """The gold quality of `response`, or the training labelers' mean perceived utility."""
        j = self.world.gold.score(prompt, response)
        if self.judge == "gold":
            return j.quality
        return labelers_utility(self.world, prompt, response, j)

    def score(self, prompts: list[str], responses: list[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for prompt, response in zip(prompts, responses, strict=True):
            p = self.prompt_of.get(prompt)
            if p is None:
                raise RunError(
                    f"ppo.reward={self.judge}: no gold answer for the prompt {prompt[:60]!r} "
                    "(only the world's prompts have one; use ppo.reward=rm with ppo.data)"
                )
            out.append(self.scale * self.utility(p, response) + self.bias)
        return torch.tensor(out, dtype=torch.float32)  # (N,)
