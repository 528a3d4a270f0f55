"""Model-agnostic stages: SFT, RM and PPO on randomly initialised tiny GPT-2, Llama and Qwen2
models built from transformers configs (no hub), with a tokenizer that has a pad token (the
lab's) and one that has not (GPT-2's kind: EOS only); and packed forwards against padded ones
(rlhf.packing.PACKABLE lists the architectures that may be packed)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    TrainingArguments,
)

from rlhf import packing, ppo, reward, sft
from rlhf.config import PPOConfig
from rlhf.generation import Generation
from rlhf.models import save_model
from rlhf.store import Comparison
from rlhf.tokenizer import EOS_TOKEN, train_tokenizer

ARCHS = ["gpt2", "llama", "qwen2"]
TEXTS = [
    "Q: What is the capital of Norland? A: Harbridge.",
    "Q: Name a river of Ostria. A: The Vell runs through it.",
    "Q: Is Harbridge large? A: It is a small port town.",
    "The Vell is long and slow. Harbridge is a port. Ostria is east of Norland.",
] * 3


def tiny_tokenizer(with_pad: bool) -> PreTrainedTokenizerFast:
    """The lab's byte-level BPE (pad id 0, EOS id 1), or one with EOS as its only special
    token, as GPT-2's."""
    if with_pad:
        return train_tokenizer(TEXTS, vocab_size=300)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer=trainer)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN)
    assert out.pad_token_id is None
    return out


def tiny_config(arch: str, tokenizer):
    ids = {
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if arch == "gpt2":  # absolute position embeddings, LayerNorm, GELU MLP
        return GPT2Config(n_positions=128, n_embd=32, n_layer=2, n_head=2, **ids)
    common = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 128,
        **ids,
    }
    if arch == "llama":
        return LlamaConfig(num_key_value_heads=2, **common)
    return Qwen2Config(num_key_value_heads=1, **common)  # grouped-query attention, qkv biases


def base_dir(tmp_path, arch: str, with_pad: bool):
    """A randomly initialised model and its tokenizer saved as a base (or SFT) model dir."""
    tokenizer = tiny_tokenizer(with_pad)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer))
    return save_model(model, tokenizer, tmp_path / f"{arch}-{'pad' if with_pad else 'nopad'}")


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def assert_all_changed(model, before: dict[str, torch.Tensor]) -> None:
    unchanged = [
        k for k, v in model.named_parameters() if k in before and torch.equal(v, before[k])
    ]
    assert not unchanged, unchanged


