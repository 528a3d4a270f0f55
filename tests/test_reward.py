"""Stage 2 on the micro recipe: K-wise batching, every parameter changes, demonstration bias."""

from __future__ import annotations

import pytest
import torch

from rlhf import compare, pretrain, reward, sft
from rlhf.config import load
from rlhf.losses import kwise_ranking_loss
from rlhf.runs import read_eval
from rlhf.store import Comparison
from rlhf.world import build_world


@pytest.fixture(scope="module")
def ready(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = load("micro", workspace=str(tmp_path_factory.mktemp("ws")))
    pretrain.train(cfg, progress=False)
    sft.train(cfg, progress=False)
    compare.collect(cfg, progress=False)
    return cfg


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
