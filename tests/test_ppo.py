"""Stage 3 (rlhf.ppo): a tiny end-to-end run on the micro recipe, every trainable parameter
changed after one update, the PPO-ptx term, resume after a kill, and a NaN stop."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import copy_workspace, micro_workspace, ppo_killed_in_step

from rlhf import packing, ppo, ppo_report
from rlhf.config import PPOConfig, load
from rlhf.errors import RunError
from rlhf.runs import Run, read_eval, saved_config
from rlhf.world import build_world

METRICS = [
    "objective/rlhf_reward",
    "objective/scores",
    "objective/kl",
    "objective/non_score_reward",
    "objective/entropy",
    "policy/approxkl",
    "policy/clipfrac",
    "val/vf_loss",
    "val/clipfrac",
    "ptx/loss",
    "response/length",
    "response/eos_rate",
    "time/rollout",
    "time/update",
]


@pytest.fixture(scope="module")
def ready(rm_ready):
    return rm_ready


def micro(ready, **overrides):
    return load("micro", workspace=ready.workspace, **overrides)


def test_a_micro_run_logs_every_metric_samples_and_a_report(ready):
    run = ppo.train(ready, progress=False)
    assert run.done
    rows = run.metrics()
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        missing = [k for k in METRICS if k not in r]
        assert not missing, missing
        assert all(math.isfinite(r[k]) for k in METRICS)
    probes = [r for r in rows if "overopt/kl" in r]  # micro: the fixed batch every 2 steps
    assert [r["step"] for r in probes] == [1, 3]
    assert abs(probes[0]["overopt/kl"]) < 1e-4  # before the first update the policy is SFT
    assert all(0 <= r["overopt/gold"] <= 1 and math.isfinite(r["overopt/scores"]) for r in probes)
    samples = run.samples()
    assert {s["step"] for s in samples} == {1, 2, 4}
    # Rollouts sample the train prompts and micro's rl split (world.rl_per_family), both.
    world = build_world(ready, progress=False)
    assert {s["prompt_id"] for s in samples} <= {p.id for p in world.rl_prompts()}
    assert {s["prompt_id"].split("-")[1] for s in samples} == {"train", "rl"}
    for s in samples:
        assert len(s["tokens"]) == len(s["kl"]) > 0
        assert "".join(s["tokens"]).replace("<|endoftext|>", "").strip() == s["response"].strip()
    report = read_eval(run)
    w = report["win_rate_vs_sft"]
    assert 0.0 <= w["lo"] <= w["mean"] <= w["hi"] <= 1.0 and w["n"] == 16
    # The world's correct answers never lose to SFT's: at worst they tie.
    assert 0.5 <= report["win_rate_ceiling"] <= 1.0
    where = report["win_breakdown"]["all"]  # where the win rate comes from: the same figure
    assert where["n"] == 16 and where["win_rate"] == pytest.approx(w["mean"])
    assert "made right" in ppo_report.summary(report)
    paid = report["rm_vs_gold"]  # the gold losses the RM scored above SFT's answer
    assert paid["losses"] == where["worse"] + where["broken"]
    assert paid["wins"] == where["fixed"] + where["better"]
    assert 0 <= paid["losses_rm_prefers_policy"] <= paid["losses"]
    assert len(paid["examples"]) == min(8, paid["losses_rm_prefers_policy"])
    for e in paid["examples"]:
        assert e["gold_policy"] < e["gold_sft"] and e["rm_policy"] > e["rm_sft"]
    if paid["losses"]:
        assert f"of the {paid['losses']} losses" in ppo_report.summary(report)
    example = {"prompt": "Q: Reverse the word boat.\nA:", "policy": " The answer is BOAT."}
    example.update(sft=" taob.", rm_policy=0.66, rm_sft=-1.58)
    one = {"losses": 3, "losses_rm_prefers_policy": 2, "examples": [example]}
    lines = ppo_report.summary({**report, "rm_vs_gold": one}).splitlines()
    i = next(i for i, line in enumerate(lines) if "RM over gold" in line)
    assert " ".join(lines[i].split()) == (  # the label column's padding aside
        "RM over gold 2 of the 3 losses: the RM scored the policy's answer above SFT's"
    )
    assert lines[i + 1].strip() == (
        "e.g. 'Q: Reverse the word boat.': 'The answer is BOAT.' (+0.66) over 'taob.' (-1.58)"
    )
    for reward, shown in (("labelers", True), ("gold", False)):  # gold never pays for a loss
        text = ppo_report.summary({**report, "rm_vs_gold": one, "reward": reward})
        assert ("over gold" in text) is shown and "RM over gold" not in text
    lines = ppo_report.summary({**report, "rm_vs_gold": one, "reward": "labelers"}).splitlines()
    [line] = [x for x in lines if "over gold" in x]  # the longest name keeps a space
    assert line.startswith("  labelers reward over gold 2 of the 3 losses: the labelers reward")
    assert (report["processes"], report["episodes_per_step"]) == (1, ready.ppo.batch_size)
    assert "accelerate launch" not in ppo_report.summary(report)
    assert report["perplexity/policy"] > 1 and report["perplexity/sft"] > 1
    from rlhf.models import load_policy

    model, _ = load_policy(run.model_dir)  # the trained policy loads as a plain causal LM
    assert model.config.model_type == "llama"


def _fresh(ready, **overrides):
    cfg = micro(ready, **overrides)
    sft_run, rm_run = ppo.source_runs(cfg)
    m = ppo.load_models(sft_run.model_dir, rm_run.model_dir)
    opt = torch.optim.AdamW(
        [
            {"params": list(m.policy.parameters()), "lr": cfg.ppo.lr},
            {"params": list(m.value.parameters()), "lr": cfg.ppo.vf_lr},
        ]
    )
    from accelerate import Accelerator

    return cfg, m, opt, Accelerator(cpu=True)


def _step(cfg, m, opt, acc, ptx_data=None, seed=0):
    prompts = [p.text for p in build_world(cfg, progress=False).prompts("train")[:8]]
    return ppo.ppo_step(
        m,
        opt,
        acc,
        cfg.ppo,
        prompts,
        cfg.ppo.kl_coef,
        seed=seed,
        ptx_data=ptx_data,
        shuffle_gen=torch.Generator().manual_seed(1),
        ptx_gen=torch.Generator().manual_seed(2),
    )


def test_every_trainable_parameter_of_policy_and_value_changes_after_one_update(ready):
    cfg, m, opt, acc = _fresh(ready, **{"ppo.approxkl_stop": 0.0})
    before = {
        name: {k: v.detach().clone() for k, v in model.named_parameters()}
        for name, model in (("policy", m.policy), ("value", m.value), ("ref", m.ref))
    }
    reward_before = {k: v.detach().clone() for k, v in m.reward.model.named_parameters()}
    metrics, _ = _step(cfg, m, opt, acc)
    assert metrics["policy/minibatches"] == cfg.ppo.ppo_epochs * 2
    for name, model in (("policy", m.policy), ("value", m.value)):
        unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[name][k])]
        assert not unchanged, f"{name}: {unchanged}"
    for k, v in m.ref.named_parameters():
        assert torch.equal(v, before["ref"][k]), f"the reference moved: {k}"
    for k, v in m.reward.model.named_parameters():
        assert torch.equal(v, reward_before[k]), f"the reward model moved: {k}"


def test_ptx_term_changes_the_update_only_when_its_coefficient_is_positive(ready):
    """Same start, same rollout: gamma_ptx = 0 with pretraining data gives exactly the update
    of plain PPO without it; gamma_ptx > 0 gives another one."""
    common = {"ppo.ppo_epochs": 1, "ppo.mini_batch_size": 8, "ppo.approxkl_stop": 0.0}
    data = torch.randint(5, 200, (32, 64))

    def update(ptx_coef, ptx_data):
        cfg, m, opt, acc = _fresh(ready, **common, **{"ppo.ptx_coef": ptx_coef})
        metrics, _ = _step(cfg, m, opt, acc, ptx_data=ptx_data)
        return [p.detach().clone() for p in m.policy.parameters()], metrics

    plain, _ = update(0.0, None)
    zero, zero_metrics = update(0.0, data)
    mixed, mixed_metrics = update(1.0, data)
    assert all(torch.equal(a, b) for a, b in zip(plain, zero, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(plain, mixed, strict=True))
    assert math.isfinite(zero_metrics["ptx/loss"]) and math.isfinite(mixed_metrics["ptx/loss"])


def test_a_killed_run_resumes_from_its_checkpoint_with_the_same_steps(ready, monkeypatch, tmp_path):
    straight = ppo.train(micro(ready), run_dir=tmp_path / "straight", progress=False)
    with ppo_killed_in_step(monkeypatch, 4):  # after the checkpoint at step 2 and one more step
        ppo.train(micro(ready), run_dir=tmp_path / "killed", progress=False)
    run = Run.open(tmp_path / "killed")
    assert run.status["status"] == "failed"
    assert [r["step"] for r in run.metrics()] == [1, 2, 3]
    resumed = ppo.train(micro(ready), run_dir=tmp_path / "killed", progress=False)
    assert resumed.done
    rows, ref = resumed.metrics(), straight.metrics()
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for a, b in zip(rows, ref, strict=True):
        for k in ("objective/scores", "objective/kl", "val/vf_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (a["step"], k)
    assert [s["step"] for s in resumed.samples()] == [s["step"] for s in straight.samples()]


def test_a_truncated_checkpoint_is_one_line_naming_it(ready, monkeypatch, tmp_path):
    """A SafetensorError is no OSError or ValueError: it was a traceback on every retry."""
    with ppo_killed_in_step(monkeypatch, 4):
        ppo.train(micro(ready), run_dir=tmp_path / "killed", progress=False)
    weights = tmp_path / "killed" / "checkpoint" / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(RunError, match=r"checkpoint: cannot resume from this checkpoint \(Safe"):
        ppo.train(micro(ready), run_dir=tmp_path / "killed", progress=False)


def test_a_run_killed_before_its_first_checkpoint_starts_over_without_stale_lines(
    ready, monkeypatch, tmp_path
):
    """Resumed with nothing to resume from, the run redoes steps 1.. in its directory: what the
    killed process logged goes, so no step is logged twice."""
    with ppo_killed_in_step(monkeypatch, 2):  # before the first checkpoint (step 2)
        ppo.train(micro(ready), run_dir=tmp_path / "killed", progress=False)
    run = Run.open(tmp_path / "killed")
    assert not run.checkpoint_dir.exists() and [r["step"] for r in run.metrics()] == [1]
    assert {s["step"] for s in run.samples()} == {1}
    resumed = ppo.train(micro(ready), run_dir=tmp_path / "killed", progress=False)
    assert [r["step"] for r in resumed.metrics()] == [1, 2, 3, 4]
    steps = [s["step"] for s in resumed.samples()]
    assert sorted(set(steps)) == [1, 2, 4] and len(steps) == 3 * steps.count(1)


def test_the_pipeline_resumes_an_interrupted_run_of_its_config(ready, monkeypatch, tmp_path):
    """`rlhf pipeline` (and `rlhf ppo` without --run-dir) run again after a Ctrl-C resume the
    interrupted run from its checkpoint in its own directory instead of starting a new one."""
    from rlhf import pipeline
    from rlhf.runs import list_runs

    ws = copy_workspace(ready, tmp_path / "ws").workspace
    cfg = load("micro", workspace=ws, **{"ppo.kl_coef": 0.25})  # no finished run has it
    before = list_runs(cfg.workspace_dir, "ppo")
    with ppo_killed_in_step(monkeypatch, 4):  # after the checkpoint at step 2 and one more step
        ppo.train(cfg, progress=False)
    [killed] = [r for r in list_runs(cfg.workspace_dir, "ppo") if r not in before]
    assert killed.state == "failed"
    other = load("micro", workspace=ws, **{"ppo.kl_coef": 0.5})
    assert pipeline.interrupted_run(other, "ppo") == (None, "")  # another config: a new run
    steps_taken, original = [], ppo.ppo_step

    def count(*args, **kwargs):
        steps_taken.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(ppo, "ppo_step", count)
    run = pipeline.stage_run("ppo", cfg, "ppo", progress=False)
    assert run.dir == killed.dir and run.done and len(steps_taken) == 2  # 3 and 4
    assert [r["step"] for r in run.metrics()] == [1, 2, 3, 4]
    assert list_runs(cfg.workspace_dir, "ppo") == [*before, killed]


def test_a_nan_kl_stops_the_run_and_keeps_the_last_good_checkpoint(ready, monkeypatch, tmp_path):
    original = ppo.kl_shaped_rewards
    calls = {"n": 0}

    def poisoned(scores, logprobs, ref_logprobs, mask, kl_coef):
        calls["n"] += 1
        if calls["n"] == 3:
            logprobs = logprobs + float("nan")
        return original(scores, logprobs, ref_logprobs, mask, kl_coef)

    monkeypatch.setattr(ppo, "kl_shaped_rewards", poisoned)
    with pytest.raises(RunError, match=r"PPO step 3: objective/kl = nan.*checkpoint \(step 2\)"):
        ppo.train(micro(ready), run_dir=tmp_path / "nan", progress=False)
    run = Run.open(tmp_path / "nan")
    assert run.status["status"] == "failed"
    import json

    assert json.loads((run.checkpoint_dir / "state.json").read_text())["step"] == 2


def test_weights_made_nan_by_an_update_stop_the_run_before_its_checkpoint(
    ready, monkeypatch, tmp_path
):
    """The losses are computed before the update: a gradient that overflows leaves this step's
    figures finite and the weights NaN. The run stops before saving them as a checkpoint."""
    original, calls = ppo.ppo_step, {"n": 0}

    def poisoned(m, *args, **kwargs):  # PPO step 4's update leaves a NaN weight behind
        metrics, rollout = original(m, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:
            with torch.no_grad():
                next(m.value.parameters()).fill_(float("nan"))
        return metrics, rollout

    monkeypatch.setattr(ppo, "ppo_step", poisoned)
    cfg = micro(ready, ppo__checkpoint_every=2, ppo__steps=6)
    with pytest.raises(RunError, match=r"PPO step 4: 1 weight tensors not finite.*\(step 2\)"):
        ppo.train(cfg, run_dir=tmp_path / "nan-weights", progress=False)
    import json

    run = Run.open(tmp_path / "nan-weights")
    assert json.loads((run.checkpoint_dir / "state.json").read_text())["step"] == 2


def test_the_weight_average_is_an_exponential_moving_average_of_the_trainable_weights():
    """Against the formula applied by hand: average_k = d * average_(k-1) + (1 - d) * w_k from
    average_0 = w_0; frozen weights are not averaged; the state round-trips."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[1].bias.requires_grad_(False)
    frozen = model[1].bias.detach().clone()
    average = ppo.WeightAverage(model, decay=0.75)
    assert average.names == ["0.weight", "0.bias", "1.weight"]
    expected = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    for _ in range(3):
        with torch.no_grad():
            for q in model.parameters():
                if q.requires_grad:
                    q.add_(torch.randn_like(q))  # what an optimizer step would do
        for k, v in model.named_parameters():
            if v.requires_grad:
                expected[k] = 0.75 * expected[k] + 0.25 * v.detach()
        average.update()
    state = average.state_dict()
    assert state.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(state[k], expected[k], rtol=0, atol=1e-6)
    other = ppo.WeightAverage(model, decay=0.75)  # starts from the live weights
    other.load_state_dict({k: v.clone() for k, v in state.items()})
    other.copy_to_policy()
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.detach(), expected.get(k, frozen), rtol=0, atol=1e-6)


