"""rlhf.store: comparisons round-trip, writes are all or nothing, bad records name index and field."""

import json
import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import datasets
import pytest

from rlhf import config
from rlhf.cli import main
from rlhf.errors import LabError, StoreError
from rlhf.store import Comparison, Store


def comp(i=0, ranking=(0, 1, 2), labeler="ann", source="human", **kw):
    return Comparison(
        prompt=f"Q: question {i}\nA:",
        responses=[f"answer {i} a", f"answer {i} b", f"answer {i} c"][: len(ranking)],
        ranking=list(ranking),
        labeler=labeler,
        source=source,
        **kw,
    )


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "lab.db") as s:
        yield s


def test_round_trip(store):
    rec = comp(
        prompt_id="arithmetic-test-3",
        policy="sft",
        likert=[7, 3, 1],
        flags=[{"correct": True}, {"rambles": True}, {"toxic": True}],
    )
    ids = store.add_comparisons([rec, comp(1, source="simulated", labeler="sim-0")])
    assert len(ids) == 2 and ids[0] < ids[1]
    got = store.comparisons()
    assert [c.id for c in got] == ids
    first = got[0]
    assert first.prompt == rec.prompt and first.responses == rec.responses
    assert first.ranking == [0, 1, 2] and first.labeler == "ann" and first.source == "human"
    assert first.prompt_id == "arithmetic-test-3" and first.policy == "sft"
    assert first.likert == [7, 3, 1] and first.flags[1] == {"rambles": True}
    assert first.created
    assert [c.labeler for c in store.comparisons(source="simulated")] == ["sim-0"]
    assert [c.id for c in store.comparisons(labeler="ann")] == [ids[0]]
    assert store.count_by_labeler() == {"ann": 1, "sim-0": 1}


def test_open_uses_the_workspace_and_data_survives_reopening(tmp_path):
    cfg = config.LabConfig(workspace=str(tmp_path / "ws"))
    with Store.open(cfg) as s:
        assert s.path == tmp_path / "ws" / "lab.db"
        s.add_comparisons([comp()])
    with Store.open(cfg) as s:
        assert len(s.comparisons()) == 1


def test_wal_mode_is_on(store):
    assert store.journal_mode == "wal"
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 1
    finally:
        conn.close()


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_kwise(store, tmp_path):
    store.add_comparisons([comp(0), comp(1, source="simulated", labeler="sim")])
    out = tmp_path / "out" / "kwise.jsonl"
    assert store.export(out, "kwise") == 2
    rows = read_jsonl(out)
    assert rows[0] == {
        "prompt": "Q: question 0\nA:",
        "responses": ["answer 0 a", "answer 0 b", "answer 0 c"],
        "ranking": [0, 1, 2],
        "labeler": "ann",
        "source": "human",
    }
    assert store.export(out, "kwise", source="human") == 1
    assert len(read_jsonl(out)) == 1
    assert not [p for p in out.parent.iterdir() if p.name != "kwise.jsonl"]  # no temp files left


def test_export_pairs_orders_chosen_rejected_and_skips_ties(store, tmp_path):
    recs = [
        Comparison("p0", ["a", "b", "c", "d"], [2, 0, 1, 3], labeler="ann"),  # strict: 6 pairs
        Comparison("p1", ["e", "f", "g"], [1, 0, 1], labeler="ann"),  # e = g tied: 2 pairs
        Comparison("p2", ["h", "i"], [0, 0], labeler="ann"),  # all tied: no pair
    ]
    store.add_comparisons(recs)
    out = tmp_path / "pairs.jsonl"
    n = store.export(out, "pairs")
    rows = read_jsonl(out)
    expected = sum(
        1
        for r in recs
        for i in range(len(r.ranking))
        for j in range(len(r.ranking))
        if r.ranking[i] < r.ranking[j]
    )
    assert n == len(rows) == expected == 8
    assert all(set(row) == {"prompt", "chosen", "rejected"} for row in rows)
    got = {(row["prompt"], row["chosen"], row["rejected"]) for row in rows}
    assert ("p0", "b", "a") in got and ("p0", "c", "a") in got and ("p0", "a", "d") in got
    assert ("p1", "f", "e") in got and ("p1", "f", "g") in got
    assert not any(p in {("p1", "e", "g"), ("p1", "g", "e")} for p in got)
    assert not any(row["prompt"] == "p2" for row in rows)
    for r in recs:  # chosen is always ranked strictly better than rejected
        rank = dict(zip(r.responses, r.ranking, strict=True))
        for row in rows:
            if row["prompt"] == r.prompt:
                assert rank[row["chosen"]] < rank[row["rejected"]]


