"""LoRA (peft) for SFT and PPO on the micro recipe: only the adapters train, the saved model is
a plain one of the base's shape with other weights, checkpoints resume, and a config without
LoRA saves exactly what it saved before the option existed."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_resumed, ppo_killed_in_step

from rlhf import ppo, sft
from rlhf.config import LORA_KEYS, load
from rlhf.models import load_policy, merge_lora
from rlhf.runs import Run, read_eval, saved_config

LORA = {"lora_r": 4, "lora_alpha": 8.0}


@pytest.fixture(scope="module")
def ready(rm_ready):
    return rm_ready


def micro(ready, **overrides):
    return load("micro", workspace=ready.workspace, **overrides)


def sections(stage: str, **kw) -> dict:
    return {f"{stage}.{k}": v for k, v in (LORA | kw).items()}


def test_a_config_without_lora_saves_no_lora_keys_and_one_with_lora_saves_them_all():
    plain = saved_config(load("micro"), "ppo")
    for section in ("sft", "ppo"):
        assert not set(LORA_KEYS) & set(plain[section])
    with_lora = saved_config(load("micro", **sections("ppo")), "ppo")
    assert set(LORA_KEYS) <= set(with_lora["ppo"]) and with_lora["ppo"]["lora_r"] == 4
    assert with_lora["sft"] == plain["sft"]  # the policy's LoRA is PPO's alone


def test_sft_with_lora_trains_only_adapters_and_saves_a_merged_plain_model(ready, tmp_path):
    cfg = micro(ready, **sections("sft", eval_prompts=2))
    run = sft.train(cfg, run_dir=tmp_path / "sft", progress=False)
    assert run.done
    report = read_eval(run)
    assert 0 < report["trainable_params"] < report["total_params"] / 5
    # run/model/ is a plain causal LM of the base's shape: no adapter keys, other weights.
    base, _ = load_policy(sft.base_model_dir(cfg))
    tuned, _ = load_policy(run.model_dir)
    b, t = dict(base.named_parameters()), dict(tuned.named_parameters())
    assert set(b) == set(t) and not any("lora" in k for k in t)
    changed = {k for k in t if not torch.equal(t[k], b[k])}
    assert changed and all(k.split(".")[-2] in cfg.sft.lora_targets for k in changed)
    assert len(changed) == len(cfg.sft.lora_targets) * cfg.pretrain.num_layers


def test_an_interrupted_lora_sft_resumes_from_its_adapter_checkpoint(
    ready, tmp_path, interrupt_after
):
    cfg = micro(ready, **sections("sft", eval_prompts=2))
    every = cfg.sft.checkpoint_every
    with interrupt_after(every):
        sft.train(cfg, run_dir=tmp_path / "r", progress=False)
    ckpt = tmp_path / "r" / "checkpoint" / f"checkpoint-{every}"
    assert (ckpt / "adapter_model.safetensors").is_file()  # TRL saves the adapters alone
    resume = lambda: sft.train(cfg, run_dir=tmp_path / "r", progress=False)  # noqa: E731
    assert_resumed(Run.open(tmp_path / "r"), every, cfg.sft.max_steps, resume)
    model, _ = load_policy(tmp_path / "r" / "model")
    assert not any("lora" in k for k, _ in model.named_parameters())


def test_one_ppo_update_with_lora_moves_only_the_adapters_and_the_value_model(ready):
    cfg = micro(ready, **sections("ppo", approxkl_stop=0.0))
    sft_run, rm_run = ppo.source_runs(cfg)
    m = ppo.load_models(sft_run.model_dir, rm_run.model_dir, ppo.policy_lora(cfg.ppo))
    assert m.policy.config.model_type == "llama"  # still the causal LM: the trunk is base_model
    opt = ppo.make_optimizer(m, cfg.ppo)
    in_opt = {id(q) for q in opt.param_groups[0]["params"]}
    names = {k for k, v in m.policy.named_parameters() if id(v) in in_opt}
    assert names and all(".lora_A." in k or ".lora_B." in k for k in names)
    before = {k: v.detach().clone() for k, v in m.policy.named_parameters()}
    value_before = {k: v.detach().clone() for k, v in m.value.named_parameters()}
    from accelerate import Accelerator

    from rlhf.world import build_world

    prompts = [q.text for q in build_world(cfg, progress=False).prompts("train")[:8]]
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    ppo.ppo_step(m, opt, Accelerator(cpu=True), cfg.ppo, prompts, 0.3, 0, None, *gens)
    moved = {k for k, v in m.policy.named_parameters() if not torch.equal(v, before[k])}
    assert moved == names  # every adapter, nothing else
    assert all(not torch.equal(v, value_before[k]) for k, v in m.value.named_parameters())
    # Merged, the policy has the SFT model's parameter names and differs from it (the ref).
    merged = merge_lora(m.policy)
    ref = dict(m.ref.named_parameters())
    assert {k for k, _ in merged.named_parameters()} == set(ref)
    assert any(not torch.equal(v, ref[k]) for k, v in merged.named_parameters())


@pytest.fixture(scope="module")
def lora_run(ready, tmp_path_factory):
    return ppo.train(
        micro(ready, **sections("ppo")),
        run_dir=tmp_path_factory.mktemp("lora") / "straight",
        progress=False,
    )


def test_a_ppo_run_with_lora_saves_a_plain_policy_that_differs_from_sft(ready, lora_run):
    assert lora_run.done and lora_run.raw_config()["ppo"]["lora_r"] == 4
    policy, _ = load_policy(lora_run.model_dir)
    sft_model, _ = load_policy(ppo.source_runs(ready)[0].model_dir)
    s = dict(sft_model.named_parameters())
    p = dict(policy.named_parameters())
    assert set(p) == set(s)
    assert any(not torch.equal(v, s[k]) for k, v in p.items())
    assert policy.lm_head.weight.data_ptr() == policy.model.embed_tokens.weight.data_ptr()


def test_a_lora_run_with_a_weight_average_trains_alike_and_saves_the_averaged_adapters(
    ready, lora_run, tmp_path
):
    """ppo.ema_decay with LoRA: the average is of the adapters (the only trainable weights),
    copied back before the merge; the saved policy is a plain model of SFT's shape, other
    than the run's without the average, which trained the same live weights."""
    from safetensors.torch import load_file

    cfg = micro(ready, **sections("ppo", ema_decay=0.9))
    run = ppo.train(cfg, run_dir=tmp_path / "ema", progress=False)
    for a, b in zip(run.metrics(), lora_run.metrics(), strict=True):
        for k in ("objective/scores", "objective/kl", "val/vf_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (a["step"], k)
    averaged = load_file(str(run.model_dir / "model.safetensors"))
    last = load_file(str(lora_run.model_dir / "model.safetensors"))
    assert averaged.keys() == last.keys() and not any("lora" in k for k in averaged)
    assert any(not torch.allclose(averaged[k], last[k], atol=1e-6) for k in averaged)


def test_a_killed_lora_run_resumes_from_its_checkpoint_with_the_same_steps(
    ready, lora_run, monkeypatch, tmp_path
):
    cfg = micro(ready, **sections("ppo"))
    with ppo_killed_in_step(monkeypatch, 4):  # after the checkpoint at step 2 and one more step
        ppo.train(cfg, run_dir=tmp_path / "killed", progress=False)
    assert Run.open(tmp_path / "killed").status["status"] == "failed"
    resumed = ppo.train(cfg, run_dir=tmp_path / "killed", progress=False)
    assert resumed.done
    rows, ref = resumed.metrics(), lora_run.metrics()
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for a, b in zip(rows, ref, strict=True):
        for k in ("objective/scores", "objective/kl", "val/vf_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (a["step"], k)


def test_lora_targets_that_name_no_module_fail_with_the_names_there_are(ready):
    from rlhf.errors import ConfigError

    cfg = micro(ready, **sections("ppo", lora_targets=["c_attn"]))
    sft_run, rm_run = ppo.source_runs(cfg)
    with pytest.raises(ConfigError, match=r"ppo.lora_targets=c_attn: .*llama.*: .*q_proj"):
        ppo.load_models(sft_run.model_dir, rm_run.model_dir, ppo.policy_lora(cfg.ppo))


def test_packed_forwards_of_a_lora_policy_equal_its_padded_forward(ready):
    """The packed forwards read the trunk (`base_model`) and the head directly: with adapters
    injected in place they still run through them."""
    from test_ppo import _padded_reference

    from rlhf.generation import generate
    from rlhf.world import build_world

    cfg = micro(ready, **sections("ppo"))
    sft_run, rm_run = ppo.source_runs(cfg)
    m = ppo.load_models(sft_run.model_dir, rm_run.model_dir, ppo.policy_lora(cfg.ppo))
    with torch.no_grad():
        for name, p in m.policy.named_parameters():
            if ".lora_B." in name:  # 0 at the start: make the adapters count
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    prompts = [q.text for q in build_world(cfg, progress=False).prompts("train")[:6]]
    g = generate(m.policy, m.tokenizer, prompts, max_new_tokens=8, temperature=1.0, seed=3)
    m.policy.eval()
    with torch.no_grad():
        want, _, _ = _padded_reference(m, g, 1.0)
        got, _ = ppo.forward_logprobs(m.policy, g, 1.0)
        sft_lp, _ = ppo.forward_logprobs(m.ref, g, 1.0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, sft_lp, atol=1e-3)  # the adapters did change the logprobs