def test_the_weight_average_follows_every_optimizer_step_of_an_update(ready):
    """ppo_step moves the average once per optimizer step: 2 epochs x 2 minibatches, each
    step's weights (snapshotted by an optimizer hook) folded in by the formula."""
    cfg, m, opt, acc = _fresh(ready, **{"ppo.approxkl_stop": 0.0, "ppo.ema_decay": 0.6})
    average = ppo.WeightAverage(m.policy, cfg.ppo.ema_decay)
    expected = [q.detach().clone() for q in m.policy.parameters()]
    steps = []

    def fold(*_):
        steps.append(1)
        for i, q in enumerate(m.policy.parameters()):
            expected[i] = 0.6 * expected[i] + 0.4 * q.detach()

    opt.register_step_post_hook(fold)
    prompts = [p.text for p in build_world(cfg, progress=False).prompts("train")[:8]]
    metrics, _ = ppo.ppo_step(
        m,
        opt,
        acc,
        cfg.ppo,
        prompts,
        cfg.ppo.kl_coef,
        seed=0,
        ptx_data=None,
        shuffle_gen=torch.Generator().manual_seed(1),
        ptx_gen=torch.Generator().manual_seed(2),
        average=average,
    )
    assert len(steps) == metrics["policy/minibatches"] == 4
    live = list(m.policy.parameters())
    for a, e in zip(average.average, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-6)
    assert any(not torch.equal(a, q) for a, q in zip(average.average, live, strict=True))