def test_export_unknown_format_fails(store, tmp_path):
    with pytest.raises(StoreError, match="format"):
        store.export(tmp_path / "x.jsonl", "csv")
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(StoreError, match="layout 'parquet'"):
        store.export(tmp_path / "x", "kwise", layout="parquet")
    assert not (tmp_path / "x").exists()


def test_export_jsonl_to_a_folder_is_a_clear_error_and_leaves_it(store, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(StoreError, match=r"out: is a folder; give a file path"):
        store.export(tmp_path / "out", "pairs")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]  # no temp file
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def mixed_store(store):
    """Two human and one simulated comparison, one with a tie: every export path has work."""
    store.add_comparisons([comp(0), comp(1, ranking=(1, 0, 1))])
    store.add_comparisons([comp(2, source="simulated", labeler="sim-0", ranking=(2, 0, 1))])
    return store.comparisons()


def test_export_hf_kwise_round_trip(store, tmp_path):
    recs = mixed_store(store)
    out = tmp_path / "exports" / "kwise"
    assert store.export(out, "kwise", layout="hf") == 3
    ds = datasets.load_from_disk(str(out))
    assert ds.column_names == ["prompt", "responses", "ranking", "labeler", "source"]
    assert ds.to_list() == [
        {
            "prompt": c.prompt,
            "responses": c.responses,
            "ranking": c.ranking,
            "labeler": c.labeler,
            "source": c.source,
        }
        for c in recs
    ]
    jsonl = tmp_path / "kwise.jsonl"  # the same rows as the JSONL export
    store.export(jsonl, "kwise")
    assert ds.to_list() == read_jsonl(jsonl)
    assert store.export(out, "kwise", source="simulated", layout="hf") == 1
    assert datasets.load_from_disk(str(out))["labeler"] == ["sim-0"]
    assert store.export(out, "kwise", source="human", layout="hf") == 2
    assert datasets.load_from_disk(str(out))["source"] == ["human", "human"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["kwise"]  # no temp or old folders


def test_export_hf_pairs_round_trip(store, tmp_path):
    recs = mixed_store(store)
    out = tmp_path / "pairs"
    n = store.export(out, "pairs", layout="hf")
    ds = datasets.load_from_disk(str(out))
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    expected = [
        {"prompt": c.prompt, "chosen": ch, "rejected": rj} for c in recs for ch, rj in c.pairs()
    ]
    assert n == len(ds) == len(expected) == 3 + 2 + 3  # the tie in record 1 gives no pair
    assert ds.to_list() == expected
    jsonl = tmp_path / "pairs.jsonl"
    store.export(jsonl, "pairs")
    assert ds.to_list() == read_jsonl(jsonl)
    assert store.export(out, "pairs", source="simulated", layout="hf") == 3
    simulated = datasets.load_from_disk(str(out))
    assert set(simulated["prompt"]) == {"Q: question 2\nA:"}
    best = {"prompt": "Q: question 2\nA:", "chosen": "answer 2 b", "rejected": "answer 2 a"}
    assert best in simulated.to_list()


@pytest.mark.parametrize(
    "format,columns",
    [
        ("kwise", ["prompt", "responses", "ranking", "labeler", "source"]),
        ("pairs", ["prompt", "chosen", "rejected"]),
    ],
)
def test_export_hf_of_nothing_is_an_empty_loadable_dataset(store, tmp_path, format, columns):
    store.add_comparisons([comp(0, source="simulated", labeler="sim-0")])
    out = tmp_path / "empty"
    assert store.export(out, format, source="human", layout="hf") == 0
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 0 and ds.column_names == columns


def test_export_hf_replaces_a_dataset_only_once_the_new_one_is_complete(
    store, tmp_path, monkeypatch
):
    store.add_comparisons([comp(0)])
    out = tmp_path / "exports" / "kwise"
    store.export(out, "kwise", layout="hf")
    store.add_comparisons([comp(1)])

    def disk_full(self, dataset_path, **kw):  # half a folder written, then the disk fills
        Path(dataset_path).mkdir(exist_ok=True)
        (Path(dataset_path) / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.export(out, "kwise", layout="hf")
    assert len(datasets.load_from_disk(str(out))) == 1  # the previous export, untouched
    assert [p.name for p in out.parent.iterdir()] == ["kwise"]  # the temp folder is gone
    monkeypatch.undo()
    assert store.export(out, "kwise", layout="hf") == 2
    assert len(datasets.load_from_disk(str(out))) == 2


def test_export_hf_never_replaces_other_files_or_folders(store, tmp_path):
    store.add_comparisons([comp(0)])
    folder = tmp_path / "my-notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not a saved dataset"):
        store.export(folder, "kwise", layout="hf")
    assert (folder / "notes.txt").read_text() == "keep me"
    file = tmp_path / "prefs.jsonl"
    file.write_text("{}\n")
    with pytest.raises(StoreError, match="not a folder"):
        store.export(file, "pairs", layout="hf")
    assert file.read_text() == "{}\n"
    (tmp_path / "empty").mkdir()  # an empty folder is fine to fill
    assert store.export(tmp_path / "empty", "kwise", layout="hf") == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_export_jsonl_and_hf(tmp_path, capsys):
    ws = tmp_path / "ws"
    with Store(ws / "lab.db") as s:
        mixed_store(s)
    base = ["--workspace", str(ws), "export", "comparisons", "--recipe", "micro"]
    jsonl, folder = tmp_path / "pairs.jsonl", tmp_path / "pairs"
    assert main([*base, "--format", "pairs", "--out", str(jsonl)]) == 0
    assert "8 pairs rows written to " + str(jsonl) in capsys.readouterr().out
    assert main([*base, "--format", "pairs", "--out", str(folder), "--hf"]) == 0
    assert "datasets folder" in capsys.readouterr().out
    assert datasets.load_from_disk(str(folder)).to_list() == read_jsonl(jsonl)
    args = [*base, "--format", "kwise", "--source", "human", "--out", str(folder), "--hf"]
    assert main(args) == 0
    assert datasets.load_from_disk(str(folder))["labeler"] == ["ann", "ann"]
    assert main([*base, "--format", "kwise", "--out", str(ws), "--hf"]) == 2  # not a dataset
    assert "not a saved dataset" in capsys.readouterr().err
    assert (ws / "lab.db").exists()


BAD = [
    ("duplicated response", Comparison("p", ["same", "same"], [0, 1], "ann"), "responses"),
    ("more ranks than responses", Comparison("p", ["a", "b"], [0, 1, 2], "ann"), "ranking"),
    ("fewer ranks than responses", Comparison("p", ["a", "b", "c"], [0, 1], "ann"), "ranking"),
    ("rank beyond the responses", Comparison("p", ["a", "b"], [0, 2], "ann"), "ranking"),
    ("one response", Comparison("p", ["a"], [0], "ann"), "responses"),
    ("no responses", Comparison("p", [], [], "ann"), "responses"),
    ("float rank", Comparison("p", ["a", "b"], [0, 1.5], "ann"), "ranking"),
    ("string rank", Comparison("p", ["a", "b"], [0, "1"], "ann"), "ranking"),
    ("bool rank", Comparison("p", ["a", "b"], [0, True], "ann"), "ranking"),
    ("negative rank", Comparison("p", ["a", "b"], [0, -1], "ann"), "ranking"),
    ("likert out of range", Comparison("p", ["a", "b"], [0, 1], "ann", likert=[0, 7]), "likert"),
    ("likert length", Comparison("p", ["a", "b"], [0, 1], "ann", likert=[5]), "likert"),
    ("unknown source", Comparison("p", ["a", "b"], [0, 1], "ann", source="crowd"), "source"),
]


@pytest.mark.parametrize("case,bad,field", BAD, ids=[b[0] for b in BAD])
def test_invalid_record_names_index_and_field_and_writes_nothing(store, case, bad, field):
    store.add_comparisons([comp(0), comp(1)])
    before = store.comparisons()
    with pytest.raises(StoreError) as err:
        store.add_comparisons([comp(2), comp(3), comp(4), bad])  # the bad one is record 3
    assert f"record 3: field '{field}'" in str(err.value)
    assert isinstance(err.value, LabError)
    assert store.comparisons() == before  # previous rows intact, valid records of the batch too
    assert len(before) == 2


def test_error_message_for_a_short_ranking(store):
    bad = Comparison("p", ["a", "b", "c"], [0, 1], "ann")
    with pytest.raises(StoreError, match=r"^record 0: field 'ranking': 2 ranks for 3 responses$"):
        store.add_comparisons([bad])


def test_count_by_source_and_labeler(store):
    store.add_comparisons([comp(0), comp(1), comp(2, labeler="bob")])
    store.add_comparisons([comp(3, source="simulated", labeler="sim-0")])
    assert store.count() == 4
    assert store.count("human") == 3 and store.count(source="simulated") == 1
    assert store.count(labeler="ann") == 2 and store.count(labeler="nobody") == 0
    assert store.count("human", labeler="bob") == 1
    assert store.count("simulated", labeler="bob") == 0


def test_undo_last_removes_the_newest_batch_of_that_labeler_only(store):
    store.add_comparisons([comp(0), comp(1)])
    store.add_comparisons([comp(2), comp(3), comp(4)])
    store.add_comparisons([comp(5, labeler="bob")])
    assert store.undo_last("ann") == 3
    assert [c.prompt for c in store.comparisons(labeler="ann")] == [
        "Q: question 0\nA:",
        "Q: question 1\nA:",
    ]
    assert store.count_by_labeler() == {"ann": 2, "bob": 1}
    assert store.undo_last("ann") == 2
    assert store.undo_last("ann") == 0
    assert store.count_by_labeler() == {"bob": 1}


def _writer(path, name, n_batches, barrier=None):
    with Store(path) as s:
        if barrier is not None:  # start writing together, so the batches interleave
            barrier.wait(timeout=60)
        for b in range(n_batches):
            s.add_comparisons([comp(b, labeler=name), comp(b, labeler=name, ranking=(1, 0))])
            time.sleep(0.002)  # let the other process in between batches


def test_two_processes_write_concurrently(tmp_path):
    path = tmp_path / "lab.db"  # not created beforehand: both processes race to create it
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, f"w{k}", 50, barrier)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    with Store(path) as s:
        assert s.count_by_labeler() == {"w0": 100, "w1": 100}
        rows = s.comparisons()
        assert len({c.id for c in rows}) == 200
        for name in ("w0", "w1"):  # each batch's two rows stayed together and complete
            mine = [c for c in rows if c.labeler == name]
            assert [c.ranking for c in mine] == [[0, 1, 2], [1, 0]] * 50


