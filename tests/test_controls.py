"""Notebook 04's controls (rlhf.controls): the Run button trains a short PPO run with the
sliders' beta and gamma_ptx, reuses it when pressed again, and shows errors instead of raising."""

from __future__ import annotations

import pytest

from rlhf.controls import PPOControls
from rlhf.errors import ConfigError
from rlhf.runs import list_runs


def test_the_run_button_trains_with_the_sliders_values_then_reuses_the_run(rm_ready, capsys):
    controls = PPOControls("micro", workspace=rm_ready.workspace, steps=2, progress=False)
    controls.beta.value, controls.ptx.value = 0.1, 0.3
    before = {r.dir for r in list_runs(rm_ready.workspace_dir, "ppo")}
    controls.run_button.click()
    ((label, run),) = controls.runs.items()
    assert label == "β=0.1, γ_ptx=0.3, 2 steps"
    saved = run.raw_config()["ppo"]
    assert (saved["kl_coef"], saved["ptx_coef"], saved["steps"]) == (0.1, 0.3, 2)
    assert run.done and [r["step"] for r in run.metrics()] == [1, 2]
    assert {r.dir for r in list_runs(rm_ready.workspace_dir, "ppo")} - before == {run.dir}
    table = controls.table()
    assert list(table["run"]) == [label] and table["run dir"][0] == run.dir.name

    assert controls.launch() == run  # the same settings: reused, not trained again
    assert "reusing finished run" in capsys.readouterr().out
    assert len(list_runs(rm_ready.workspace_dir, "ppo")) == len(before) + 1

    controls.ptx.value = 0.0  # another setting: a second run, shown beside the first
    second = controls.launch()
    assert second != run and list(controls.runs) == [label, "β=0.1, γ_ptx=0, 2 steps"]
    assert not controls.run_button.disabled


def test_gamma_ptx_offers_zero_the_recipes_value_and_the_papers(rm_ready):
    """The tiny recipe's PPO-ptx gamma (pipeline.ptx_coef 0.03) must be reachable: a linear
    slider in steps of 0.25 could only offer 0, 0.25, ..."""
    controls = PPOControls("tiny", ["pipeline.ptx_coef=0.07"], workspace=rm_ready.workspace)
    values = [v for _, v in controls.ptx.options]
    assert values == sorted(values) and controls.ptx.value == 0.0  # starts at plain PPO
    assert {0.0, 0.03, 0.07, 27.8} <= set(values)
    controls.ptx.value = 0.07
    assert "ppo.ptx_coef=0.07" in controls.overrides_now()
    started = PPOControls("tiny", ["ppo.ptx_coef=0.2"], workspace=rm_ready.workspace)
    assert started.ptx.value == 0.2  # an override's gamma is offered and selected


def test_an_error_is_shown_and_the_button_stays_usable(rm_ready, capsys, tmp_path):
    missing = tmp_path / "missing.jsonl"  # an error only training finds, not config.load
    controls = PPOControls(
        "micro", [f"ppo.data={missing}"], workspace=rm_ready.workspace, steps=1, progress=False
    )
    assert controls.launch() is None
    assert f"error: {missing}: no such file" in capsys.readouterr().out
    assert not controls.runs and not controls.run_button.disabled


def test_a_bad_override_fails_when_the_controls_are_made(rm_ready):
    with pytest.raises(
        ConfigError, match="'ppo.reward' must be one of rm, gold, labelers, got 'judge'"
    ):
        PPOControls("micro", ["ppo.reward=judge"], workspace=rm_ready.workspace)


def test_a_run_stopped_by_a_kernel_interrupt_resumes_on_the_next_press(
    rm_ready, capsys, monkeypatch
):
    from conftest import ppo_killed_in_step

    controls = PPOControls("micro", workspace=rm_ready.workspace, steps=4, progress=False)
    controls.beta.value = 0.07  # a setting no other test trains
    before = list_runs(rm_ready.workspace_dir, "ppo")
    with ppo_killed_in_step(monkeypatch, 4):  # after the checkpoint at step 2
        controls.launch()
    [stopped] = [r for r in list_runs(rm_ready.workspace_dir, "ppo") if r not in before]
    assert not controls.run_button.disabled and stopped.state == "failed"
    capsys.readouterr()
    run = controls.launch()
    assert run == stopped and run.done and [r["step"] for r in run.metrics()] == [1, 2, 3, 4]
    assert f"resuming interrupted run {stopped.dir}" in capsys.readouterr().out