def _weights(run):
    from safetensors.torch import load_file

    return load_file(str(run.model_dir / "model.safetensors"))


def test_a_run_with_a_weight_average_trains_alike_saves_the_average_and_resumes_it(
    ready, monkeypatch, tmp_path
):
    """ppo.ema_decay changes no rollout or update (the live weights train as without it), only
    the saved policy; a killed run restores the average from its checkpoint."""
    assert "ema_decay" not in saved_config(micro(ready), "ppo")["ppo"]  # older runs match
    plain = ppo.train(micro(ready), run_dir=tmp_path / "plain", progress=False)
    ema = micro(ready, ppo__ema_decay=0.9)
    assert saved_config(ema, "ppo")["ppo"]["ema_decay"] == 0.9
    straight = ppo.train(ema, run_dir=tmp_path / "straight", progress=False)
    for a, b in zip(plain.metrics(), straight.metrics(), strict=True):
        for k in ("objective/scores", "objective/kl", "val/vf_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (a["step"], k)
    saved_plain, saved = _weights(plain), _weights(straight)
    assert any(not torch.allclose(saved[k], saved_plain[k], atol=1e-5) for k in saved)
    with ppo_killed_in_step(monkeypatch, 4):  # after the checkpoint at step 2
        ppo.train(ema, run_dir=tmp_path / "killed", progress=False)
    resumed = _weights(ppo.train(ema, run_dir=tmp_path / "killed", progress=False))
    assert saved.keys() == resumed.keys()
    for k in saved:
        torch.testing.assert_close(resumed[k], saved[k], rtol=0, atol=1e-6)


def test_adaptive_kl_controller_moves_beta_towards_the_target():
    ctl = ppo.AdaptiveKL(0.1, target=6.0, horizon=100)
    ctl.update(kl=12.0, n_steps=10)  # error clipped to +0.2: beta * (1 + 0.2 * 10/100)
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl = ppo.AdaptiveKL(0.1, target=6.0, horizon=100)
    ctl.update(kl=3.0, n_steps=10)  # error -0.2 (clipped from -0.5)
    assert ctl.value == pytest.approx(0.1 * 0.98)
    ctl.update(kl=6.0, n_steps=10)  # on target: unchanged
    assert ctl.value == pytest.approx(0.1 * 0.98)


def test_an_adaptive_kl_run_moves_its_beta_each_step(ready, tmp_path):
    """`ppo.adaptive_kl=true` end to end: each step's beta is the controller's update of the
    last, by the step's KL and its episodes (those of every process: one here)."""
    cfg = micro(ready, ppo__adaptive_kl=True, ppo__target_kl=0.01, ppo__kl_horizon=100)
    rows = ppo.train(cfg, run_dir=tmp_path / "adaptive", progress=False).metrics()
    ctl = ppo.AdaptiveKL(cfg.ppo.kl_coef, 0.01, 100)
    for row in rows:
        assert row["objective/kl_coef"] == pytest.approx(ctl.value)
        ctl.update(row["objective/kl"], cfg.ppo.batch_size)
    assert rows[-1]["objective/kl_coef"] != cfg.ppo.kl_coef


def test_the_policy_learning_rate_warms_up_from_a_tenth_then_follows_a_cosine():
    """ppo.lr_warmup (paper C.4: 10 iterations from a tenth of the rate, the default) and
    ppo.lr_end, against the schedule written out by hand; lr_end's default keeps the rate
    constant after the warm-up, as the paper's."""
    p = dataclasses.replace(load("micro").ppo, steps=22, lr_warmup=5, lr_end=0.1)
    lr = p.lr
    want = [lr * (0.1 + 0.9 * s / 5) for s in range(5)]  # 0.1 lr, 0.28 lr, ... 0.82 lr
    want += [lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 16))) for k in range(17)]
    got = [ppo.policy_lr(p, s) for s in range(22)]
    assert got == pytest.approx(want)
    assert got[0] == pytest.approx(lr / 10) and got[5] == pytest.approx(lr)
    assert got[-1] == pytest.approx(lr * 0.1) and got[13] == pytest.approx(lr * 0.55)
    assert all(a >= b for a, b in zip(got[5:], got[6:], strict=False))  # decays, never rises
    default = dataclasses.replace(PPOConfig(), steps=21)  # the recipes' default: the paper's
    assert default.lr_warmup == 10 and default.lr_end == 1
    assert [ppo.policy_lr(default, s) for s in range(10, 21)] == [default.lr] * 11
    assert ppo.policy_lr(default, 0) == pytest.approx(default.lr / 10)
    constant = dataclasses.replace(default, lr_warmup=0)
    assert [ppo.policy_lr(constant, s) for s in range(21)] == [constant.lr] * 21


