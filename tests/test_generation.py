"""rlhf.generation: left padding, EOS stopping, determinism, logprobs."""

from __future__ import annotations

import pytest
import torch

from rlhf.config import PretrainConfig
from rlhf.generation import generate
from rlhf.models import build_base_model
from rlhf.tokenizer import encode_documents, train_tokenizer

DOCS = [
    "Q: say hi\nA: hi there",
    "Q: count to three\nA: one two three",
    "Q: name a colour\nA: blue",
    "Q: what is two plus two\nA: four",
] * 20


@pytest.fixture(scope="module")
def trained():
    """A 2-layer model trained for a few seconds until it answers DOCS and then emits EOS."""
    torch.set_num_threads(1)
    tok = train_tokenizer(DOCS, 300)
    pcfg = PretrainConfig(
        hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, block_size=64
    )
    model = build_base_model(pcfg, tok, seed=0)
    ids = torch.tensor(encode_documents(tok, DOCS[:4]))  # (L,) four documents + EOS each
    x = ids[None, :]  # (1, L): one sequence, the model memorises it
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(150):
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5, f"fixture model did not fit ({loss.item():.2f})"
    return model.eval(), tok


PROMPTS = ["Q: count to three\nA:", "Q: say hi\nA:", "Q: what is two plus two\nA:"]


def test_left_padding_matches_single_prompt(trained):
    model, tok = trained
    batch = generate(model, tok, PROMPTS, max_new_tokens=12, greedy=True)
    # The prompts differ in length, so the batch really is padded on the left.
    assert (batch.prompt_mask == 0).any()
    assert (batch.prompt_mask[:, -1] == 1).all()
    for i, prompt in enumerate(PROMPTS):
        single = generate(model, tok, [prompt], max_new_tokens=12, greedy=True)
        assert single.texts[0] == batch.texts[i]
        n = single.response_ids.shape[1]
        assert torch.equal(single.response_ids[0], batch.response_ids[i, :n])


def test_stops_at_eos_and_masks(trained):
    model, tok = trained
    out = generate(model, tok, PROMPTS, max_new_tokens=12, greedy=True, return_logprobs=True)
    assert out.texts == [" one two three", " hi there", " four"]
    assert out.ended.all()
    for row, mask in zip(out.response_ids, out.response_mask, strict=True):
        n = int(mask.sum())
        assert row[n - 1] == tok.eos_token_id  # the mask ends on (and includes) EOS
        assert (row[n:] == tok.pad_token_id).all()
        assert mask[:n].all() and not mask[n:].any()
    assert out.logprobs.shape == out.response_ids.shape
    assert (out.logprobs[out.response_mask == 0] == 0).all()
    assert (out.logprobs[out.response_mask == 1] <= 0).all()


def test_cut_at_max_new_tokens_is_not_ended(trained):
    model, tok = trained
    out = generate(model, tok, ["Q: count to three\nA:"], max_new_tokens=2, greedy=True)
    assert not out.ended[0] and out.response_mask.sum() == 2


def test_sampling_is_deterministic_for_a_seed(trained):
    model, tok = trained
    prompts = PROMPTS * 4
    kw = dict(max_new_tokens=10, temperature=2.0, batch_size=5, return_logprobs=True)
    a = generate(model, tok, prompts, seed=1, **kw)
    b = generate(model, tok, prompts, seed=1, **kw)
    c = generate(model, tok, prompts, seed=2, **kw)
    assert torch.equal(a.response_ids, b.response_ids) and a.texts == b.texts
    assert torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.response_ids, c.response_ids)