def test_non_sqlite_file_fails_with_its_name(tmp_path):
    path = tmp_path / "lab.db"
    path.write_text("this is not a database\n" * 50)
    with pytest.raises(StoreError, match=str(path)):
        Store(path)
    assert path.read_text().startswith("this is not")  # left untouched


def test_corrupted_sqlite_file_fails_with_its_name(tmp_path):
    path = tmp_path / "lab.db"
    with Store(path) as s:
        s.add_comparisons([comp(0)])
    data = bytearray(path.read_bytes())
    data[16:] = b"\xff" * (len(data) - 16)  # keep the header magic, destroy the rest
    path.write_bytes(bytes(data))
    for side in ("lab.db-wal", "lab.db-shm"):
        (tmp_path / side).unlink(missing_ok=True)
    with pytest.raises(StoreError, match=str(path)):
        Store(path).comparisons()


def test_other_sqlite_database_is_not_a_lab_store(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a lab store"):
        Store(path)


def test_export_never_destroys_the_store_a_device_or_a_file_it_has_nothing_for(store, tmp_path):
    """`--out lab.db` replaced the store with JSONL (every comparison lost) and said it wrote
    the rows; `--out /dev/stdout` as root replaced the symlink with a file; an export of 0 rows
    emptied the file it was pointed at. Each is refused, and nothing is touched."""
    store.add_comparisons([comp(0)])
    for target in (store.path, Path(f"{store.path}-wal"), tmp_path / "." / "lab.db"):
        with pytest.raises(StoreError, match="is the lab store itself"):
            store.export(target, "kwise")
    assert len(store.comparisons()) == 1 and store.path.read_bytes()[:6] == b"SQLite"
    with pytest.raises(StoreError, match=r"/dev/stdout: not a regular file; .* - for standard"):
        store.export(Path("/dev/stdout"), "pairs")
    assert Path("/dev/stdout").is_symlink()
    keep = tmp_path / "keep.jsonl"
    keep.write_text('{"mine": 1}\n')
    with pytest.raises(StoreError, match=r"no simulated comparisons to export; .*keep.jsonl was"):
        store.export(keep, "kwise", source="simulated")
    assert keep.read_text() == '{"mine": 1}\n'
    assert store.export(tmp_path / "new.jsonl", "kwise", source="simulated") == 0  # a new file
    assert (tmp_path / "new.jsonl").read_text() == ""


def test_export_to_standard_output_and_with_the_umask(store, tmp_path, capsys):
    store.add_comparisons([comp(0), comp(1)])
    assert store.export("-", "kwise") == 2
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == ["Q: question 0\nA:", "Q: question 1\nA:"]
    with pytest.raises(StoreError, match="needs a path, not -"):
        store.export("-", "kwise", layout="hf")
    out = tmp_path / "shared.jsonl"
    old = os.umask(0o022)
    try:
        store.export(out, "kwise")
        assert out.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        out.chmod(0o640)
        store.export(out, "pairs")
        assert out.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode
        store.export(tmp_path / "prefs", "pairs", layout="hf")
        assert (tmp_path / "prefs").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o755), (0o027, 0o750), (0o077, 0o700)])