def test_a_run_sets_the_scheduled_policy_rate_each_step_and_keeps_the_value_rate(
    ready, tmp_path, monkeypatch
):
    cfg = micro(ready, ppo__lr_warmup=2, ppo__lr_end=0.1)  # micro: 4 steps
    seen = []
    real = ppo.ppo_step

    def spy(m, optimizer, *args, **kwargs):
        seen.append([g["lr"] for g in optimizer.param_groups])
        return real(m, optimizer, *args, **kwargs)

    monkeypatch.setattr(ppo, "ppo_step", spy)
    rows = ppo.train(cfg, run_dir=tmp_path / "schedule", progress=False).metrics()
    lr, vf_lr = cfg.ppo.lr, cfg.ppo.vf_lr
    want = [lr * 0.1, lr * 0.55, lr, lr * 0.1]  # warm-up over steps 0-1, cosine over 2-3
    assert [r["policy/lr"] for r in rows] == pytest.approx(want)
    assert [policy for policy, _ in seen] == pytest.approx(want)
    assert [value for _, value in seen] == [vf_lr] * 4
    saved = saved_config(cfg, "ppo")["ppo"]
    assert (saved["lr_warmup"], saved["lr_end"]) == (2, 0.1)
    off_cfg = micro(ready, ppo__lr_warmup=0)
    off = saved_config(off_cfg, "ppo")["ppo"]
    assert "lr_warmup" not in off and "lr_end" not in off  # runs made before the schedule match
    # ... and such a run reads back as it ran, not with the config's default warm-up (10)
    read = Run.create(off_cfg, "ppo", tmp_path / "off").config.ppo
    assert (read.lr_warmup, read.lr_end) == (0, 1.0)
    assert Run.open(tmp_path / "schedule").config.ppo.lr_warmup == 2


