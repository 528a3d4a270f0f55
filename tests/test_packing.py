"""rlhf.packing: sequences packed end to end into as few rows as PACK_ROW allows, each row as
short as that allows."""

import random

import pytest
import torch

from rlhf import packing


def _rows_at(lengths: list[int], L: int) -> int:
    return len(packing._first_fit(lengths, L))


@pytest.mark.parametrize("seed", range(20))
def test_rows_are_the_shortest_that_keep_the_row_count(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(3, 70) for _ in range(rng.randint(1, 64))]
    seqs = [torch.randint(5, 100, (n,)) for n in lengths]
    rows = packing.pack_rows(seqs, filler_id=0)
    n_rows, L = rows.input_ids.shape
    widest = max(packing.PACK_ROW, max(lengths))
    assert n_rows == _rows_at(lengths, widest)  # as few rows as at PACK_ROW
    assert max(lengths) <= L <= widest
    # no shorter row length packs them into as many rows
    lower = max(max(lengths), -(-sum(lengths) // n_rows))  # the search's first length
    assert lower == L or _rows_at(lengths, L - 1) > n_rows
    flat, pos = rows.input_ids.flatten(), rows.position_ids.flatten()
    taken = torch.zeros(n_rows * L, dtype=torch.bool)
    for s, start in zip(seqs, rows.starts.tolist(), strict=True):
        n = len(s)
        assert start % L + n <= L  # within one row
        assert torch.equal(flat[start : start + n], s)
        assert pos[start : start + n].tolist() == list(range(n))  # restarts per sequence
        assert not taken[start : start + n].any()  # no overlap
        taken[start : start + n] = True
    assert int(taken.sum()) == sum(lengths)


def test_short_sequences_get_rows_shorter_than_pack_row():
    seqs = [torch.arange(1, 31) for _ in range(4)]  # 120 tokens: one row, 120 long, not 128
    rows = packing.pack_rows(seqs)
    assert rows.input_ids.shape == (1, 120)
