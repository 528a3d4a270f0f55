"""Byte-level BPE tokenizer trained on the world corpus (stage 0).

GPT-2-style byte-level BPE (Radford et al. 2019) with the `tokenizers` library: every string
round-trips, no unknown token. Two special tokens, kept distinct so padding never looks like
the end of a response (PPO masks on EOS, the RM reads the last non-pad token):

    <|pad|>        id 0, padding only; never trained on
    <|endoftext|>  id 1, EOS: ends every pretraining document and every response

No BOS is inserted (bos_token = eos_token, as in GPT-2): documents are separated by EOS.

The result is a `transformers` PreTrainedTokenizerFast (in transformers 5 an alias of
`TokenizersBackend`), saved with `save_pretrained`, so `AutoTokenizer.from_pretrained(dir)`
loads it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from rlhf.errors import RunError
from rlhf.files import atomic_dir

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [PAD_TOKEN, EOS_TOKEN]  # ids 0 and 1, in this order


def train_tokenizer(
    documents: Iterable[str], vocab_size: int, padding_side: str = "right"
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of `vocab_size` tokens (special tokens included) on `documents`.

    Deterministic: the same documents give a byte-identical tokenizer.json (the BPE trainer
    breaks frequency ties by the pair itself, and we train single-threaded over a list).
    Use `padding_side="left"` for generation; `with_padding_side` switches an existing one.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size}: byte-level BPE needs at least 258 tokens")
    docs = [d for d in documents if d]
    if not docs:
        raise ValueError("train_tokenizer: no non-empty documents to train on")

    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: "Q: x" and " x" tokenize as they appear in running text.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no unknowns
        show_progress=False,
    )
    # The trainer counts words in parallel (RAYON), but merges are chosen by (count, pair)
    # order, so the result does not depend on the thread count; a list keeps the order fixed.
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    return _wrap(tok, padding_side)


def _wrap(tok: Tokenizer, padding_side: str) -> PreTrainedTokenizerFast:
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=None,
        padding_side=padding_side,
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,  # the model's block size is the real limit
    )


def with_padding_side(tokenizer: PreTrainedTokenizerFast, side: str) -> PreTrainedTokenizerFast:
    """The same tokenizer set to pad on `side` (left for generation, right for training)."""
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
    tokenizer.padding_side = side
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | os.PathLike) -> Path:
    """save_pretrained into `out_dir` atomically (temp dir in the same parent, then rename).

    If `out_dir` exists, only the tokenizer files in it are replaced (a model dir keeps its
    weights)."""
    with atomic_dir(out_dir, merge=True) as tmp:
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def load_tokenizer(
    tok_dir: str | os.PathLike, padding_side: str | None = None
) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by `save_tokenizer` (or any local save_pretrained dir)."""
    path = Path(tok_dir)
    if not (path / "tokenizer.json").exists():
        raise RunError(f"{path}: no tokenizer.json (not a tokenizer directory)")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: cannot load the tokenizer ({e})") from None
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        raise RunError(f"{path}: tokenizer needs a pad token distinct from EOS")
    if padding_side is not None:
        with_padding_side(tok, padding_side)
    return tok


def encode_documents(tokenizer: PreTrainedTokenizerFast, documents: Iterable[str]) -> list[int]:
    """Token ids of the documents concatenated, each followed by EOS (GPT-2's document
    separator): the model learns where a text ends, which is where a response should stop."""
    docs = list(documents)
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    # Batch encoding runs in Rust over all documents at once.
    for row in tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []:
        ids.extend(row)
        ids.append(eos)
    return ids