def test_logprobs_match_a_full_forward(trained):
    """The cached decode scores each token as a plain forward pass over prompt + response does."""
    model, tok = trained
    out = generate(
        model, tok, PROMPTS, max_new_tokens=8, temperature=1.5, seed=3, return_logprobs=True
    )
    ids = torch.cat([out.prompt_ids, out.response_ids], dim=1)  # (B, P + R)
    mask = torch.cat([out.prompt_mask, out.response_mask], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # (B, P+R, V)
    P = out.prompt_ids.shape[1]
    logp = torch.log_softmax(logits[:, P - 1 : -1] / 1.5, dim=-1)  # (B, R, V)
    ref = logp.gather(-1, out.response_ids[..., None]).squeeze(-1) * out.response_mask
    torch.testing.assert_close(out.logprobs, ref, atol=1e-4, rtol=1e-4)
    entropy = -(logp.exp() * logp).sum(-1) * out.response_mask  # (B, R)
    torch.testing.assert_close(out.entropy, entropy, atol=1e-4, rtol=1e-4)


def test_top_p_tiny_is_greedy(trained):
    model, tok = trained
    greedy = generate(model, tok, PROMPTS, max_new_tokens=8, greedy=True)
    nucleus = generate(model, tok, PROMPTS, max_new_tokens=8, top_p=1e-6, seed=7)
    assert nucleus.texts == greedy.texts


def test_bad_arguments(trained):
    model, tok = trained
    with pytest.raises(ValueError, match="temperature"):
        generate(model, tok, PROMPTS, 4, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, tok, PROMPTS, 4, top_p=0.0)
    with pytest.raises(ValueError, match="no prompts"):
        generate(model, tok, [], 4)


def test_inverse_cdf_sampling_draws_each_token_with_its_probability():
    """The sampler's draw (inverse CDF) against the probabilities it is given: frequencies
    within 4 standard errors over 200,000 draws per row, weight-0 tokens never drawn, weights
    need not sum to 1 (top-p leaves them unnormalised)."""
    from rlhf.generation import inverse_cdf_sample

    probs = torch.tensor(
        [[0.1, 0.0, 0.2, 0.7, 0.0], [0.0, 0.0, 0.0, 0.0, 0.3], [0.05, 0.05, 0.4, 0.0, 0.0]]
    )
    n = 200_000
    g = torch.Generator().manual_seed(0)
    draws = inverse_cdf_sample(probs.repeat_interleave(n, 0), g).view(3, n)  # (3, n)
    for row, p in zip(draws, probs, strict=True):
        freq = torch.bincount(row, minlength=5).double() / n
        want = (p / p.sum()).double()
        se = (want * (1 - want) / n).sqrt()
        assert ((freq - want).abs() <= 4 * se + 1e-12).all(), (freq, want)
        assert (freq[want == 0] == 0).all()


def test_min_new_tokens_holds_eos_back_then_lets_it_end(trained):
    model, tok = trained
    prompts = ["Q: say hi\nA:", "Q: name a colour\nA:"]
    free = generate(model, tok, prompts, max_new_tokens=20, greedy=True)
    assert free.ended.all() and (free.lengths < 8).all()  # the model ends its answers early
    held = generate(model, tok, prompts, max_new_tokens=20, greedy=True, min_new_tokens=8)
    assert (held.lengths >= 8).all()
    assert not (held.response_ids[:, :8] == tok.eos_token_id).any()
    full = generate(model, tok, prompts, max_new_tokens=12, min_new_tokens=12, seed=1)
    assert (full.lengths == 12).all() and not full.ended.any()


def test_the_pad_token_is_never_drawn_and_a_response_stays_unbroken(trained):
    """Pad is an ordinary row of the LM head. Drawn inside a response it cut the response
    mask there: the packed PPO forwards then scored the next tokens one column off and put the
    reward on the wrong token. With pad made the likeliest token of every step, no response
    holds it, greedy takes the runner-up, and the logprobs are still the full softmax's."""
    model, tok = trained
    pad = tok.pad_token_id
    head = model.get_output_embeddings()

    def favour_pad(_module, _inputs, logits):  # (..., V): pad far ahead of every other token
        logits = logits.clone()
        logits[..., pad] = logits.max(-1).values + 3.0
        return logits

    hook = head.register_forward_hook(favour_pad)
    try:
        out = generate(
            model,
            tok,
            PROMPTS * 4,
            max_new_tokens=8,
            seed=0,
            temperature=1.0,
            return_logprobs=True,
        )
        greedy = generate(model, tok, PROMPTS, max_new_tokens=8, greedy=True)
        ids = torch.cat([out.prompt_ids, out.response_ids], dim=1)  # (B, P + R)
        mask = torch.cat([out.prompt_mask, out.response_mask], dim=1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    finally:
        hook.remove()
    for row, m in zip(out.response_ids, out.response_mask, strict=True):
        n = int(m.sum())
        assert n > 0 and m[:n].all() and not m[n:].any()  # one unbroken run from column 0
        assert not (row[:n] == pad).any()
    assert greedy.texts == [" one two three", " hi there", " four"]  # the runner-up: as before
    P = out.prompt_ids.shape[1]
    logp = torch.log_softmax(logits[:, P - 1 : -1], dim=-1)  # (B, R, V), pad's mass included
    ref = logp.gather(-1, out.response_ids[..., None]).squeeze(-1) * out.response_mask
    torch.testing.assert_close(out.logprobs, ref, atol=1e-4, rtol=1e-4)
    assert (out.logprobs[out.response_mask == 1] < -1.0).all()  # pad took most of the mass
