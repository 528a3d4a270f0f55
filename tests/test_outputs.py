"""rlhf.outputs (the Compare page and its latency benchmark) and rlhf.catalog (the Runs page)
on the micro pipeline's runs: per-token KL against a plain forward of each sequence, scores
against the reward model and the gold labeler called directly."""

from __future__ import annotations

import pytest
import torch

from rlhf.catalog import runs_frame
from rlhf.generation import generate
from rlhf.models import load_policy
from rlhf.outputs import Judge, frame, policy_runs, reward_runs, side_by_side, token_kl
from rlhf.reward import load_reward_model
from rlhf.world import load_world


@pytest.fixture(scope="module")
def lab(micro_pipeline):
    ws = micro_pipeline.workspace_dir
    runs = {p.kind: p for p in policy_runs(ws)}
    sft = load_policy(runs["SFT"].model_dir)
    ppo = load_policy(runs["PPO"].model_dir)
    rm = load_reward_model(reward_runs(ws)[0].model_dir)
    world = load_world(micro_pipeline)
    return runs, sft, ppo, Judge(sft[0], rm, world), world


def slow_logprobs(model, g, i: int) -> torch.Tensor:
    """log p of row i's response tokens from one unpadded forward of prompt + response."""
    prompt = g.prompt_ids[i][g.prompt_mask[i].bool()]
    n = int(g.response_mask[i].sum())
    response = g.response_ids[i, :n]
    ids = torch.cat([prompt, response])[None]
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1]  # (n, V): predicts each response token
    return torch.log_softmax(logits.float(), -1).gather(-1, response[:, None]).squeeze(-1)


def test_policy_runs_lists_every_kind_in_pipeline_order(lab):
    runs = lab[0]  # micro's pipeline adds DPO, GRPO and PPO-ptx+LoRA (pipeline.extras)
    assert list(runs) == ["base", "SFT", "PPO", "PPO-ptx", "DPO", "GRPO", "PPO-ptx+LoRA"]
    assert all(p.run.done and p.label.startswith(p.kind + " · ") for p in runs.values())
    assert [runs[k].run.stage for k in ("DPO", "GRPO", "PPO-ptx+LoRA")] == ["dpo", "grpo", "ppo"]
    assert runs["DPO"].short.startswith("DPO ") and runs["DPO"].run.dir.name in runs["DPO"].label


def test_token_kl_matches_a_forward_of_each_sequence(lab):
    _, (sft, tok), (ppo, _), _, world = lab
    prompts = [p.text for p in world.prompts("test")[:5]]
    g = generate(ppo, tok, prompts, max_new_tokens=12, seed=3)
    kl = token_kl(ppo, sft, g, tok)  # (5, R)
    assert kl.shape == g.response_ids.shape
    assert (kl[g.response_mask == 0] == 0).all()
    for i in range(len(prompts)):
        want = slow_logprobs(ppo, g, i) - slow_logprobs(sft, g, i)
        n = int(g.response_mask[i].sum())
        torch.testing.assert_close(kl[i, :n], want, atol=1e-4, rtol=1e-4)
    assert token_kl(ppo, None, g, tok) is None


def test_side_by_side_scores_each_output_as_the_judges_do(lab):
    runs, sft, ppo, judge, world = lab
    prompt = world.prompts("test")[0]
    outs = side_by_side({"SFT": sft, "PPO": ppo}, prompt.text, judge, prompt, n=2, seed=5)
    assert [o.policy for o in outs] == ["SFT", "SFT", "PPO", "PPO"]
    scores = judge.reward.score([prompt.text] * 4, [o.text for o in outs])
    for o, s in zip(outs, scores.tolist(), strict=True):
        assert o.score == pytest.approx(s, abs=1e-5)
        j = world.gold.score(prompt, o.text)
        assert (o.likert, o.quality) == (j.likert, j.quality)
        assert o.flags == {k: True for k, v in j.flags.items() if v}
        assert len(o.tokens) == len(o.kl) == o.length
        assert o.kl_total == pytest.approx(sum(o.kl))
    assert all(o.kl_total == 0 for o in outs[:2])  # the reference against itself
    assert len(frame(outs)) == 4


def test_side_by_side_is_repeatable_and_greedy_at_temperature_0(lab):
    _, sft, _, judge, world = lab
    text = world.prompts("test")[1].text
    a = side_by_side({"SFT": sft}, text, judge, n=3, seed=1)
    b = side_by_side({"SFT": sft}, text, judge, n=3, seed=1)
    assert [o.text for o in a] == [o.text for o in b]
    greedy = side_by_side({"SFT": sft}, text, judge, n=3, temperature=0.0, seed=9)
    assert len({o.text for o in greedy}) == 1
    assert all(o.likert is None for o in greedy)  # no world prompt given: no gold judgement
    with pytest.raises(ValueError, match="prompt is empty"):
        side_by_side({"SFT": sft}, "  ", judge)


def test_runs_frame_has_a_row_per_run_with_key_metrics(micro_pipeline):
    df = runs_frame(micro_pipeline.workspace_dir)
    stages = ["pretrain", "sft", "rm", "ppo", "ppo", "dpo", "grpo", "ppo"]
    assert sorted(df["stage"]) == sorted(stages)
    assert (df["status"] == "done").all() and (df["duration_s"] > 0).all()
    ppo = df[df["stage"] == "ppo"]
    assert sorted(ppo["kind"]) == ["PPO", "PPO-ptx", "PPO-ptx+LoRA"]
    assert ppo["win rate vs SFT"].between(0, 1).all()
    extra = df[df["stage"].isin(["dpo", "grpo"])]
    assert sorted(extra["kind"]) == ["DPO", "GRPO"]
    assert extra["win rate vs SFT"].between(0, 1).all() and extra["Likert"].between(1, 7).all()
    assert df.loc[df["stage"] == "rm", "RM acc. (training labelers)"].between(0, 1).all()