def test_missing_runs_give_the_command_to_run(tmp_path):
    cfg = load("micro", workspace=str(tmp_path / "empty"))
    with pytest.raises(RunError, match="no finished SFT run.*rlhf sft --recipe micro"):
        ppo.source_runs(cfg)


def test_sizes_that_split_no_rollout_fail_before_a_run_directory(tmp_path):
    cfg = load("micro", workspace=str(tmp_path / "ws"), ppo__batch_size=6)  # minibatches of 4
    with pytest.raises(
        RunError, match="ppo.batch_size=6 is not a multiple of ppo.mini_batch_size=4"
    ):
        ppo.train(cfg, progress=False)
    cfg = load("micro", workspace=str(tmp_path / "ws"))
    cfg.ppo.ppo_epochs = 0  # a config built in code, past load's bounds
    with pytest.raises(RunError, match=r"must be >= 1 \(got 4, 0, 4\)"):
        ppo.train(cfg, progress=False)
    assert not (tmp_path / "ws" / "runs").exists()


@pytest.mark.parametrize("stage", ["ppo", "grpo", "dpo", "reward"])
def test_a_missing_upstream_run_leaves_no_run_directory(stage, tmp_path):
    # each such failure used to leave a failed run on the Runs page
    import importlib

    cfg = load("micro", workspace=str(tmp_path / "empty"))
    with pytest.raises(RunError, match="no finished SFT run"):
        importlib.import_module(f"rlhf.{stage}").train(cfg, progress=False)
    assert not (tmp_path / "empty" / "runs").exists() or not any(
        (tmp_path / "empty" / "runs").iterdir()
    )


