"""The Tiny World's gold labeler as a reward function: PPO's oracle arm (`ppo.reward=gold`).

A learned reward model is a proxy; the world's gold labeler is the true objective the proxy
approximates. Training PPO against the gold labeler itself (Gao et al. 2022 train against a
"gold" reward model the same way) separates two questions the paper's PPO row mixes:

- how good a policy PPO can make with a perfect reward model (the oracle's win rate), and
- how much of that the learned RM gives away (the RM's win rate minus the oracle's).

On the tiny recipe the oracle reaches about the same win rate against SFT on the test prompts
as the RM does (docs/benchmarks.md). Best of n (benchmarks/best_of_n.py) shows the learned
RM's limit: the SFT policy's samples, picked by gold, hold a 62% win rate within PPO's KL, and
the RM's picks stop at 52%. The oracle's own limit is the step to held-out prompts: after 450
steps it wins 59.8% on the train prompts and 54.3% on the test prompts, whose entity combinations
it never trained on; expert iteration on gold's picks (benchmarks/expert_iteration.py) does
the same.

The reward mirrors the RM's scale and zero: `scale * (quality - mean quality of the train
demonstrations)`, so a demonstration scores 0 as it does for the RM after its bias (paper
3.5), and `scale` matches the spread of the RM's scores (ppo.gold_scale)."""

from __future__ import annotations

from typing import Any

import torch

from rlhf.errors import RunError


class GoldReward:
    """`.score(prompts, responses) -> (N,)` like rlhf.reward.RewardModel, from the world's
    gold labeler. Prompts are the world's prompt texts; any other text has no gold answer."""

    def __init__(self, world: Any, scale: float):
        self.world, self.scale = world, float(scale)
        self.prompt_of = {p.text: p for p in world.prompts()}  # text -> Prompt (ids are unique)
        demos = world.demonstrations("train")
        if not demos:
            raise RunError("ppo.reward=gold: the world has no train demonstrations to centre on")
        quality = [world.gold.score(self.prompt_of[d.prompt], d.response).quality for d in demos]
        # The demonstration-mean-0 bias of paper 3.5, applied to the gold quality.
        self.bias = -self.scale * sum(quality) / len(quality)

    def score(self, prompts: list[str], responses: list[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for prompt, response in zip(prompts, responses, strict=True):
            p = self.prompt_of.get(prompt)
            if p is None:
                raise RunError(
                    f"ppo.reward=gold: no gold answer for the prompt {prompt[:60]!r} (only the "
                    "world's prompts have one; use ppo.reward=rm with ppo.data)"
                )
            out.append(self.scale * self.world.gold.score(p, response).quality + self.bias)
        return torch.tensor(out, dtype=torch.float32)  # (N,)
