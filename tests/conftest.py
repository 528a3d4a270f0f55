"""Fixtures shared by the stage tests."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from rlhf import callbacks
from rlhf.runs import read_eval


def micro_workspace(path, with_rm: bool = True):
    """The micro config of a workspace at `path` after pretrain, SFT, comparisons and (with_rm)
    a reward model: what the stage tests start from."""
    import torch

    from rlhf import compare, pretrain, reward, sft
    from rlhf.config import load

    torch.set_num_threads(1)
    cfg = load("micro", workspace=str(path))
    pretrain.train(cfg, progress=False)
    sft.train(cfg, progress=False)
    compare.collect(cfg, progress=False)
    if with_rm:
        reward.train(cfg, progress=False)
    return cfg


@pytest.fixture(scope="module")
def rm_ready(tmp_path_factory):
    """A micro workspace with pretrain, SFT, comparisons and a reward model: what PPO needs."""
    return micro_workspace(tmp_path_factory.mktemp("ws"))


@pytest.fixture(scope="session")
def micro_pipeline(tmp_path_factory):
    """A workspace after `rlhf pipeline --recipe micro` (every stage, then the results table):
    what the dashboard and the human-feedback notebook show. Tests that write to its store work
    on a copy (`copy_workspace`)."""
    import torch

    from rlhf import pipeline
    from rlhf.config import load

    torch.set_num_threads(1)
    cfg = load("micro", workspace=str(tmp_path_factory.mktemp("pipeline")))
    pipeline.run(cfg, progress=False)
    return cfg


def copy_workspace(cfg, dest):
    """The micro config of a copy of cfg's workspace at `dest` (runs, world, store)."""
    import shutil

    from rlhf.config import load

    shutil.copytree(cfg.workspace_dir, dest)
    return load("micro", workspace=str(dest))


@pytest.fixture
def interrupt_after(monkeypatch):
    """`with interrupt_after(step): stage.train(...)` raises KeyboardInterrupt at the first
    Trainer log past `step` (after a checkpoint was written), as a user's Ctrl-C would."""

    @contextmanager
    def interrupting(step: int):
        original = callbacks.LogToRun.on_log

        def crash(self, args, state, control, logs=None, **kw):
            original(self, args, state, control, logs=logs, **kw)
            if state.global_step > step:
                raise KeyboardInterrupt

        monkeypatch.setattr(callbacks.LogToRun, "on_log", crash)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(callbacks.LogToRun, "on_log", original)

    return interrupting


@contextmanager
def ppo_killed_in_step(monkeypatch, n: int):
    """`with ppo_killed_in_step(monkeypatch, n): ppo.train(...)` raises KeyboardInterrupt (a
    user's Ctrl-C) at PPO's n-th call of ppo_step, expects it, and puts ppo_step back."""
    from rlhf import ppo

    original = ppo.ppo_step
    calls = {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(ppo, "ppo_step", crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(ppo, "ppo_step", original)


def ppo_run_in_training(cfg):
    """(a new PPO run in cfg's workspace with the config of its first finished one, that run):
    the new run's status.json names this process as the one training it (Run.state running),
    so a test logs the finished run's metric lines into it as if it were training."""
    from rlhf.runs import Run, list_runs

    finished = list_runs(cfg.workspace_dir, "ppo")[0]
    same = finished.config
    same.workspace = str(cfg.workspace_dir)  # the copy's (the config names the original)
    return Run.create(same, "ppo"), finished


def assert_resumed(run, checkpoint_step: int, max_steps: int, resume) -> None:
    """The interrupted `run` failed with a checkpoint at `checkpoint_step`; `resume()` finishes
    it at `max_steps` without logging a step twice."""
    assert run.status["status"] == "failed"
    assert (run.checkpoint_dir / f"checkpoint-{checkpoint_step}").is_dir()
    run = resume()
    assert run.done and read_eval(run)["steps"] == max_steps
    steps = [r["step"] for r in run.metrics() if "train/loss" in r]
    assert steps == sorted(set(steps))  # the redone steps were not logged twice