@pytest.mark.parametrize("stage", ["reward", "dpo"])
def test_no_comparisons_yet_leaves_no_run_directory(stage, ready, tmp_path):
    """`rlhf rm` or `rlhf dpo` before `rlhf compare` left a failed run, which then broke
    `rlhf eval --runs runs/*`."""
    import importlib

    from conftest import copy_workspace

    cfg = copy_workspace(ready, tmp_path / "ws")
    for f in cfg.workspace_dir.glob("lab.db*"):  # as before rlhf compare
        f.unlink()
    before = sorted(p.name for p in (cfg.workspace_dir / "runs").iterdir())
    with pytest.raises(RunError, match=r"no training comparisons .*; run: rlhf compare --recipe"):
        importlib.import_module(f"rlhf.{stage}").train(cfg, progress=False)
    assert sorted(p.name for p in (cfg.workspace_dir / "runs").iterdir()) == before


def test_the_missing_run_hint_repeats_the_settings_that_run_needs(ready):
    """`rlhf ppo --set sft.lr=2e-3` said "run: rlhf sft --recipe micro": that reuses the
    recipe's SFT run, and the same error came back."""
    cfg = micro(ready, sft__lr=2e-3, ppo__kl_coef=0.5, world__n_countries=5)
    with pytest.raises(RunError) as e:
        ppo.train(cfg, progress=False)
    hint = str(e.value).split("; run: ")[1]
    assert hint.startswith("rlhf sft --recipe micro --set world.n_countries=5 --set sft.lr=0.002")
    assert "kl_coef" not in hint  # not the SFT run's


