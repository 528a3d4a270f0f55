"""DPO and GRPO (beyond the paper) on the micro recipe: a few steps each, every trainable
parameter changed (TRL's test), the run done with model/ saved, and a row of `rlhf eval`."""

from __future__ import annotations

import re

import pytest
import torch

from rlhf import dpo, grpo
from rlhf.callbacks import TRL_DEPRECATION
from rlhf.models import load_policy
from rlhf.results import evaluate_runs, label_of
from rlhf.runs import find_done, read_eval


@pytest.mark.parametrize(("module", "label"), [(dpo, "DPO"), (grpo, "GRPO")])
def test_stage_trains_every_parameter_and_is_a_results_row(rm_ready, module, label, recwarn):
    cfg = rm_ready
    sft = find_done(cfg, "sft", ("world", "pretrain", "sft"))
    before, _ = load_policy(sft.model_dir)

    run = module.train(cfg, progress=False)

    # TRL's use of a deprecated transformers property is not the user's to act on: silenced
    # (it printed 14 times in `make demo`). Any other warning still shows.
    said = [str(w.message) for w in recwarn.list]
    assert not [m for m in said if re.search(TRL_DEPRECATION, m)]

    assert run.done and (run.model_dir / "config.json").exists()
    report = read_eval(run)
    assert report["steps"] > 0 and 0.0 <= report["win_rate_vs_sft"]["mean"] <= 1.0
    # Its sample answers are filed under the test prompts they answer.
    from rlhf.pretrain import pick_eval_prompts
    from rlhf.world import build_world

    shown = [p.text for p in pick_eval_prompts(build_world(cfg, progress=False), 8)]
    assert [s["prompt"] for s in report["samples"]] == shown[: len(report["samples"])]
    after, _ = load_policy(run.model_dir)
    old = dict(before.named_parameters())
    trainable = [(n, p) for n, p in after.named_parameters() if p.requires_grad]
    assert trainable and {n for n, _ in trainable} == set(old)
    for name, p in trainable:
        assert not torch.equal(p, old[name]), f"{name} did not change"
    assert any("train/loss" in r for r in run.metrics())
    if module is grpo:  # sized as PPO: rollouts x (epochs x minibatches) gradient steps
        g = cfg.grpo
        assert report["steps"] == g.steps * g.grpo_epochs * g.batch_size // g.mini_batch_size
        # Its rollouts draw from PPO's prompts: the train prompts and micro's rl split.
        world = build_world(cfg, progress=False)
        assert report["rollout_prompts"] == len(world.rl_prompts()) > len(world.prompts("train"))
        assert any("objective/scores" in r and "objective/kl" in r for r in run.metrics())
    else:
        assert any("dpo/accuracy" in r for r in run.metrics())
    assert label_of(run) == label
    assert module.train(cfg, run_dir=run.dir, progress=False).dir == run.dir  # done: reused

    res = evaluate_runs(cfg, [sft.dir, run.dir], progress=False)
    assert res["labels"] == ["SFT", label]
    row = res["rows"][label]
    assert row["win_rate"]["n"] == res["n_test_prompts"] and 0.0 <= row["win_rate"]["mean"] <= 1
    assert {"likert", "perplexity", "fact_cloze"} <= set(row)


def test_other_stages_ignore_the_dpo_and_grpo_sections(tmp_path):
    """A run made before these sections existed (or with other DPO/GRPO settings) is still the
    same config for the other stages: reused, resumable."""
    from rlhf import config
    from rlhf.runs import Run, latest_done, write_json

    cfg = config.load("micro", workspace=str(tmp_path))
    run = Run.create(cfg, "sft")
    old = run.raw_config()
    del old["dpo"], old["grpo"]
    write_json(run.dir / "config.json", old)
    run.set_status("done")
    changed = config.load("micro", workspace=str(tmp_path), dpo__beta=0.5, grpo__steps=3)
    assert latest_done(changed, "sft").dir == run.dir
    assert Run.create_or_resume(changed, "sft", run.dir).dir == run.dir
    assert latest_done(changed, "dpo") is None


def test_grpo_rejects_sizes_that_split_a_group_before_making_a_run(tmp_path):
    from rlhf import config
    from rlhf.errors import ConfigError

    cfg = config.load("micro", workspace=str(tmp_path), grpo__num_generations=3)
    with pytest.raises(ConfigError, match="multiple of num_generations"):
        grpo.train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_dpo_run_is_stale_once_the_comparisons_change(rm_ready, tmp_path):
    """Another collection round (a new comparison in the store) is new data for DPO, as for
    the RM: the finished run is not reused."""
    from conftest import copy_workspace

    from rlhf.pipeline import finished_run
    from rlhf.reward import training_comparisons
    from rlhf.store import Comparison, Store
    from rlhf.world import build_world

    cfg = copy_workspace(rm_ready, tmp_path / "ws")
    run = dpo.train(cfg, progress=False)
    assert finished_run(dpo, cfg, "dpo")[0].dir == run.dir
    rows = training_comparisons(cfg)[0]
    c = dpo.training_rows(cfg, build_world(cfg, progress=False), rows)[0][0]
    again = Comparison(c.prompt, c.responses, c.ranking, c.labeler, prompt_id=c.prompt_id)
    again.policy = c.policy
    with Store.open(cfg) as store:
        store.add_comparisons([again])
    reuse, message = finished_run(dpo, cfg, "dpo")
    assert reuse is None and "comparisons changed" in message
