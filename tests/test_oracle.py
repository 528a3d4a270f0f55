"""PPO's oracle arms (rlhf.oracle, ppo.reward=gold or labelers): the gold labeler, or the
training labelers' mean noise-free utility, as the reward, on the micro recipe."""

from __future__ import annotations

import json
import random

import pytest

from rlhf import ppo
from rlhf.config import load
from rlhf.errors import ConfigError, RunError
from rlhf.oracle import GoldReward
from rlhf.results import label_of
from rlhf.runs import list_runs, read_eval, saved_config


@pytest.fixture(scope="module")
def world(rm_ready):
    from rlhf.world import build_world

    return build_world(rm_ready, progress=False)


def test_gold_reward_is_the_scaled_gold_quality_with_demonstrations_at_zero(world):
    gold = GoldReward(world, scale=3.0)
    demos = world.demonstrations("train")
    scores = gold.score([d.prompt for d in demos], [d.response for d in demos])
    assert abs(float(scores.mean())) < 1e-5  # paper 3.5's bias, on the gold labeler
    p = next(q for q in world.prompts("train") if q.family == "arithmetic")
    answers = [f"The answer is {p.meta['answer']}.", f"The answer is {p.meta['answer'] + 1}."]
    right, wrong = gold.score([p.text, p.text], answers).tolist()
    q = [world.gold.score(p, a).quality for a in answers]
    assert right - wrong == pytest.approx(3.0 * (q[0] - q[1]), abs=1e-5)
    assert right > wrong


def test_labelers_reward_is_their_mean_utility_and_puts_helpfulness_first(world):
    labelers = GoldReward(world, scale=3.0, judge="labelers")
    demos = world.demonstrations("train")
    scores = labelers.score([d.prompt for d in demos], [d.response for d in demos])
    assert abs(float(scores.mean())) < 1e-5  # demonstrations at 0, as for the RM (paper 3.5)
    plain = next(p for p in world.prompts("train", "insult") if not p.meta["respectful"])
    answers = [world.respond(plain, kind, random.Random(0)) for kind in ("rude", "correct")]
    rude, refusal = labelers.score([plain.text] * 2, answers).tolist()
    for answer, score in zip(answers, (rude, refusal), strict=True):
        j = world.gold.score(plain, answer)  # the slow reference: one labeler at a time
        mean = sum(lab.perceived(plain, answer, j) for lab in world.labelers) / len(world.labelers)
        assert score == pytest.approx(3.0 * mean + labelers.bias, abs=1e-5)
    # Paper 3.4: the training labelers prefer the rude reply the plain request asked for; the
    # gold labeler, like the final evaluations, prefers the refusal.
    assert rude > refusal
    gold_rude, gold_refusal = GoldReward(world, 3.0).score([plain.text] * 2, answers).tolist()
    assert gold_refusal > gold_rude
    with pytest.raises(RunError, match="ppo.reward='judge': expected one of gold, labelers"):
        GoldReward(world, 3.0, judge="judge")


def test_gold_reward_names_a_prompt_without_a_gold_answer(world):
    with pytest.raises(RunError, match="no gold answer for the prompt 'Tell me a joke.'.*ppo.data"):
        GoldReward(world, 3.0).score(["Tell me a joke."], ["No."])


def test_the_config_allows_exactly_the_rewards_ppo_knows():
    """ppo.reward's choices are written in config.py, which does not import rlhf.ppo."""
    from dataclasses import fields

    from rlhf.config import PPOConfig
    from rlhf.ppo import REWARDS

    (reward,) = [f for f in fields(PPOConfig) if f.name == "reward"]
    assert tuple(reward.metadata["choices"]) == REWARDS


def test_ppo_against_the_gold_labeler_is_rewarded_by_it(rm_ready, world):
    cfg = load("micro", workspace=rm_ready.workspace, **{"ppo.reward": "gold"})
    run = ppo.train(cfg, progress=False)
    report = read_eval(run)
    assert report["reward"] == "gold" and label_of(run) == "PPO+gold"
    scale, gold = cfg.ppo.gold_scale, GoldReward(world, cfg.ppo.gold_scale)
    for row in run.metrics():
        # objective/scores is the rollout's mean reward, objective/gold its mean gold quality
        expected = scale * row["objective/gold"] + gold.bias
        assert row["objective/scores"] == pytest.approx(expected, abs=1e-4)
    assert "gold reward" in ppo.summary(report) and "oracle" in ppo.summary(report)
    # The paper's PPO (reward=rm) keeps its saved config: runs made before the option match.
    assert "reward" not in saved_config(load("micro"), "ppo")["ppo"]
    assert saved_config(cfg, "ppo")["ppo"]["reward"] == "gold"


def test_ppo_against_the_labelers_is_rewarded_by_them(rm_ready, world):
    cfg = load("micro", workspace=rm_ready.workspace, **{"ppo.reward": "labelers", "ppo.steps": 2})
    run = ppo.train(cfg, progress=False)
    report = read_eval(run)
    assert report["reward"] == "labelers" and label_of(run) == "PPO+labelers"
    labelers = GoldReward(world, cfg.ppo.gold_scale, "labelers")
    prompts = {p.text: p for p in world.prompts()}
    rows = [json.loads(line) for line in (run.dir / "samples.jsonl").read_text().splitlines()]
    assert rows
    for row in rows:  # each logged rollout's score is the labelers' utility of its response
        expected = labelers.score([row["prompt"]], [row["response"]]).item()
        assert prompts[row["prompt"]] and row["score"] == pytest.approx(expected, abs=1e-4)
    assert "labelers reward" in ppo.summary(report) and "oracle" in ppo.summary(report)


def test_bad_reward_settings_fail_before_a_run_directory_exists(rm_ready, tmp_path):
    before = [r.dir for r in list_runs(rm_ready.workspace_dir, "ppo")]
    with pytest.raises(
        ConfigError, match="'ppo.reward' must be one of rm, gold, labelers, got 'judge'"
    ):
        load("micro", workspace=rm_ready.workspace, **{"ppo.reward": "judge"})
    judge = load("micro", workspace=rm_ready.workspace)
    judge.ppo.reward = "judge"  # a config built in code, past load's bounds
    with pytest.raises(RunError, match="ppo.reward='judge': expected one of rm, gold, labelers"):
        ppo.train(judge)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Tell me a joke."}\n')
    overrides = {"ppo.reward": "gold", "ppo.data": str(prompts)}
    with pytest.raises(RunError, match="ppo.reward=gold: the prompts of ppo.data .* no gold"):
        ppo.train(load("micro", workspace=rm_ready.workspace, **overrides))
    assert [r.dir for r in list_runs(rm_ready.workspace_dir, "ppo")] == before
