"""Comparison collection on the micro recipe: SFT samples, simulated rankings, the store."""

from __future__ import annotations

import json

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
