"""rlhf.tokenizer: determinism, special tokens, save/load round trip."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from rlhf.errors import RunError
from rlhf.tokenizer import (
    EOS_TOKEN,
    PAD_TOKEN,
    encode_documents,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["the", "capital", "of", "Vell", "is", "Orm", "Q:", "what", "A:", "cats", "blue"]
    words += ["red", "dog", "ran", "12", "+", "7", "=", "19"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(n)]


def test_training_is_deterministic(tmp_path):
    a, b = train_tokenizer(corpus(), 400), train_tokenizer(corpus(), 400)
    save_tokenizer(a, tmp_path / "a")
    save_tokenizer(b, tmp_path / "b")
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (
        tmp_path / "b/tokenizer.json"
    ).read_bytes()
    assert (tmp_path / "a/tokenizer.json").read_bytes() != (
        save_tokenizer(train_tokenizer(corpus(seed=1), 400), tmp_path / "c") / "tokenizer.json"
    ).read_bytes()


def test_special_tokens_pad_differs_from_eos():
    tok = train_tokenizer(corpus(), 400)
    assert tok.pad_token == PAD_TOKEN and tok.eos_token == EOS_TOKEN
    assert tok.pad_token_id != tok.eos_token_id
    assert len(tok) <= 400
    # No automatic BOS/EOS: encoding is just the text.
    ids = tok("Q: what\nA:")["input_ids"]
    assert tok.eos_token_id not in ids and tok.pad_token_id not in ids
    # Byte-level: any string round-trips, even characters never seen in training.
    text = "Q: ünïcödé ✓ 42\nA: ok"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_encode_documents_appends_eos():
    tok = train_tokenizer(corpus(), 400)
    ids = encode_documents(tok, ["the cat", "dog"])
    assert ids == tok("the cat")["input_ids"] + [tok.eos_token_id] + tok("dog")["input_ids"] + [
        tok.eos_token_id
    ]


def test_padding_side(tmp_path):
    tok = train_tokenizer(corpus(), 400, padding_side="left")
    enc = tok(["the", "the capital of"], padding=True)
    assert enc["input_ids"][0][0] == tok.pad_token_id and enc["attention_mask"][0][0] == 0
    assert (
        load_tokenizer(save_tokenizer(tok, tmp_path / "t"), padding_side="right").padding_side
        == "right"
    )


def test_save_load_round_trip(tmp_path):
    tok = train_tokenizer(corpus(), 400)
    out = save_tokenizer(tok, tmp_path / "tok")
    for loaded in (load_tokenizer(out), AutoTokenizer.from_pretrained(str(out))):
        assert loaded.pad_token_id == tok.pad_token_id
        assert loaded.eos_token_id == tok.eos_token_id
        assert len(loaded) == len(tok)
        for text in corpus(20, seed=5):
            assert loaded(text)["input_ids"] == tok(text)["input_ids"]


def test_load_missing_dir_names_it(tmp_path):
    with pytest.raises(RunError, match=str(tmp_path)):
        load_tokenizer(tmp_path)


def test_too_small_vocab():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(corpus(), 100)


def test_the_config_bound_of_vocab_size_is_the_tokenizers_minimum():
    import dataclasses

    from rlhf.config import WorldConfig
    from rlhf.tokenizer import SPECIAL_TOKENS

    (f,) = [f for f in dataclasses.fields(WorldConfig) if f.name == "vocab_size"]
    assert f.metadata["ge"] == 256 + len(SPECIAL_TOKENS)
