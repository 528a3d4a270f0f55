"""Sequences packed end to end into rows, attention kept within each sequence.

A batch of short sequences of different lengths, padded to the longest, is mostly padding on
the Tiny World (rollouts: ~45% real tokens). Packed instead, first fit by decreasing length
into rows of at most PACK_ROW tokens, with position ids restarting at 0 with every sequence (and
with the row's filler tail): given position ids and no attention mask, transformers reads the
restarts as sequence boundaries and masks attention block-diagonally, so each sequence sees
only itself, exactly as in its own padded row (tests compare the two). Bounded rows keep the
attention cost linear in the batch size. Used by the PPO forwards (rlhf.ppo) and the reward
model's scoring (rlhf.reward.RewardModel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PACK_ROW = 128  # tokens a packed row holds at most (or the longest sequence): attention costs
#                rows x row_length^2


@dataclass
class PackedRows:
    input_ids: torch.Tensor  # (rows, L) the sequences end to end, then filler
    position_ids: torch.Tensor  # (rows, L) 0.. within each sequence (and within the filler)
    starts: torch.Tensor  # (N,) flat index into rows x L of each sequence's first token
    attention_mask: torch.Tensor | None = None  # (rows, L) 1 on tokens: padded rows only


def pack_rows(seqs: list[torch.Tensor], filler_id: int = 0) -> PackedRows:
    """Pack 1-D id tensors (N of them) into as few rows as rows of max(PACK_ROW, longest)
    tokens take, each row then as short as still takes them (first fit decreasing at both). The
    filler's id does not matter: it attends only to other filler and nothing reads its output."""
    if not seqs:
        raise ValueError("pack_rows: no sequences")
    lengths = [len(s) for s in seqs]
    L = max(PACK_ROW, max(lengths))
    bins = _first_fit(lengths, L)
    # The shortest rows that still take the sequences in as many rows: less filler to run
    # through the model (rows x L positions) and cheaper attention (rows x L^2).
    for shorter in range(max(max(lengths), -(-sum(lengths) // len(bins))), L):
        tight = _first_fit(lengths, shorter)
        if len(tight) == len(bins):
            L, bins = shorter, tight
            break
    ids = torch.full((len(bins), L), filler_id, dtype=seqs[0].dtype)
    pos = torch.zeros((len(bins), L), dtype=torch.long)
    starts = torch.zeros(len(seqs), dtype=torch.long)
    for k, row in enumerate(bins):
        offset = 0
        for i in row:
            n = len(seqs[i])
            ids[k, offset : offset + n] = seqs[i]
            pos[k, offset : offset + n] = torch.arange(n)
            starts[i] = k * L + offset
            offset += n
        pos[k, offset:] = torch.arange(L - offset)  # the filler: one more "sequence"
    return PackedRows(ids, pos, starts)


def _first_fit(lengths: list[int], L: int) -> list[list[int]]:
    """Sequence indices per row of L tokens, first fit by decreasing length."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        k = next((k for k, free in enumerate(room) if free >= n), len(bins))
        if k == len(bins):
            bins.append([])
            room.append(L)
        bins[k].append(i)
        room[k] -= n
    return bins


def pad_rows(seqs: list[torch.Tensor], pad_id: int = 0) -> PackedRows:
    """The padded layout for models that cannot be packed: one sequence a row, right-padded to
    the longest, with an attention mask and position ids 0.. from it (padding repeats the last
    one; causal attention keeps real tokens from seeing it anyway)."""
    if not seqs:
        raise ValueError("pad_rows: no sequences")
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=seqs[0].dtype)  # (N, L)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)  # (N, L)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (N, L)
    return PackedRows(ids, pos, torch.arange(len(seqs)) * L, mask)


def last_hidden(trunk: torch.nn.Module, rows: PackedRows) -> torch.Tensor:
    """(rows x L, H): the trunk's last hidden state at every packed (or padded) position."""
    out = trunk(
        input_ids=rows.input_ids,
        position_ids=rows.position_ids,
        attention_mask=rows.attention_mask,
        # transformers reads packed position ids only when there is no cache: a config with
        # use_cache=True (the default of most configs) would let packed sequences see each other.
        use_cache=False,
    )
    return out.last_hidden_state.flatten(0, 1)


# Model types whose attention honours packed position ids: transformers builds the
# block-diagonal mask from the restarts (tests/test_architectures.py compares packed with padded
# forwards). Every other type takes the padded path (`pad_rows`): encoders (BERT's MiniLM)
# attend both ways; GPT-2's packed forward matches too in transformers 5.23, but it stays
# padded, the architecture the tests run that path on end to end.
PACKABLE = frozenset({"llama", "qwen2"})


def packable(model: torch.nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) in PACKABLE
