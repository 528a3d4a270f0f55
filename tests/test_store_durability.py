"""rlhf.store across real processes: simultaneous writers lose nothing, a writer killed mid-way
leaves whole batches only, and a rejected submission changes no byte.

Labelers, the dashboard and trainers are separate processes sharing one lab.db, so these use
spawned processes and SIGKILL rather than threads. Waits are polls with generous deadlines:
the machine may be loaded.
"""

import json
import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from rlhf.errors import StoreError
from rlhf.store import Comparison, Store, validate

CTX = multiprocessing.get_context("spawn")
DEADLINE = 90.0  # seconds for anything a child process must do; only reached on failure
RANKINGS = ([0, 1, 2], [2, 0, 1], [1, 2, 0], [0, 0, 1], [1, 1, 0])


def record(labeler, i, tag="ranking", size=0):
    """The i-th comparison of `labeler`; the prompt names both, so order can be checked."""
    pad = "x" * size
    return Comparison(
        prompt=f"{labeler} {tag} {i}",
        responses=[f"{labeler} {i} a{pad}", f"{labeler} {i} b{pad}", f"{labeler} {i} c{pad}"],
        ranking=list(RANKINGS[i % len(RANKINGS)]),
        labeler=labeler,
        source="human" if labeler.startswith("p") else "simulated",
    )


def integrity(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def raw_rows(path):
    """Every column of every row, `batch` included, straight from SQLite."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM comparisons ORDER BY id").fetchall()
    finally:
        conn.close()


def wait_for(condition, what, proc=None):
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if proc is not None and not proc.is_alive():
            raise AssertionError(f"{what}: the child exited early (code {proc.exitcode})")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {DEADLINE:.0f} s")
        time.sleep(0.01)


def sigkill(proc) -> None:
    """Kill `proc` as a crash would (no cleanup, no exit handlers) and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=DEADLINE)
    assert proc.exitcode == -signal.SIGKILL


def stop(procs):
    for p in procs:
        if p.pid is None:  # never started
            continue
        if p.is_alive():
            p.kill()
        p.join(timeout=DEADLINE)


# ------------------------------------------------------------------ a. two writers at once


def _write_rankings(path, labeler, n, barrier):
    with Store(path) as s:
        barrier.wait(timeout=DEADLINE)  # both connected: start together so writes interleave
        for i in range(n):
            s.add_comparisons([record(labeler, i)])  # one ranking, one transaction
            time.sleep(0.001)  # pace like a (fast) labeler; a tight loop starves the other


def test_two_processes_each_write_200_rankings_at_once(tmp_path):
    path = tmp_path / "lab.db"
    Store(path).close()
    barrier = CTX.Barrier(2)
    procs = [
        CTX.Process(target=_write_rankings, args=(path, f"p{k}", 200, barrier)) for k in (0, 1)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=DEADLINE)
        assert [p.exitcode for p in procs] == [0, 0]
    finally:
        stop(procs)
    with Store(path) as s:
        rows = s.comparisons()
        assert s.count() == len(rows) == 400
        assert s.count_by_labeler() == {"p0": 200, "p1": 200}
    ids = [c.id for c in rows]
    assert ids == sorted(set(ids))
    switches = sum(a.labeler != b.labeler for a, b in zip(rows, rows[1:], strict=False))
    assert switches >= 2, "one writer finished before the other began: nothing was concurrent"
    for i, c in enumerate(rows):
        validate(c, i)
    for name in ("p0", "p1"):  # each process's rankings, complete and in its own order
        mine = [(c.prompt, c.responses, c.ranking, c.source) for c in rows if c.labeler == name]
        want = [record(name, i) for i in range(200)]
        assert mine == [(r.prompt, r.responses, r.ranking, r.source) for r in want]
    assert integrity(path) == [("ok",)]


# ------------------------------------------------------------------ b. a writer killed mid-way


def _write_batches(path, labeler, n_batches, size=0):
    with Store(path) as s:
        for b in range(n_batches):  # 3 comparisons per batch: each batch one transaction
            s.add_comparisons([record(labeler, j, f"batch {b} item", size) for j in range(3)])


