"""Stage 2 on the micro recipe: K-wise batching, every parameter changes, demonstration bias."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_resumed, micro_workspace

from rlhf import packing, pretrain, reward, sft
from rlhf.config import load
from rlhf.errors import RunError
from rlhf.losses import kwise_ranking_loss
from rlhf.runs import read_eval
from rlhf.store import Comparison, Store
from rlhf.world import build_world


@pytest.fixture(scope="module")
def ready(tmp_path_factory):
    return micro_workspace(tmp_path_factory.mktemp("ws"), with_rm=False)


def test_collator_forwards_each_response_once_and_scatters_back():
    class Tok:
        eos_token_id, pad_token_id = 1, 0

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[2 + len(t)] for t in texts]}

    batch = [
        Comparison("p1", ["a", "bb", "ccc"], [0, 1, 1], "x"),
        Comparison("p2", ["dddd", "e", "ff", "g", "hh"], [2, 0, 1, 3, 4], "x"),
    ]
    out = reward.KwiseCollator(Tok(), 16)(batch)
    assert out["input_ids"].shape[0] == 8  # 3 + 5 responses, each once
    assert out["ranks"].tolist() == [[0, 1, 1, -1, -1], [2, 0, 1, 3, 4]]
    flat = torch.arange(8, dtype=torch.float)
    slots = reward.rewards_by_rank_slot(flat, out["ranks"])
    assert slots.tolist() == [[0, 1, 2, 0, 0], [3, 4, 5, 6, 7]]
    # The loss on scattered rewards equals the loss computed per prompt.
    per_prompt = [
        kwise_ranking_loss(slots[:1, :3], out["ranks"][:1, :3]),
        kwise_ranking_loss(slots[1:], out["ranks"][1:]),
    ]
    assert torch.allclose(kwise_ranking_loss(slots, out["ranks"]), sum(per_prompt) / 2)


def test_reward_model_end_to_end_with_demo_bias(ready):
    run = reward.train(ready, progress=False)
    report = read_eval(run)
    assert abs(report["demo_mean_after_bias"]) < 1e-3
    for name in ("train", "val_train_labelers", "val_heldout_labelers"):
        assert report[f"pairs/{name}"] > 0 and 0 <= report[f"accuracy/{name}"] <= 1
    rm = reward.load_reward_model(run.model_dir)
    assert rm.bias == pytest.approx(report["bias"])
    demos = build_world(ready, progress=False).demonstrations("train")
    scores = rm.score([d.prompt for d in demos], [d.response for d in demos])
    assert abs(float(scores.mean())) < 1e-3  # the saved bias reproduces mean 0
    assert "demonstration mean" in reward.summary(report)
    assert "held-out accuracy by family" in reward.summary(report)
    for checking in report["answer_checking"].values():  # empty if no such pair on micro
        assert checking["pairs"] > 0 and 0 <= checking["rm"] <= 1 and 0 <= checking["labelers"] <= 1


def test_every_parameter_changes_after_one_step(ready, tmp_path):
    from transformers import AutoModelForSequenceClassification

    cfg = load("micro", workspace=ready.workspace, rm__max_steps=2)  # step 0: warm-up lr is 0
    run = reward.train(cfg, run_dir=tmp_path / "one", progress=False)
    start = AutoModelForSequenceClassification.from_pretrained(
        str(reward.sft_model_dir(cfg)), num_labels=1
    )
    after = reward.load_reward_model(run.model_dir).model
    before = dict(start.named_parameters())
    unchanged = [
        n for n, p in after.named_parameters() if n in before and torch.equal(p, before[n])
    ]
    assert not unchanged
    assert "score.weight" in dict(after.named_parameters())


def test_pair_frame_agrees_with_accuracy_and_groups(ready):
    run = reward.train(ready, progress=False)
    rm = reward.load_reward_model(run.model_dir)
    world = build_world(ready, progress=False)
    heldout = {lab.id for lab in world.heldout_labelers}
    with Store.open(ready) as store:
        data = reward.split_comparisons(store.comparisons(source="simulated"), heldout)
    rows = data["val_train_labelers"] + data["val_heldout_labelers"]
    pairs = reward.pair_frame(rm, rows, heldout)
    assert len(pairs) == sum(1 for c in rows for _ in c.pairs())
    assert set(pairs["group"]) == {"training", "held-out"}
    acc, n = reward.accuracy(rm, data["val_heldout_labelers"])
    held = pairs[pairs["group"] == "held-out"]
    assert len(held) == n and held["correct"].mean() == pytest.approx(acc, abs=1e-6)
    assert (pairs["margin"] == pairs["r_chosen"] - pairs["r_rejected"]).all()
    by_family = reward.accuracy_by(pairs, "family")
    assert by_family["pairs"].sum() == len(pairs)
    assert set(by_family["family"]) <= {p.family for p in world.prompts("val")}
    assert set(read_eval(run)["accuracy_by_family"]) == set(by_family["family"])


def test_human_comparisons_join_training_only_when_asked(ready, tmp_path):
    world = build_world(ready, progress=False)
    p = world.prompts("train")[0]
    human = Comparison(
        p.text,
        ["first answer", "second answer", "third"],
        [0, 2, 1],
        "ann",
        source="human",
        prompt_id=p.id,
    )
    cfg = load("micro", workspace=ready.workspace, rm__with_human=True)
    with pytest.raises(RunError, match="rm.with_human: no hand rankings in .* yet"):
        reward.train(cfg, run_dir=tmp_path / "none", progress=False)  # the same RM as without
    assert not (tmp_path / "none").exists()
    with Store.open(ready) as store:
        store.add_comparisons([human])
        rows = store.comparisons(source="simulated")
    run = reward.train(cfg, run_dir=tmp_path / "human", progress=False)
    report = read_eval(run)
    assert report["comparisons/train"] == 1 + len(
        reward.split_comparisons(rows, {lab.id for lab in world.heldout_labelers})["train"]
    )
    with Store.open(ready) as store:
        store.undo_last("ann")


def test_interrupted_rm_resumes_from_its_checkpoint(ready, tmp_path, interrupt_after):
    every = ready.rm.checkpoint_every
    with interrupt_after(every):
        reward.train(ready, run_dir=tmp_path / "r", progress=False)
    resume = lambda: reward.train(ready, run_dir=tmp_path / "r", progress=False)  # noqa: E731
    assert_resumed(reward.Run.open(tmp_path / "r"), every, ready.rm.max_steps, resume)


def test_rm_needs_comparisons(tmp_path):
    cfg = load("micro", workspace=str(tmp_path))
    pretrain.train(cfg, progress=False)
    sft.train(cfg, progress=False)
    with pytest.raises(RunError, match="rlhf compare --recipe micro"):
        reward.train(cfg, progress=False)


def test_loading_a_broken_reward_model_names_the_directory(tmp_path):
    with pytest.raises(RunError, match="not a reward model"):
        reward.load_reward_model(tmp_path)
    (tmp_path / reward.BIAS_FILE).write_text("{not json")
    with pytest.raises(RunError, match=f"{tmp_path}: cannot load the reward model"):
        reward.load_reward_model(tmp_path)


def test_a_reward_model_with_cut_weights_is_one_line(rm_ready, tmp_path):
    """A SafetensorError traceback before (a killed copy, a full disk)."""
    import shutil

    from rlhf import ppo

    _, rm_run = ppo.source_runs(rm_ready)
    shutil.copytree(rm_run.model_dir, tmp_path / "rm")
    weights = tmp_path / "rm" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    with pytest.raises(RunError, match=r"cannot load the reward model \(SafetensorError: "):
        reward.load_reward_model(tmp_path / "rm")


def test_comparisons_of_another_world_are_left_out(ready, tmp_path):
    import json

    with Store.open(ready) as store:
        rows = store.comparisons(source="simulated")
    other = tmp_path / "other_sft"
    other.mkdir()
    saved = json.loads((Path(rows[0].policy) / "config.json").read_text())
    saved["world"]["seed"] += 1
    (other / "config.json").write_text(json.dumps(saved))
    foreign = [
        Comparison(
            c.prompt, c.responses, c.ranking, c.labeler, prompt_id=c.prompt_id, policy=str(other)
        )
        for c in rows[:3]
    ]
    gone = Comparison("p", ["a", "b"], [0, 1], "ann", policy=str(tmp_path / "deleted"))
    human = Comparison("p", ["a", "b"], [0, 1], "ann", source="human")
    kept, skipped = reward.same_world_comparisons([*rows, *foreign, gone, human], ready)
    assert kept == [*rows, human]
    assert skipped == {"other world": 3, "policy run missing": 1}


def test_same_config_and_seed_give_the_same_reward_model(ready, tmp_path):
    runs = [reward.train(ready, run_dir=tmp_path / name, progress=False) for name in "ab"]
    a, b = (reward.load_reward_model(r.model_dir).model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the new score head is seeded too
    assert read_eval(runs[0])["accuracy/train"] == read_eval(runs[1])["accuracy/train"]


def test_encode_pairs_scores_generated_text_as_the_stored_response(ready):
    """Generated text starts with its own space; the RM must see what training saw (stored,
    stripped responses), not a second space token."""
    tok = build_world(ready, progress=False).tokenizer()
    a = reward.encode_pairs(tok, ["Q: hi\nA:"], [" The answer is 4. "], 64)
    b = reward.encode_pairs(tok, ["Q: hi\nA:"], ["The answer is 4."], 64)
    assert torch.equal(a["input_ids"], b["input_ids"])


@pytest.mark.parametrize("row", [packing.PACK_ROW, 1])  # 1: one sequence per row
def test_packed_scores_equal_a_padded_forward(ready, row, monkeypatch):
    """RewardModel.score packs each batch end to end (rlhf.packing); the reward of every
    (prompt, response) must be what a right-padded batch reads at its last non-pad token."""
    run = reward.train(ready, progress=False)
    rm = reward.load_reward_model(run.model_dir)
    demos = build_world(ready, progress=False).demonstrations("train")[:40]
    prompts, responses = (
        [d.prompt for d in demos],
        [d.response + " and more" * (i % 4) for i, d in enumerate(demos)],
    )
    monkeypatch.setattr(packing, "PACK_ROW", row)
    got = rm.score(prompts, responses, batch_size=16)  # batches of 16, 16, 8
    enc = reward.encode_pairs(rm.tokenizer, prompts, responses, rm.max_length)
    assert len(set(enc["attention_mask"].sum(1).tolist())) > 5  # lengths differ
    with torch.no_grad():
        want = rm.model(**enc).logits.squeeze(-1) + rm.bias
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(packing, "PACKABLE", frozenset())  # the padded path agrees too
    torch.testing.assert_close(rm.score(prompts, responses), want, atol=1e-5, rtol=1e-5)


def arithmetic_answers(world):
    """A validation sum and three answers to it: (prompt, right, wrong, another wrong)."""
    p = world.prompts("val", "arithmetic")[0]
    answers = [f"The answer is {p.meta['answer'] + d}." for d in (0, 1, 2)]
    return p, *answers


def test_gold_ceiling_counts_pairs_the_gold_labeler_orders_as_the_labeler_did(ready):
    world = build_world(ready, progress=False)
    p, right, wrong, also_wrong = arithmetic_answers(world)
    rows = [
        Comparison(p.text, [right, wrong], [0, 1], "a", "simulated", prompt_id=p.id),  # agrees
        Comparison(p.text, [right, wrong], [1, 0], "b", "simulated", prompt_id=p.id),  # disagrees
        Comparison(p.text, [wrong, also_wrong], [0, 1], "c", "simulated", prompt_id=p.id),  # tie
        Comparison(p.text, [right, wrong], [0, 0], "d", "simulated", prompt_id=p.id),  # no pair
        Comparison("typed", ["x", "y"], [0, 1], "e", "human"),  # no gold answer: left out
    ]
    assert reward.gold_accuracy(world, rows) == (pytest.approx((1 + 0 + 0.5) / 3), 3)
    report = read_eval(reward.train(ready, progress=False))
    assert 0.5 <= report["gold_ceiling/val_heldout_labelers"] <= 1.0
    assert "gold labeler:" in reward.summary(report)


def test_answer_checking_counts_pairs_of_one_right_and_one_wrong_answer(ready):
    import pandas as pd

    world = build_world(ready, progress=False)
    p, right, wrong, also_wrong = arithmetic_answers(world)
    rows = [
        Comparison(p.text, [right, wrong], [0, 1], "a", "simulated", prompt_id=p.id),
        Comparison(p.text, [right, wrong], [1, 0], "b", "simulated", prompt_id=p.id),
        Comparison(p.text, [wrong, also_wrong, right], [0, 1, 2], "c", "simulated", prompt_id=p.id),
    ]
    # pair_frame's order: (right > wrong), (wrong > right), then (wrong > also_wrong),
    # (wrong > right), (also_wrong > right). Margins are r_chosen - r_rejected.
    pairs = pd.DataFrame({"family": ["arithmetic"] * 5, "margin": [1.0, 1.0, 5.0, -2.0, 0.0]})
    got = reward.answer_checking(world, rows, pairs).set_index("family")
    # Right-vs-wrong pairs: 1 (RM right), 2 (RM picks the wrong one), 4 (RM right: the
    # rejected right answer scores higher), 5 (a tie: half). Pair 3 has no right answer.
    assert got.loc["arithmetic", "pairs"] == 4
    assert got.loc["arithmetic", "rm"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert got.loc["arithmetic", "labelers"] == pytest.approx(1 / 4)  # only pair 1 chose right
    assert got.loc["all"].tolist() == pytest.approx([2.5 / 4, 1 / 4, 4])
    with pytest.raises(ValueError, match="ranked pairs"):
        reward.answer_checking(world, rows, pairs.iloc[:4])
    only_wrong = [Comparison(p.text, [wrong, also_wrong], [0, 1], "d", "simulated", prompt_id=p.id)]
    none = reward.answer_checking(world, only_wrong, pairs.iloc[:1])
    assert none.empty and list(none.columns) == ["family", "rm", "labelers", "pairs"]
    summary = reward.summary(
        {"demo_mean_after_bias": 0.0, "bias": 0.0, "wall_time_s": 1.0}
        | {"answer_checking": {"all": {"rm": 0.5, "labelers": 0.9, "pairs": 10}}}
    )
    assert "right vs wrong answer          RM 50% (labelers 90%) on 10 pairs" in summary
    frame = reward.answer_checking_of(
        {"answer_checking": {"all": {"rm": 0.5, "labelers": 0.9, "pairs": 10}}}
    )
    assert frame.to_dict("records") == [{"family": "all", "rm": 0.5, "labelers": 0.9, "pairs": 10}]
    assert reward.answer_checking_of({}).empty


def test_a_moved_workspace_keeps_its_comparisons(tmp_path):
    """The store names each comparison's SFT run by absolute path; after the workspace is
    moved, the run of that name in the new place is found, so no comparison is dropped."""
    orig = micro_workspace(tmp_path / "orig", with_rm=False)
    before, _ = reward.training_comparisons(orig)
    (tmp_path / "orig").rename(tmp_path / "moved")
    after, skipped = reward.training_comparisons(load("micro", workspace=str(tmp_path / "moved")))
    assert len(after) == len(before) > 0
    assert skipped["policy run missing"] == 0
