"""The RM's likelihood term (rlhf.likelihood, rm.likelihood_weight): the mean log p of the
response against transformers' own LM loss, the response mask, and a micro RM that trains the
term end to end, saves it and scores as it trained."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

from rlhf import likelihood, reward
from rlhf.config import load
from rlhf.errors import RunError
from rlhf.runs import read_eval, saved_config
from rlhf.world import build_world

PROMPTS = ["Q: What is 2 plus 3?\nA:", "Q: Reverse the word boat.\nA:", "Q: Hi\nA:"]
RESPONSES = ["5.", "The answer is taob.", "Here it is: boat boat boat boat"]


def test_mean_logprob_of_a_fresh_rm_is_the_sft_models_lm_loss(rm_ready):
    """The term reads the trunk through the tied embedding: on the SFT model the RM starts
    from it is the causal LM's own mean NLL over the response tokens and EOS (labels -100 on
    the prompt and padding), which is an independent computation."""
    sft_dir = reward.sft_model_dir(rm_ready)
    model, tokenizer = reward.load_backbone(sft_dir, seed=0)
    enc = reward.encode_pairs(tokenizer, PROMPTS, RESPONSES, 128, response_mask=True)
    with torch.no_grad():
        hidden = model.base_model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
        got = likelihood.padded_logprob(
            model.get_input_embeddings().weight, hidden, enc["input_ids"], enc["response_mask"]
        )
        lm = AutoModelForCausalLM.from_pretrained(str(sft_dir))
        for i in range(len(PROMPTS)):
            labels = torch.where(enc["response_mask"][i], enc["input_ids"][i], -100)[None]
            loss = lm(input_ids=enc["input_ids"][i : i + 1], labels=labels).loss
            assert float(got[i]) == pytest.approx(-float(loss), abs=1e-4)


def test_response_mask_covers_the_response_and_eos_of_the_kept_tokens(rm_ready):
    _, tokenizer = reward.load_backbone(reward.sft_model_dir(rm_ready), seed=0)
    for max_length in (128, 6):  # 6: the prompt's start, then the response's, are cut
        enc = reward.encode_pairs(tokenizer, PROMPTS, RESPONSES, max_length, response_mask=True)
        ids, mask, resp = enc["input_ids"], enc["attention_mask"], enc["response_mask"]
        for i, r in enumerate(RESPONSES):
            n = int(mask[i].sum())
            r_ids = tokenizer(" " + r, add_special_tokens=False)["input_ids"]
            kept = min(len(r_ids) + 1, n - 1)  # never position 0: it has no prediction
            assert resp[i].tolist() == [False] * (n - kept) + [True] * kept + [False] * (
                len(mask[i]) - n
            )
            assert int(ids[i, n - 1]) == tokenizer.eos_token_id


def test_a_model_with_untied_embeddings_is_refused():
    cfg = LlamaConfig(
        vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False, num_labels=1,
    )  # fmt: skip
    model = AutoModelForSequenceClassification.from_config(cfg)
    with pytest.raises(RunError, match="needs a model whose output unembedding is tied"):
        likelihood.LikelihoodRM(model, 1.0)


def test_an_rm_with_the_likelihood_term_trains_saves_and_scores_as_it_trained(rm_ready):
    cfg = load("micro", workspace=rm_ready.workspace, **{"rm.likelihood_weight": 1.0})
    assert saved_config(cfg, "rm")["rm"]["likelihood_weight"] == 1.0
    assert "likelihood_weight" not in saved_config(rm_ready, "rm")["rm"]  # older runs match
    run = reward.train(cfg, progress=False)
    report = read_eval(run)
    learned = report["likelihood_weight"]["learned"]
    assert report["likelihood_weight"]["start"] == 1.0 and learned != 1.0  # w trains too
    assert "likelihood term" in reward.summary(report)
    rm = reward.load_reward_model(run.model_dir)
    assert rm.likelihood_weight == pytest.approx(learned)
    demos = build_world(cfg, progress=False).demonstrations("train")
    scores = rm.score([d.prompt for d in demos], [d.response for d in demos])
    assert abs(float(scores.mean())) < 1e-3  # paper 3.5's bias, with the term included
    # score() = the head at the last token + w * mean log p, plus the bias
    enc = reward.encode_pairs(rm.tokenizer, PROMPTS, RESPONSES, rm.max_length, True)
    with torch.no_grad():
        hidden = rm.model.base_model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
        last = enc["attention_mask"].sum(1) - 1
        head = rm.model.score(hidden[torch.arange(3), last]).squeeze(-1)
        lp = likelihood.padded_logprob(
            rm.model.get_input_embeddings().weight, hidden, enc["input_ids"], enc["response_mask"]
        )
    expected = head + learned * lp + rm.bias
    assert rm.score(PROMPTS, RESPONSES).tolist() == pytest.approx(expected.tolist(), abs=1e-4)
    # the trunk moved from the SFT model (the ranking loss reaches it through the term too)
    start = AutoModelForCausalLM.from_pretrained(str(reward.sft_model_dir(cfg)))
    moved = dict(rm.model.base_model.named_parameters())
    unchanged = [n for n, p in start.model.named_parameters() if torch.equal(p, moved[n])]
    assert not unchanged, unchanged
    # accuracy() scores with the term as score() does
    rows = reward.split_comparisons(
        reward.training_comparisons(cfg)[0],
        {lab.id for lab in build_world(cfg, progress=False).heldout_labelers},
    )["train"]
    assert reward.accuracy(rm, rows)[0] == pytest.approx(report["accuracy/train"])


def test_an_interrupted_likelihood_rm_resumes_with_its_weight(rm_ready, tmp_path, interrupt_after):
    """The Trainer checkpoints the wrapper (classifier and w) and resumes from it."""
    from conftest import assert_resumed

    cfg = load("micro", workspace=rm_ready.workspace, **{"rm.likelihood_weight": 1.0})
    every = cfg.rm.checkpoint_every
    with interrupt_after(every):
        reward.train(cfg, run_dir=tmp_path / "r", progress=False)
    resume = lambda: reward.train(cfg, run_dir=tmp_path / "r", progress=False)  # noqa: E731
    assert_resumed(reward.Run.open(tmp_path / "r"), every, cfg.rm.max_steps, resume)
    assert read_eval(reward.Run.open(tmp_path / "r"))["likelihood_weight"]["learned"] != 1.0