def test_a_writer_killed_mid_way_leaves_whole_batches_and_a_usable_store(tmp_path):
    path = tmp_path / "lab.db"
    with Store(path) as s:
        for i in range(0, 10, 2):
            s.add_comparisons([record("keeper", i), record("keeper", i + 1)])
    victim = CTX.Process(target=_write_batches, args=(path, "victim", 100_000, 2000))
    victim.start()
    try:
        with Store(path) as s:
            i = 10

            def enough():  # keep the other labeler writing while the victim runs
                nonlocal i
                s.add_comparisons([record("keeper", i)])
                i += 1
                return s.count(labeler="victim") >= 150

            wait_for(enough, "the victim storing 50 batches", victim)
            keeper = s.comparisons(labeler="keeper")
        sigkill(victim)
    finally:
        stop([victim])

    assert integrity(path) == [("ok",)]
    with Store(path) as s:
        assert s.comparisons(labeler="keeper") == keeper  # ids, times and all
        assert len(keeper) > 10
        rows = s.comparisons(labeler="victim")
        batches: dict[int, list[Comparison]] = {}
        for c in rows:
            _, _, b, _, j = c.prompt.split()
            batches.setdefault(int(b), []).append(c)
        assert len(batches) >= 50
        assert sorted(batches) == list(range(len(batches)))  # batches commit in order
        for b, got in batches.items():
            assert [c.prompt for c in got] == [f"victim batch {b} item {j}" for j in range(3)]
            assert [c.id for c in got] == list(range(got[0].id, got[0].id + 3))
            for c in got:
                validate(c)
        victim_batches = {row[-1] for row in raw_rows(path) if row[5] == "victim"}
        assert len(victim_batches) == len(batches)
        # The store is writable again at once, by anyone, and undo still sees whole batches.
        s.add_comparisons([record("after", 0), record("after", 1)])
        s.add_comparisons([record("victim", 0, "new")])
        assert s.undo_last("victim") == 1 and s.undo_last("victim") == 3
        assert s.count(labeler="after") == 2
    assert integrity(path) == [("ok",)]


def _die_inside_a_transaction(path, ready):
    """Insert 2 of a batch's 3 rows inside an open write transaction, spilling them to the
    WAL (tiny page cache, large rows), then wait to be killed before the third and COMMIT."""
    with Store(path) as s:
        s._db().execute("PRAGMA cache_size = 5")
        with s._transaction() as c:
            for j in range(2):
                r = record("victim", j, "open", size=50_000)
                c.execute(
                    "INSERT INTO comparisons (prompt, responses, ranking, labeler, source, "
                    "created, batch) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.prompt,
                        json.dumps(r.responses),
                        json.dumps(r.ranking),
                        r.labeler,
                        "human",
                        "t",
                        "b",
                    ),
                )
            Path(ready).touch()
            time.sleep(DEADLINE)


def test_a_writer_killed_inside_its_transaction_leaves_nothing_of_it(tmp_path):
    path, ready = tmp_path / "lab.db", tmp_path / "ready"
    with Store(path) as s:
        s.add_comparisons([record("keeper", 0), record("keeper", 1)])
        before = s.comparisons()
    wal = tmp_path / "lab.db-wal"
    wal_before = wal.stat().st_size if wal.exists() else 0  # the last close checkpoints it
    victim = CTX.Process(target=_die_inside_a_transaction, args=(path, ready))
    victim.start()
    try:
        wait_for(ready.exists, "the victim inside its transaction", victim)
        assert wal.stat().st_size > wal_before + 100_000  # uncommitted pages reached the WAL
        sigkill(victim)
    finally:
        stop([victim])
    assert integrity(path) == [("ok",)]
    with Store(path) as s:
        assert s.comparisons() == before
        start = time.monotonic()
        s.add_comparisons([record("keeper", 2)])  # the dead writer's lock is gone
        assert time.monotonic() - start < 5
        assert s.count() == 3
    assert integrity(path) == [("ok",)]


# ------------------------------------------------------------------ c. a rejected submission


def files(path):
    return {p.name: p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists()}


def test_an_invalid_submission_changes_nothing(tmp_path):
    path = tmp_path / "lab.db"
    with Store(path) as s:
        s.add_comparisons([record("p0", i) for i in range(3)])
        s.add_comparisons([record("sim", 0)])
        before, raw, disk = s.comparisons(), raw_rows(path), files(path)
        bad = Comparison("Q: two answers", ["a", "b"], [0, 1, 2], labeler="p0", source="human")
        with pytest.raises(StoreError) as err:  # a rank for a third response that is not there
            s.add_comparisons([record("p0", 3), bad, record("p0", 4)])
        assert str(err.value) == "record 1: field 'ranking': 3 ranks for 2 responses"
        assert s.comparisons() == before
        assert raw_rows(path) == raw
        assert files(path) == disk
        assert s.count(labeler="p0") == 3
    assert integrity(path) == [("ok",)]


def test_a_failure_after_some_rows_of_a_batch_are_inserted_rolls_them_all_back(tmp_path):
    """Past validation (a full disk, a constraint): the rows already inserted go too."""
    path = tmp_path / "lab.db"
    with Store(path) as s:
        s.add_comparisons([record("p0", i) for i in range(3)])
        raw = raw_rows(path)
        conn = sqlite3.connect(path)
        conn.execute(
            "CREATE TRIGGER fail_third BEFORE INSERT ON comparisons "
            "WHEN NEW.prompt = 'p1 ranking 2' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
        conn.commit()
        conn.close()
        with pytest.raises(StoreError, match="cannot write to the lab store: disk on fire"):
            s.add_comparisons([record("p1", i) for i in range(4)])
        assert raw_rows(path) == raw
        assert s.count(labeler="p1") == 0
        s.add_comparisons([record("p1", 0)])  # no transaction left open
        assert s.count() == 4
    assert integrity(path) == [("ok",)]
