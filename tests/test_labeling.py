"""rlhf.labeling (the Rank page's logic, notebook 06): drawing samples, turning the form into a
stored comparison, agreement with the simulated and gold labelers, and hand rankings training
(train prompts) and testing (val prompts) the next reward model."""

from __future__ import annotations

import random

import pytest
from conftest import copy_workspace

from rlhf import reward
from rlhf.config import load
from rlhf.errors import StoreError
from rlhf.labeling import (
    FLAGS,
    Sample,
    agreement_with_simulated,
    dense_ranks,
    draw_samples,
    human_accuracy,
    likert_conflicts,
    rm_group_accuracy,
    submission,
    submit,
)
from rlhf.models import load_policy
from rlhf.outputs import policy_runs, reward_runs
from rlhf.runs import read_eval
from rlhf.store import Store
from rlhf.world import load_world


@pytest.fixture(scope="module")
def models(micro_pipeline):
    runs = {p.kind: p for p in policy_runs(micro_pipeline.workspace_dir)}
    return {kind: load_policy(runs[kind].model_dir) for kind in ("SFT", "PPO")}


@pytest.mark.parametrize(
    ("ranks", "dense"),
    [([1, 2, 2, 4], [0, 1, 1, 2]), ([3, 1, 2], [2, 0, 1]), ([1, 1], [0, 0]), ([2.0, 1], [1, 0])],
)
def test_dense_ranks(ranks, dense):
    assert dense_ranks(ranks, len(ranks)) == dense


@pytest.mark.parametrize(
    ("ranks", "message"),
    [
        ([1, None, 2], "response 2 has no rank"),
        ([1, 2, 4], "response 3 has rank 4; ranks run from 1"),
        ([0, 1, 2], "response 1 has rank 0"),
        ([1, 1.5, 2], "response 2 has rank 1.5, not a whole number"),
        ([1, "2", 3], "response 2 has rank '2'"),
        ([2, 2, 3], "no response has rank 1"),
        ([1, 2], "2 ranks for 3 responses"),
    ],
)
def test_dense_ranks_rejects_an_incomplete_or_impossible_ranking(ranks, message):
    with pytest.raises(StoreError, match=message):
        dense_ranks(ranks, 3)


def test_draw_samples_mixes_policies_and_never_repeats_a_response(micro_pipeline, models):
    prompt = load_world(micro_pipeline).prompts("train")[0].text
    samples = draw_samples(models, prompt, k=6, seed=0)
    assert len(samples) == 6 and len({s.text for s in samples}) == 6
    assert {s.policy for s in samples} == {"SFT", "PPO"}
    again = draw_samples(models, prompt, k=6, seed=0)
    assert [s.text for s in again] == [s.text for s in samples]  # same seed, same samples
    with pytest.raises(ValueError, match=r"K must be 4..9"):
        draw_samples(models, prompt, k=3)


def test_submission_records_likert_flags_and_policies():
    samples = [Sample("a", "SFT"), Sample("b", "PPO"), Sample("c", "SFT")]
    flags = [{"toxic": True}, {}, {"hallucination": True, "rambles": True}]
    rec = submission("Q: x\nA:", samples, [2, 1, 2], " ann ", [3, 6, 5], flags, "facts-val-0001")
    assert rec.ranking == [1, 0, 1] and rec.labeler == "ann" and rec.source == "human"
    assert rec.policy == "mix: PPO, SFT"
    assert rec.flags[0] == {**dict.fromkeys(FLAGS, False), "toxic": True, "policy": "SFT"}
    assert rec.flags[2]["hallucination"] and rec.flags[2]["rambles"]
    assert likert_conflicts(rec) == []
    swapped = submission("Q: x\nA:", samples, [1, 2, 3], "ann", [3, 6, 5])
    assert likert_conflicts(swapped) == [(1, 2), (1, 3)]  # 1 above 2 and 3, with a lower Likert
    with pytest.raises(StoreError, match="enter your name"):
        submission("Q", samples, [1, 2, 3], "  ")
    with pytest.raises(StoreError, match="field 'likert'"):
        submission("Q", samples, [1, 2, 3], "ann", likert=[1, 2, 8])


def test_agreement_with_simulated_and_gold_labelers(micro_pipeline):
    world = load_world(micro_pipeline)
    prompt = next(p for p in world.prompts("val") if p.family == "arithmetic")
    answer = prompt.meta["answer"]
    responses = [f" It is {answer}.", f" It is {answer + 1}.", " I like turtles."]
    q = [world.gold.score(prompt, r).quality for r in responses]
    assert q[0] > q[1] and q[0] > q[2]
    order = sorted(range(3), key=lambda i: -q[i])
    gold_ranks = [order.index(i) for i in range(3)]
    rows = [
        submission(
            prompt.text,
            [Sample(r, "SFT") for r in responses],
            [r + 1 for r in ranks],
            name,
            prompt_id=prompt.id,
        )
        for name, ranks in (("ann", gold_ranks), ("bob", [2 - r for r in gold_ranks]))
    ]
    rows.append(submission("Q: typed\nA:", [Sample("x", "SFT"), Sample("y", "SFT")], [1, 2], "ann"))
    table = agreement_with_simulated(world, rows).set_index("labeler")
    assert table.loc["ann", "comparisons"] == 1  # the typed prompt has no simulated judgement
    assert table.loc["ann", "gold_agreement"] == 1.0 and table.loc["bob", "gold_agreement"] == 0.0
    assert 0.0 <= table.loc["bob", "agreement"] < table.loc["ann", "agreement"] <= 1.0


def test_hand_rankings_train_and_test_the_next_reward_model(micro_pipeline, tmp_path):
    """rlhf rm --with-human: hand rankings of train prompts join training, those of val prompts
    are tested on (accuracy/val_human), and the RM before them scores them as well."""
    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    world = load_world(cfg)
    rm_before = reward.load_reward_model(reward_runs(cfg.workspace_dir)[0].model_dir)
    records = []
    for split in ("train", "val"):
        for p in world.prompts(split)[:4]:
            responses = world.candidates(p, 4, random.Random(p.id))
            scores = rm_before.score([p.text] * len(responses), responses).tolist()
            ranks = [sorted(scores, reverse=True).index(s) + 1 for s in scores]  # RM's order
            samples = [Sample(r, "world") for r in responses]
            records.append(submission(p.text, samples, ranks, "ann", prompt_id=p.id))
    with Store.open(cfg) as store:
        for rec in records:
            submit(store, rec)
        human = store.comparisons(source="human")
    before = human_accuracy(rm_before, human).set_index("name")
    assert before.loc["all hand rankings", "value"] == 1.0  # ranked in the RM's own order

    simulated_train = read_eval(reward_runs(cfg.workspace_dir)[0])["comparisons/train"]
    run = reward.train(
        load("micro", workspace=str(cfg.workspace_dir), rm__with_human=True), progress=False
    )
    report = read_eval(run)
    assert report["comparisons/train"] == simulated_train + 4
    assert report["comparisons/val_human"] == 4 and 0 <= report["accuracy/val_human"] <= 1
    groups = rm_group_accuracy(report)
    assert "RM · hand rankings (held-out prompts)" in set(groups["name"])