def train_args(tmp_path, **kw) -> dict:
    return {
        "output_dir": str(tmp_path / "trainer"),
        "use_cpu": True,
        "max_steps": 1,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "report_to": [],
        "disable_tqdm": True,
        "save_strategy": "no",
        "dataloader_num_workers": 0,
        **kw,
    }


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("with_pad", [True, False], ids=["pad", "no-pad"])
@pytest.mark.parametrize("arch", ARCHS)
def test_sft_rm_and_ppo_each_take_a_step_on_the_architecture(tmp_path, arch, with_pad):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    base = base_dir(tmp_path, arch, with_pad)

    # SFT: the stage's loading (a pad token if missing), TRL's completion-only loss.
    model, tokenizer = sft.load_base(base)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    vocab = model.config.vocab_size
    assert vocab == len(tokenizer) == len(tiny_tokenizer(with_pad)) + (0 if with_pad else 1)
    assert model.get_input_embeddings().num_embeddings == vocab  # grown by the new <|pad|>
    rows = [{"prompt": t.split(" A:")[0] + " A:", "completion": t.split(" A:")[-1]} for t in TEXTS]
    before = snapshot(model)
    args = SFTConfig(
        **train_args(tmp_path),
        bf16=False,
        activation_checkpointing=False,
        completion_only_loss=True,
        max_length=64,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    assert math.isfinite(trainer.train().training_loss)
    assert_all_changed(model, before)

    # RM: the stage's backbone (scalar head, pad token), one K-wise step on rankings of K = 3, 2.
    model, tokenizer = reward.load_backbone(base, seed=0)
    assert model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    comparisons = [
        Comparison(
            "Q: Is Harbridge large? A:", ["No.", "It is small.", "Yes, huge."], [1, 0, 2], "l"
        ),
        Comparison("Q: Name a river of Ostria. A:", ["The Vell.", "Harbridge."], [0, 1], "l"),
    ] * 2
    before = snapshot(model)
    trainer = reward.KwiseTrainer(
        model=model,
        args=TrainingArguments(**train_args(tmp_path), remove_unused_columns=False),
        train_dataset=comparisons,
        data_collator=reward.KwiseCollator(tokenizer, 64),
    )
    assert math.isfinite(trainer.train().training_loss)
    assert_all_changed(model, before)
    rm_dir = save_model(model.eval(), tokenizer, tmp_path / "rm")
    (rm_dir / reward.BIAS_FILE).write_text(json.dumps({"bias": 0.0, "max_length": 64}))

    # PPO: the base model as the SFT model (a pad token added here too), the RM as the reward
    # and the value model's start; the forwards pack or pad as the architecture allows.
    m = ppo.load_models(base, rm_dir)
    assert packing.packable(m.policy) == (arch != "gpt2")
    scores = m.reward.score(["Q: Is Harbridge large? A:"] * 2, ["It is small.", "No."])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    p = replace(
        PPOConfig(),
        batch_size=4,
        mini_batch_size=2,
        ppo_epochs=1,
        max_new_tokens=6,
        approxkl_stop=0.0,
        temperature=1.0,
    )
    optimizer = ppo.make_optimizer(m, p)
    before = {"policy": snapshot(m.policy), "value": snapshot(m.value)}
    from accelerate import Accelerator

    prompts = [r["prompt"] for r in rows[:4]]
    # The update's forwards compute the function the rollout sampled from: with GPT-2's
    # dropout (0.1) left on in them, the ratio was not 1 before any step (off by up to 0.09)
    # and two value forwards of one rollout differed.
    g = ppo.rollout_samples(m.policy, m.tokenizer, prompts, p, 0)
    again, _ = ppo.forward_logprobs(m.policy, g, p.temperature)
    torch.testing.assert_close(again, g.logprobs * g.response_mask, atol=1e-4, rtol=1e-4)
    assert torch.equal(ppo.forward_values(m.value, g), ppo.forward_values(m.value, g))
    metrics, rollout = ppo.ppo_step(
        m,
        optimizer,
        Accelerator(cpu=True),
        p,
        prompts,
        p.kl_coef,
        seed=0,
        ptx_data=None,
        shuffle_gen=torch.Generator().manual_seed(1),
        ptx_gen=torch.Generator().manual_seed(2),
    )
    for k in ("objective/kl", "objective/scores", "policy/pg_loss", "val/vf_loss", "loss/total"):
        assert math.isfinite(metrics[k]), k
    assert metrics["policy/minibatches"] == 2
    assert_all_changed(m.policy, before["policy"])
    assert_all_changed(m.value, before["value"])


def random_generation(vocab: int, pad_id: int) -> Generation:
    """Six rollouts with prompts (left-padded) and responses (right-padded) of different lengths."""
    g = torch.Generator().manual_seed(0)
    prompt_len, response_len = torch.tensor([10, 4, 7, 2, 9, 5]), torch.tensor([8, 3, 1, 6, 8, 2])
    prompt_mask = (torch.arange(10)[None] >= 10 - prompt_len[:, None]).long()  # (6, 10)
    response_mask = (torch.arange(8)[None] < response_len[:, None]).long()  # (6, 8)
    prompt_ids = torch.randint(2, vocab, (6, 10), generator=g).masked_fill(prompt_mask == 0, pad_id)
    response_ids = torch.randint(2, vocab, (6, 8), generator=g).masked_fill(
        response_mask == 0, pad_id
    )
    return Generation(
        prompt_ids,
        prompt_mask,
        response_ids,
        response_mask,
        [""] * 6,
        torch.ones(6, dtype=torch.bool),
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_and_padded_forwards_give_the_same_numbers(arch, monkeypatch):
    """For every architecture the padded path equals a plain forward of the (B, P + R) batch
    (left-padded prompts, positions of real tokens, as tests/test_ppo.py's reference); for
    the packable ones (llama, qwen2) the packed path equals the padded one, so the choice of
    path never changes a logprob or value. GPT-2 packs correctly too (checked here), though it
    takes the padded path. The configs keep use_cache=True, their default: packing must not
    depend on it."""
    tokenizer = tiny_tokenizer(with_pad=True)
    torch.manual_seed(0)
    config = tiny_config(arch, tokenizer)
    assert config.use_cache
    policy = AutoModelForCausalLM.from_config(config).eval()
    value_config = tiny_config(arch, tokenizer)
    value_config.num_labels = 1
    value = AutoModelForSequenceClassification.from_config(value_config).eval()
    g = random_generation(len(tokenizer), tokenizer.pad_token_id)
    monkeypatch.setattr(packing, "PACK_ROW", 32)  # several rows, several sequences a row
    packed, padded = ppo.pack(g), ppo.pack(g, padded=True)
    assert 1 < packed.rows_.input_ids.shape[0] < 6
    with torch.no_grad():
        ids = torch.cat([g.prompt_ids, g.response_ids], dim=1)  # (6, P + R)
        mask = torch.cat([g.prompt_mask, g.response_mask], dim=1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        P, resp = g.prompt_ids.shape[1], g.response_mask.float()
        logits = policy(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        logp = torch.log_softmax(logits[:, P - 1 : -1] / 1.3, dim=-1)  # (6, R, V)
        want_lp = logp.gather(-1, g.response_ids[..., None]).squeeze(-1) * resp
        hidden = value.base_model(input_ids=ids, attention_mask=mask, position_ids=pos)
        want_v = value.score(hidden.last_hidden_state[:, P - 1 : -1]).squeeze(-1) * resp
        for pk in (padded, packed):
            lp, _ = ppo.forward_logprobs(policy, g, 1.3, pk)
            v = ppo.forward_values(value, g, pk)
            torch.testing.assert_close(lp, want_lp, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v, want_v, atol=1e-5, rtol=1e-5)
        # Without a Packed, each model takes its own path: the same numbers again.
        torch.testing.assert_close(ppo.forward_logprobs(policy, g, 1.3)[0], want_lp)
