"""Comparison collection on the micro recipe: SFT samples, simulated rankings, the store."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

from rlhf import compare, pretrain, sft
from rlhf.cli import main
from rlhf.config import load
from rlhf.errors import ConfigError, RunError
from rlhf.store import Store


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    torch.set_num_threads(1)
    ws = tmp_path_factory.mktemp("ws")
    cfg = load("micro", workspace=str(ws))
    pretrain.train(cfg, progress=False)
    sft.train(cfg, progress=False)
    return cfg, compare.collect(cfg, progress=False)


def test_compare_needs_an_sft_run(tmp_path):
    with pytest.raises(RunError, match="no finished SFT run"):
        compare.collect(load("micro", workspace=str(tmp_path)), progress=False)


def test_bad_k_range(tmp_path):
    with pytest.raises(ConfigError, match="k_min"):
        compare.collect(load("micro", workspace=str(tmp_path), compare__k_min=1), progress=False)


def test_rankings_stored(collected):
    cfg, report = collected
    with Store.open(cfg) as store:
        rows = store.comparisons(source="simulated")
    assert len(rows) == report["comparisons"] > 0
    k = cfg.compare
    for r in rows:
        assert 2 <= len(r.responses) <= k.k_max
        assert len(set(r.responses)) == len(r.responses)  # identical samples merged
        assert len(r.ranking) == len(r.responses) and min(r.ranking) == 0
        assert len(r.likert) == len(r.responses)
    # Each val prompt has val_sets sample sets, each ranked by every labeler of both groups.
    from rlhf.world import build_world

    world = build_world(cfg, progress=False)
    heldout = {lab.id for lab in world.heldout_labelers}
    everyone = sorted(lab.id for lab in world.labelers + world.heldout_labelers)
    val = [r for r in rows if "-val-" in r.prompt_id]
    assert val and k.val_sets > 1
    sets: dict[tuple, list[str]] = {}
    for r in val:
        sets.setdefault((r.prompt_id, tuple(r.responses)), []).append(r.labeler)
    assert all(sorted(labs) == everyone for labs in sets.values())
    per_prompt = {}
    for pid, _ in sets:
        per_prompt[pid] = per_prompt.get(pid, 0) + 1
    assert max(per_prompt.values()) <= k.val_sets  # (identical sample sets merge)
    assert sum(per_prompt.values()) > len(per_prompt)  # several sets per prompt
    assert not {r.labeler for r in rows if "-train-" in r.prompt_id} & heldout
    assert report["pairs"] == sum(1 for r in rows for _ in r.pairs())
    assert 0.0 <= report["agreement_on_sft_samples"] <= 1.0
    assert "labeler agreement" in compare.summary(report)


def test_export_both_formats(collected, tmp_path, capsys):
    cfg, report = collected
    kw, pairs = tmp_path / "kwise.jsonl", tmp_path / "pairs.jsonl"
    base = ["--workspace", cfg.workspace, "export", "comparisons", "--recipe", "micro"]
    assert main([*base, "--format", "kwise", "--out", str(kw)]) == 0
    assert main([*base, "--format", "pairs", "--out", str(pairs)]) == 0
    krows = [json.loads(x) for x in kw.read_text().splitlines()]
    prows = [json.loads(x) for x in pairs.read_text().splitlines()]
    assert len(krows) == report["comparisons"] and len(prows) == report["pairs"]
    assert set(krows[0]) >= {"prompt", "responses", "ranking"}
    assert set(prows[0]) == {"prompt", "chosen", "rejected"}


def test_second_collection_reuses_the_store_unless_forced(collected):
    cfg, report = collected
    again = compare.collect(cfg, progress=False)
    assert again["reused"] and not report["reused"]
    with Store.open(cfg) as store:
        assert store.count("simulated") == report["comparisons"]  # nothing added
    # The summary is re-measured from the stored rows: the same figures.
    for key in ("comparisons", "pairs", "mean_k", "agreement_on_sft_samples", "agreement_pairs"):
        assert again[key] == report[key], key
    assert "reusing stored comparisons" in compare.summary(again)
    assert again["skipped_identical"] is None and "prompts skipped" not in compare.summary(again)
    assert isinstance(report["skipped_identical"], int) and "prompts skipped" in compare.summary(
        report
    )


class _Labeler:
    """Ranks responses by a fixed order: `flip` reverses it (rank 0 = best)."""

    def __init__(self, id_: str, flip: bool = False, ties: bool = False):
        self.id, self.flip, self.ties = id_, flip, ties

    def rank(self, prompt, responses, gold):
        if self.ties:
            return [0] * len(responses)  # no strict preference: no pair counts
        order = list(range(len(responses)))
        return order[::-1] if self.flip else order


class _World:
    def __init__(self, labelers, heldout):
        self.labelers, self.heldout_labelers, self.gold = labelers, heldout, None
        self._prompts = [type("P", (), {"id": f"arith-train-{i}"})() for i in range(3)]

    def prompts(self, split):
        return self._prompts if split == "train" else []


def test_agreement_is_the_mean_over_every_two_training_labelers():
    from rlhf.store import Comparison

    world = _World([_Labeler("a"), _Labeler("b", flip=True), _Labeler("c")], [_Labeler("h")])
    rows = [
        Comparison(
            prompt="q",
            responses=["x", "y", "z"],
            ranking=[0, 1, 2],
            labeler="a",
            prompt_id=f"arith-train-{i}",
        )
        for i in range(3)
    ] + [
        Comparison(
            prompt="q", responses=["x", "y"], ranking=[0, 1], labeler="a", prompt_id="arith-val-0"
        )
    ]  # not a train prompt: left out
    got = compare.labeler_agreement(world, rows, n_prompts=2)
    # a-b disagree on every pair, a-c agree on every one, b-c disagree: (0 + 1 + 0) / 3
    assert got["train_train"] == pytest.approx(1 / 3)
    assert got["train_train_sd"] == pytest.approx(3**-0.5)  # stdev of (0, 1, 0)
    assert got["train_heldout"] == pytest.approx(2 / 3)  # h orders as a and c, not as b
    assert got["labeler_pairs"] == 3 and got["pairs"] == 2 * 3  # 2 prompts x C(3, 2)
    world.heldout_labelers = [_Labeler("t", ties=True)]  # ties give no pair: unmeasured, not 0
    assert math.isnan(compare.labeler_agreement(world, rows, 5)["train_heldout"])


def test_more_train_sets_add_train_rankings_and_keep_the_val_comparisons(collected, tmp_path):
    """compare.train_sets=2: every train prompt gets a second sample set, ranked by a labeler
    drawn for it, sampled after the val sets, so the first train set and the val comparisons
    (what RM accuracy is measured on) are those of train_sets=1."""
    cfg, _ = collected
    cfg2, report, one, two = _collect_in_a_copy(cfg, tmp_path, **{"compare.train_sets": 2})

    train1 = [key(r) for r in one if "-train-" in r.prompt_id]
    train2 = [key(r) for r in two if "-train-" in r.prompt_id]
    assert [key(r) for r in one if "-val-" in r.prompt_id] == [
        key(r) for r in two if "-val-" in r.prompt_id
    ]
    assert train2[: len(train1)] == train1  # the first set as before
    extra = train2[len(train1) :]
    assert len(train1) < len(train2) <= 2 * len(train1) + 1  # a set of identical samples drops
    assert {k[0] for k in extra} <= {k[0] for k in train1}  # the same prompts, sampled again
    assert extra != train1[: len(extra)]  # new samples
    assert report["by_split"]["train"] == len(train2)
    assert 1.5 < report["train_sets"] <= 2.0 and "note " not in compare.summary(report)
    # a store collected with fewer sets than asked for is reused, and the summary says so
    again = compare.collect(
        load("micro", workspace=cfg2.workspace, **{"compare.train_sets": 4}), progress=False
    )
    assert again["reused"] and again["comparisons"] == report["comparisons"]
    assert "compare.train_sets is 4" in compare.summary(again)
    with pytest.raises(ConfigError, match="'compare.train_sets' must be >= 1, got 0"):
        load("micro", workspace=cfg2.workspace, **{"compare.train_sets": 0})
    zero = load("micro", workspace=cfg2.workspace)
    zero.compare.train_sets = 0  # a config built in code, past load's bounds
    with pytest.raises(ConfigError, match="train_sets=0"):
        compare.collect(zero)


def test_rl_sets_add_rankings_of_the_rl_prompts_and_keep_every_other_comparison(
    collected, tmp_path
):
    """compare.rl_sets=2: each prompt of the world's rl split (micro: world.rl_per_family=40)
    gets two sample sets, each ranked by one training labeler, sampled after every other set:
    the train and val comparisons are those without them, and the RM trains on both."""
    from rlhf.reward import split_comparisons
    from rlhf.world import build_world

    cfg, _ = collected
    cfg2, report, one, two = _collect_in_a_copy(cfg, tmp_path, **{"compare.rl_sets": 2})

    world = build_world(cfg2, progress=False)
    rl_ids = {p.id for p in world.prompts("rl")}
    assert rl_ids
    assert [key(r) for r in two if r.prompt_id not in rl_ids] == [key(r) for r in one]
    added = [r for r in two if r.prompt_id in rl_ids]
    assert len(added) == len(two) - len(one) and len(added) > len(rl_ids)  # about 2 a prompt
    assert {r.prompt_id for r in added} <= rl_ids
    assert {r.labeler for r in added} <= {lab.id for lab in world.labelers}  # one, a training one
    assert report["by_split"]["rl"] == len(added)
    assert report["train_sets"] == compare.collect(cfg, progress=False)["train_sets"]
    heldout = {lab.id for lab in world.heldout_labelers}
    trains_on = {r.prompt_id for r in split_comparisons(two, heldout)["train"]}
    assert rl_ids & trains_on == {r.prompt_id for r in added}
    assert ", rl " in compare.summary(report)
    # A store without them is reused, and the summary says so.
    again = compare.collect(
        load("micro", workspace=cfg.workspace, **{"compare.rl_sets": 1}), progress=False
    )
    assert again["reused"] and "compare.rl_sets is 1" in compare.summary(again)


def test_extra_response_joins_every_training_set_and_no_validation_set(collected, tmp_path):
    """compare.extra_response: the fixed answer is one more response in every train sample set,
    ranked by that set's labeler with the samples (so it sits above a sampled answer the labeler
    likes less); the validation sets, which measure the RM, stay the SFT model's samples."""
    from rlhf.world import build_world

    cfg, _ = collected
    idk = "I don't know."
    cfg2, report, one, two = _collect_in_a_copy(cfg, tmp_path, **{"compare.extra_response": idk})
    world = build_world(cfg2, progress=False)
    by_id = {p.id: p for split in ("train", "val") for p in world.prompts(split)}
    labelers = {lab.id: lab for lab in world.labelers + world.heldout_labelers}

    assert [key(r) for r in two if "-val-" in r.prompt_id] == [
        key(r) for r in one if "-val-" in r.prompt_id
    ]
    train_one = [r for r in one if "-train-" in r.prompt_id]
    train_two = [r for r in two if "-train-" in r.prompt_id]
    assert len(train_two) >= len(train_one) and train_two
    assert all(r.responses.count(idk) == 1 for r in train_two)
    # The same samples as without it, the fixed answer last unless the model sampled it; a
    # set of one distinct sample, skipped before, is now compared with it.
    want = Counter(
        (r.prompt_id, tuple(r.responses + ([] if idk in r.responses else [idk]))) for r in train_one
    )
    got = Counter((r.prompt_id, tuple(r.responses)) for r in train_two)
    assert all(got[k] >= n for k, n in want.items())
    for r in train_two:
        p, lab = by_id[r.prompt_id], labelers[r.labeler]
        assert r.ranking == lab.rank(p, r.responses, world.gold)  # ranked with the samples
    # It is ranked: above some sampled answer somewhere, below one elsewhere.
    places = [r.ranking[r.responses.index(idk)] for r in train_two]
    assert any(x == 0 for x in places) and any(x > 0 for x in places)
    assert report["by_split"]["train"] == len(train_two)
    # Empty, it is left out of a run's saved config, so runs made before the field still match.
    from rlhf.runs import saved_config

    assert "extra_response" not in saved_config(cfg, "rm")["compare"]
    assert saved_config(cfg2, "rm")["compare"]["extra_response"] == idk


def key(r):
    """What makes a stored comparison the same one."""
    return (r.prompt_id, tuple(r.responses), tuple(r.ranking), r.labeler)


def _collect_in_a_copy(cfg, tmp_path, **overrides):
    """compare.collect in a copy of `cfg`'s workspace without its store, with `overrides`:
    (its config, report, the original store's comparisons, the copy's)."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(cfg.workspace_dir, ws, ignore=shutil.ignore_patterns("lab.db*"))
    cfg2 = load("micro", workspace=str(ws), **overrides)
    report = compare.collect(cfg2, progress=False)
    with Store.open(cfg) as a, Store.open(cfg2) as b:
        return cfg2, report, list(a.comparisons()), list(b.comparisons())