@pytest.mark.parametrize("exists", [False, True])
def test_an_atomic_folder_gets_the_mode_of_a_plain_mkdir(tmp_path, mask, mode, exists):
    """World, tokenizer, model and checkpoint folders are written through atomic_dir; they
    were 0700 (mkdtemp's mode, kept by the rename) whatever the umask."""
    from rlhf.files import atomic_dir

    out = tmp_path / "model"
    if exists:
        out.mkdir()
    old = os.umask(mask)
    try:
        with atomic_dir(out) as d:
            (d / "weights").write_text("w")
        assert out.stat().st_mode & 0o777 == mode
        assert (out / "weights").read_text() == "w"
        assert os.umask(mask) == mask  # reading the umask left it as it was
    finally:
        os.umask(old)


def test_cli_export_from_a_workspace_without_a_store_makes_none(tmp_path, capsys):
    ws = tmp_path / "typo"
    out = tmp_path / "keep.jsonl"
    out.write_text("mine\n")
    args = ["--workspace", str(ws), "export", "comparisons", "--recipe", "micro"]
    assert main([*args, "--out", str(out)]) == 2
    assert "no lab store here yet" in capsys.readouterr().err
    assert not ws.exists() and out.read_text() == "mine\n"


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("ranking", "[0, 5, 1]", r"field 'ranking': rank 1 is 5, but 3 responses have ranks 0..2"),
        ("ranking", "[0, 1]", r"field 'ranking': 2 ranks for 3 responses"),
        ("responses", '["same", "same", "x"]', r"field 'responses': response 1 duplicates"),
        ("labeler", "", r"field 'labeler': must be a non-empty name"),
        ("ranking", "[0, 1", r"corrupted JSON"),
    ],
)
def test_a_row_edited_by_hand_is_refused_on_read_naming_its_id(store, column, value, expected):
    """Rows are validated when written; one edited in the file afterwards (sqlite3, a DB
    browser) came back as it was and failed later, deep in the RM's batching."""
    import sqlite3

    first, second = store.add_comparisons([comp(0), comp(1)])
    with sqlite3.connect(store.path) as conn:
        conn.execute(f"UPDATE comparisons SET {column} = ? WHERE id = ?", (value, second))
    with pytest.raises(StoreError, match=rf"lab.db: comparison id {second}: {expected}") as e:
        store.comparisons()
    if "JSON" not in expected:
        assert str(e.value).endswith(f"DELETE FROM comparisons WHERE id = {second}')")
    assert store.count() == 2  # nothing was dropped or changed by reading