def _padded_reference(m, g, temperature):
    """Logprobs, entropies and values of the response tokens from one plain padded forward per
    model: (B, P + R) rows, left-padded prompts, attention mask, positions of real tokens."""
    ids = torch.cat([g.prompt_ids, g.response_ids], dim=1)
    mask = torch.cat([g.prompt_mask, g.response_mask], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    P, resp = g.prompt_ids.shape[1], g.response_mask.float()
    logits = m.policy(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    logp = torch.log_softmax(logits[:, P - 1 : -1] / temperature, dim=-1)  # (B, R, V)
    lp = logp.gather(-1, g.response_ids[..., None]).squeeze(-1) * resp
    ent = -(logp.exp() * logp).sum(-1) * resp
    hidden = m.value.base_model(input_ids=ids, attention_mask=mask, position_ids=pos)
    values = m.value.score(hidden.last_hidden_state[:, P - 1 : -1]).squeeze(-1) * resp
    return lp, ent, values


@pytest.mark.parametrize("row", [packing.PACK_ROW, 1])  # 1: one sequence per row, many rows
def test_packed_forwards_equal_a_padded_forward_also_on_cut_minibatches(ready, row, monkeypatch):
    """forward_logprobs / forward_values pack the sequences end to end (no padding, attention
    kept within each sequence by restarting position ids) and the update cuts each minibatch to
    the columns its rows use (ppo._slice); neither may change a logprob, entropy or value."""
    from rlhf.generation import generate

    cfg, m, _, _ = _fresh(ready)
    prompts = [p.text for p in build_world(cfg, progress=False).prompts("train")[:8]]
    g = generate(m.policy, m.tokenizer, prompts, max_new_tokens=12, temperature=1.0, seed=3)
    assert len(set(g.prompt_mask.sum(1).tolist())) > 1  # prompts of different lengths
    assert len(set(g.response_mask.sum(1).tolist())) > 1  # and responses too
    monkeypatch.setattr(packing, "PACK_ROW", row)
    pk = ppo.pack(g)
    assert pk.rows_.input_ids.shape[0] > 1  # several rows
    assert (pk.rows_.input_ids.shape[0] < 8) == (row > 1)  # and with room, several sequences a row
    flat, pos = pk.rows_.input_ids.flatten(), pk.rows_.position_ids.flatten()
    for i in range(8):  # each sequence end to end without its last token, which nothing reads
        prompt = g.prompt_ids[i][g.prompt_mask[i].bool()]
        response = g.response_ids[i][g.response_mask[i].bool()]
        start, end = (
            int(pk.rows_.starts[i]),
            int(pk.rows_.starts[i]) + len(prompt) + len(response) - 1,
        )
        assert flat[start:end].tolist() == prompt.tolist() + response[:-1].tolist()
        assert end % pk.rows_.input_ids.shape[1] == 0 or pos[end] == 0  # then the next one
    m.policy.eval()
    with torch.no_grad():
        ref_lp, ref_ent, ref_v = _padded_reference(m, g, 1.3)
        lp, ent = ppo.forward_logprobs(m.policy, g, 1.3, with_entropy=True)  # (8, R)
        v = ppo.forward_values(m.value, g)
        for got, want in ((lp, ref_lp), (ent, ref_ent), (v, ref_v)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        for idx in (torch.tensor([2, 5]), torch.tensor([0, 1, 2, 3]), torch.arange(8)):
            mb, r = ppo._slice(g, idx)
            assert r == int(g.response_mask[idx].sum(1).max())
            assert mb.prompt_mask[:, 0].any()  # no all-padding prompt column left
            assert mb.response_mask.sum() == g.response_mask[idx].sum()  # every token kept
            torch.testing.assert_close(
                ppo.forward_logprobs(m.policy, mb, 1.3)[0], ref_lp[idx, :r], atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(
                ppo.forward_values(m.value, mb), ref_v[idx, :r], atol=1e-5, rtol=1e-5
            )


def test_iterated_collection_samples_the_ppo_policy_and_the_rm_then_retrains(tmp_path, capsys):
    """Paper section 3: steps 2 and 3 iterated. `rlhf compare --policy PPO_RUN` labels samples
    of the PPO policy on train prompts; the finished RM is then stale, and `rlhf rm` trains a
    new one on every stored comparison instead of reusing it."""
    from rlhf import reward
    from rlhf.cli import main
    from rlhf.runs import latest_done
    from rlhf.store import Store

    ws = tmp_path / "ws"  # a workspace of its own: the module's keeps its one RM
    cfg = micro_workspace(ws)
    old_rm = latest_done(cfg, "rm")
    assert old_rm is not None and reward.stale(old_rm, cfg) is None
    before = read_eval(old_rm)["data"]["comparisons"]
    policy_run = ppo.train(cfg, progress=False)
    ws_args = ["--recipe", "micro", "--workspace", str(ws)]
    assert main(["compare", *ws_args, "--policy", str(old_rm.dir)]) == 2  # not a policy
    assert "needs a finished SFT or PPO run (this one: rm, finished)" in capsys.readouterr().err

    assert (
        main(
            [
                "compare",
                "--recipe",
                "micro",
                "--workspace",
                str(ws),
                "--policy",
                str(policy_run.dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "this policy's samples" in out
    with Store.open(cfg) as store:
        mine = [c for c in store.comparisons() if c.policy == str(policy_run.dir)]
    assert mine and all("-train-" in c.prompt_id for c in mine)  # held-out stays SFT samples
    assert all(len(c.responses) >= 2 for c in mine)

    why = reward.stale(old_rm, cfg)
    assert why and f"trained on {before:,}" in why
    assert main(["rm", "--recipe", "micro", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "not reusing" in out
    new_rm = latest_done(cfg, "rm")
    assert new_rm.dir != old_rm.dir and reward.stale(new_rm, cfg) is None
    assert read_eval(new_rm)["data"]["comparisons"] == before + len(mine)
    assert main(["rm", "--recipe", "micro", "--workspace", str(ws)]) == 0  # now it is reused
    assert f"reusing finished run {new_rm.dir}" in capsys.readouterr().out
    # The PPO run of round 1 used the old RM: `rlhf ppo` trains round 2 against the new one.
    assert ppo.stale(policy_run, cfg) == (
        f"{policy_run.dir} used rm_run {old_rm.dir}; this config now resolves to {new_rm.dir}"
    )
    assert main(["ppo", "--recipe", "micro", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "not reusing" in out
    second = latest_done(cfg, "ppo")
    assert second.dir != policy_run.dir and read_eval(second)["rm_run"] == str(new_rm.dir)
    assert ppo.stale(second, cfg) is None
