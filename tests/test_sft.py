"""Stage 1 on the micro recipe: runs end to end, changes every parameter, needs a base run."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_resumed

from rlhf import pretrain, sft
from rlhf.config import load
from rlhf.errors import RunError
from rlhf.models import load_policy
from rlhf.runs import read_eval


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = load("micro", workspace=str(tmp_path_factory.mktemp("ws")))
    return cfg, pretrain.train(cfg, progress=False)


def test_sft_needs_a_pretrained_base(tmp_path):
    with pytest.raises(RunError, match="no finished pretrain run"):
        sft.train(load("micro", workspace=str(tmp_path)), progress=False)
    assert not (tmp_path / "runs").exists()  # it left a failed SFT run per try
    changed = load("micro", ["pretrain.lr=0.01"], workspace=str(tmp_path))
    with pytest.raises(
        RunError, match=r"run: rlhf pretrain --recipe micro --set pretrain.lr=0.01 "
    ):
        sft.train(changed, progress=False)  # the hint repeats the setting the run must have
    cfg = load("micro", [f"sft.base_run={tmp_path / 'nowhere'}"], workspace=str(tmp_path))
    with pytest.raises(RunError, match="nowhere: no such run directory"):
        sft.train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_sft_end_to_end(base, capfd):
    cfg, _ = base
    run = sft.train(cfg, progress=False)
    # Loading the best checkpoint keeps the tied LM head: transformers' "missing keys" warning
    # about it is filtered out (rlhf.callbacks), and the head is still the embedding.
    assert "missing keys" not in capfd.readouterr().err
    model, _ = load_policy(run.model_dir)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert run.done
    report = read_eval(run)
    assert report["base"]["n_prompts"] == report["sft"]["n_prompts"] > 0
    assert report["steps"] == cfg.sft.max_steps
    losses = [r["train/loss"] for r in run.metrics() if "train/loss" in r]
    assert losses and all(v == v for v in losses)  # logged and finite
    assert any("eval/loss" in r for r in run.metrics())
    load_policy(run.model_dir)  # the saved model loads
    assert "fails to follow" in sft.summary(report)


def test_every_parameter_changes_after_one_step(base, tmp_path):
    # Two steps: the first is the linear warm-up's step 0, whose learning rate is 0.
    cfg, pre = base
    cfg1 = load("micro", workspace=cfg.workspace, sft__max_steps=2, sft__eval_prompts=2)
    run = sft.train(cfg1, run_dir=tmp_path / "one", progress=False)
    before, _ = load_policy(pre.model_dir)
    after, _ = load_policy(run.model_dir)
    b = dict(before.named_parameters())
    unchanged = [n for n, p in after.named_parameters() if torch.equal(p, b[n])]
    assert not unchanged


def test_demonstrations_become_prompt_completion_rows(base):
    from rlhf.world import build_world

    cfg, _ = base
    ds = sft.demo_dataset(build_world(cfg, progress=False), "train")
    row = ds[0]
    assert row["prompt"].startswith("Q: ") and row["prompt"].endswith("\nA:")
    assert row["completion"].startswith(" ") and "<|endoftext|>" not in row["completion"]


def test_interrupted_sft_resumes_from_its_checkpoint(base, tmp_path, interrupt_after):
    cfg, _ = base
    cfg = load("micro", workspace=cfg.workspace, sft__eval_prompts=2)
    every = cfg.sft.checkpoint_every
    with interrupt_after(every):
        sft.train(cfg, run_dir=tmp_path / "r", progress=False)
    resume = lambda: sft.train(cfg, run_dir=tmp_path / "r", progress=False)  # noqa: E731
    assert_resumed(sft.Run.open(tmp_path / "r"), every, cfg.sft.max_steps, resume)


@pytest.mark.parametrize("damage", ["model.safetensors", "trainer_state.json"])
def test_a_damaged_checkpoint_is_one_line_naming_it(base, tmp_path, interrupt_after, damage):
    """A truncated checkpoint file was a SafetensorError or JSONDecodeError traceback on every
    retry: the stage's command resumes the same interrupted run each time."""
    cfg, _ = base
    cfg = load("micro", workspace=cfg.workspace, sft__eval_prompts=2)
    with interrupt_after(cfg.sft.checkpoint_every):
        sft.train(cfg, run_dir=tmp_path / "r", progress=False)
    ckpt = tmp_path / "r" / "checkpoint" / f"checkpoint-{cfg.sft.checkpoint_every}"
    f = ckpt / damage
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(RunError, match=r"checkpoint-\d+: cannot resume from this checkpoint"):
        sft.train(cfg, run_dir=tmp_path / "r", progress=False)


def test_sft_interrupted_before_its_first_checkpoint_starts_over_without_stale_lines(
    base, tmp_path, interrupt_after
):
    cfg, _ = base
    cfg = load("micro", workspace=cfg.workspace, sft__eval_prompts=2)
    with interrupt_after(cfg.sft.log_every - 1):  # at the first log, before any checkpoint
        sft.train(cfg, run_dir=tmp_path / "r", progress=False)
    run = sft.Run.open(tmp_path / "r")
    assert not any(run.checkpoint_dir.glob("checkpoint-*"))
    assert [r["step"] for r in run.metrics() if "train/loss" in r] == [cfg.sft.log_every]
    run = sft.train(cfg, run_dir=tmp_path / "r", progress=False)
    steps = [r["step"] for r in run.metrics() if "train/loss" in r]
    assert run.done and steps == sorted(set(steps)) and steps[0] == cfg.sft.log_every


def test_training_noise_filter_drops_only_the_tied_head_and_mtime_warnings():
    import logging

    from rlhf.callbacks import _NoiseFilter

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("transformers.trainer", logging.WARNING, "", 0, msg, None, None)

    f = _NoiseFilter()
    missing = "There were missing keys in the checkpoint model loaded: {}."
    assert not f.filter(record(missing.format("['lm_head.weight']")))
    assert f.filter(record(missing.format("['lm_head.weight', 'model.norm.weight']")))
    assert not f.filter(record("mtime may not be reliable on this filesystem, falling back"))
    assert f.filter(record("Checkpoint included callbacks not included in current config"))
