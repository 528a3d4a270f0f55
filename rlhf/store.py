"""The lab store: comparisons (rankings of K responses to one prompt) in SQLite.

One file, `<workspace>/lab.db`, in WAL mode so the dashboard, the CLI and trainers can read
while a labeler saves. Every write is one transaction: a submission is stored whole or not at
all, and a record is validated before anything is written (design.md, "Rules every part
follows"). Each `add_comparisons` call is a *batch*; `undo_last(labeler)` removes the newest
batch of a labeler.

    with Store.open(cfg) as store:
        store.add_comparisons([Comparison(prompt, [a, b, c], [0, 2, 1], labeler="ann",
                                          source="human")])
        store.export("prefs.jsonl", "pairs")   # TRL {prompt, chosen, rejected}
        store.export("prefs", "pairs", layout="hf")   # datasets.load_from_disk("prefs")

Rankings: one int per response, 0 is best, equal ints are ties ([0, 1, 1, 3] and [0, 1, 1, 2]
both mean "first best, two tied, last worst"). A rank is at most len(responses) - 1.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlhf.errors import StoreError
from rlhf.files import temp_dir, umask

SCHEMA_VERSION = 1
SOURCES = ("simulated", "human")
FORMATS = ("kwise", "pairs")
LAYOUTS = ("jsonl", "hf")
BUSY_TIMEOUT_MS = 10_000
_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS comparisons (
    id INTEGER PRIMARY KEY,
    prompt_id TEXT,
    prompt TEXT NOT NULL,
    responses TEXT NOT NULL,   -- JSON list of strings
    ranking TEXT NOT NULL,     -- JSON list of int ranks, 0 best, ties equal
    labeler TEXT NOT NULL,
    source TEXT CHECK(source IN ('simulated', 'human')),
    policy TEXT,
    likert TEXT,               -- JSON list of ints 1..7, or null
    flags TEXT,                -- JSON list of dicts (one per response), or null
    created TEXT NOT NULL,
    batch TEXT                 -- id of the submission, for undo
);
CREATE INDEX IF NOT EXISTS comparisons_labeler ON comparisons(labeler, id);
CREATE INDEX IF NOT EXISTS comparisons_batch ON comparisons(batch);
"""

_COLUMNS = (
    "id, prompt_id, prompt, responses, ranking, labeler, source, policy, likert, flags, created"
)


@dataclass
class Comparison:
    """One labeled comparison: K responses to a prompt and their ranking (0 best, ties equal).

    `likert` (1..7) and `flags` (a dict of metadata flags) are per response, as on the paper's
    labeling interface. `id` and `created` are filled by the store.
    """

    prompt: str
    responses: list[str]
    ranking: list[int]
    labeler: str
    source: str = "simulated"
    prompt_id: str | None = None
    policy: str | None = None
    likert: list[int] | None = None
    flags: list[dict[str, Any]] | None = None
    id: int | None = None
    created: str | None = None

    def pairs(self) -> Iterator[tuple[str, str]]:
        """(chosen, rejected) for every pair of responses with strictly different ranks."""
        n = len(self.responses)
        for i in range(n):
            for j in range(i + 1, n):
                if self.ranking[i] < self.ranking[j]:
                    yield self.responses[i], self.responses[j]
                elif self.ranking[j] < self.ranking[i]:
                    yield self.responses[j], self.responses[i]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def validate(record: Comparison, index: int = 0, where: str = "") -> None:
    """Raise StoreError naming the record (`where`, else "record <index>") and the field if
    `record` cannot be stored."""
    where = where or f"record {index}"

    def bad(field: str, problem: str) -> StoreError:
        return StoreError(f"{where}: field '{field}': {problem}")

    if not isinstance(record, Comparison):
        raise StoreError(f"{where}: expected a Comparison, got {type(record).__name__}")
    if not isinstance(record.prompt, str):
        raise bad("prompt", f"must be text, got {type(record.prompt).__name__}")
    resp = record.responses
    if not isinstance(resp, list | tuple):
        raise bad("responses", f"must be a list of texts, got {type(resp).__name__}")
    for k, r in enumerate(resp):
        if not isinstance(r, str):
            raise bad("responses", f"response {k} must be text, got {type(r).__name__}")
    n = len(resp)
    if n < 2:
        raise bad("responses", f"a comparison needs at least 2 responses, got {n}")
    seen: dict[str, int] = {}
    for k, r in enumerate(resp):
        if r in seen:
            raise bad("responses", f"response {k} duplicates response {seen[r]}: {r[:60]!r}")
        seen[r] = k
    ranking = record.ranking
    if not isinstance(ranking, list | tuple):
        raise bad("ranking", f"must be a list of int ranks, got {type(ranking).__name__}")
    if len(ranking) != n:
        raise bad("ranking", f"{len(ranking)} ranks for {n} responses")
    for k, r in enumerate(ranking):
        if not _is_int(r):
            raise bad("ranking", f"rank {k} must be an int, got {r!r} ({type(r).__name__})")
        if r < 0:
            raise bad("ranking", f"rank {k} is {r}; ranks start at 0 (best)")
        if r >= n:
            raise bad("ranking", f"rank {k} is {r}, but {n} responses have ranks 0..{n - 1}")
    if not isinstance(record.labeler, str) or not record.labeler.strip():
        raise bad("labeler", f"must be a non-empty name, got {record.labeler!r}")
    if record.source not in SOURCES:
        raise bad("source", f"must be one of {', '.join(SOURCES)}, got {record.source!r}")
    for name in ("prompt_id", "policy", "created"):
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            raise bad(name, f"must be text or None, got {type(value).__name__}")
    if record.likert is not None:
        lk = record.likert
        if not isinstance(lk, list | tuple):
            raise bad("likert", f"must be a list of ints 1..7, got {type(lk).__name__}")
        if len(lk) != n:
            raise bad("likert", f"{len(lk)} scores for {n} responses")
        for k, s in enumerate(lk):
            if not _is_int(s) or not 1 <= s <= 7:
                raise bad("likert", f"score {k} must be an int 1..7, got {s!r}")
    if record.flags is not None:
        fl = record.flags
        if not isinstance(fl, list | tuple):
            raise bad("flags", f"must be a list of dicts, got {type(fl).__name__}")
        if len(fl) != n:
            raise bad("flags", f"{len(fl)} flag sets for {n} responses")
        for k, f in enumerate(fl):
            if not isinstance(f, Mapping):
                raise bad("flags", f"flags {k} must be a dict, got {type(f).__name__}")
        try:
            json.dumps([dict(f) for f in fl])
        except (TypeError, ValueError) as e:
            raise bad("flags", f"not JSON-serialisable: {e}") from None


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL. SQLite answers "database is locked" at once, without waiting on
    busy_timeout, when two processes make a new store at the same moment; WAL is persistent,
    so retrying until one of them has switched it is enough."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Store:
    """The lab store at `path` (a SQLite file, created with its schema if missing)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._check_header()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # autocommit; writes use explicit BEGIN IMMEDIATE
                check_same_thread=False,  # dashboard threads share one store, under _lock
            )
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open the lab store: {e}") from None
        self._conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _set_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            self._init_schema()
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(f"{self.path}: not a usable lab store (SQLite: {e})") from None
        except StoreError:
            self.close()
            raise

    @classmethod
    def open(cls, cfg: Any) -> Store:
        """The store of a config's workspace: `<workspace>/lab.db`."""
        return cls(cfg.workspace_dir / "lab.db")

    def _check_header(self) -> None:
        """A file that is not SQLite fails here with its name, before sqlite3 touches it."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(_SQLITE_HEADER))
        except FileNotFoundError:
            return
        except IsADirectoryError:
            raise StoreError(f"{self.path}: is a directory, not a lab store file") from None
        except OSError as e:
            raise StoreError(f"{self.path}: cannot read the lab store: {e}") from None
        if head and head != _SQLITE_HEADER:
            raise StoreError(f"{self.path}: not a SQLite database (corrupted or another file)")

    def _init_schema(self) -> None:
        conn = self._db()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "schema_version" not in tables:
            raise StoreError(
                f"{self.path}: a SQLite database but not a lab store "
                f"(tables: {', '.join(sorted(tables))})"
            )
        if "schema_version" not in tables or "comparisons" not in tables:
            with self._transaction() as c:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                if c.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                    c.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        version = row[0] if row else None
        if version is None or version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: lab store schema version {version}; this lab reads version "
                f"{SCHEMA_VERSION} (a newer lab wrote it?)"
            )

    # ---------------------------------------------------------------- plumbing

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._conn

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def journal_mode(self) -> str:
        with self._lock:
            return self._db().execute("PRAGMA journal_mode").fetchone()[0]

    # ---------------------------------------------------------------- writes

    def add_comparisons(self, records: Sequence[Comparison]) -> list[int]:
        """Store `records` as one batch, all or nothing; return their ids in order.

        Every record is validated first; an invalid one raises StoreError naming its index
        (0-based) and field, and nothing is written. `id` and `batch` are assigned here;
        `created` is kept if given, else set to now (UTC).
        """
        records = list(records)
        for i, rec in enumerate(records):
            validate(rec, i)
        if not records:
            return []
        batch = uuid.uuid4().hex
        now = _now()
        rows = [
            (
                r.prompt_id,
                r.prompt,
                json.dumps(list(r.responses)),
                json.dumps(list(r.ranking)),
                r.labeler,
                r.source,
                r.policy,
                None if r.likert is None else json.dumps(list(r.likert)),
                None if r.flags is None else json.dumps([dict(f) for f in r.flags]),
                r.created or now,
                batch,
            )
            for r in records
        ]
        ids = []
        with self._transaction() as c:
            for row in rows:
                cur = c.execute(
                    "INSERT INTO comparisons (prompt_id, prompt, responses, ranking, labeler, "
                    "source, policy, likert, flags, created, batch) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                ids.append(cur.lastrowid)
        return ids

    def undo_last(self, labeler: str) -> int:
        """Delete `labeler`'s rows of their newest batch; return how many rows were removed."""
        with self._transaction() as c:
            row = c.execute(
                "SELECT batch FROM comparisons WHERE labeler = ? ORDER BY id DESC LIMIT 1",
                (labeler,),
            ).fetchone()
            if row is None:
                return 0
            if row[0] is None:  # a row written without a batch: undo just that row
                cur = c.execute(
                    "DELETE FROM comparisons WHERE id = (SELECT MAX(id) FROM comparisons "
                    "WHERE labeler = ?)",
                    (labeler,),
                )
            else:
                cur = c.execute(
                    "DELETE FROM comparisons WHERE labeler = ? AND batch = ?", (labeler, row[0])
                )
            return cur.rowcount

    # ---------------------------------------------------------------- reads

    def comparisons(
        self, source: str | None = None, labeler: str | None = None
    ) -> list[Comparison]:
        """Stored comparisons in insertion order, optionally of one source and/or labeler."""
        if source is not None and source not in SOURCES:
            raise StoreError(f"unknown source {source!r} (one of {', '.join(SOURCES)})")
        where, args = [], []
        if source is not None:
            where.append("source = ?")
            args.append(source)
        if labeler is not None:
            where.append("labeler = ?")
            args.append(labeler)
        sql = f"SELECT {_COLUMNS} FROM comparisons"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        with self._lock:
            try:
                rows = self._db().execute(sql, args).fetchall()
            except sqlite3.DatabaseError as e:
                raise StoreError(f"{self.path}: cannot read comparisons: {e}") from None
        return [self._from_row(r) for r in rows]

    def _from_row(self, row: tuple) -> Comparison:
        (
            rid,
            prompt_id,
            prompt,
            responses,
            ranking,
            labeler,
            source,
            policy,
            likert,
            flags,
            created,
        ) = row
        try:
            c = Comparison(
                prompt=prompt,
                responses=json.loads(responses),
                ranking=json.loads(ranking),
                labeler=labeler,
                source=source,
                prompt_id=prompt_id,
                policy=policy,
                likert=None if likert is None else json.loads(likert),
                flags=None if flags is None else json.loads(flags),
                id=rid,
                created=created,
            )
        except (TypeError, ValueError) as e:
            raise StoreError(f"{self.path}: comparison id {rid}: corrupted JSON: {e}") from None
        try:  # a row edited by hand (or by another tool) failed later, deep in the RM's batching
            validate(c, where=f"{self.path}: comparison id {rid}")
        except StoreError as e:
            raise StoreError(
                f"{e} (mend the row, or remove it: "
                f"sqlite3 {self.path} 'DELETE FROM comparisons WHERE id = {rid}')"
            ) from None
        return c

    def count(self, source: str | None = None, labeler: str | None = None) -> int:
        """Number of stored comparisons (of one source and/or labeler if given), without
        loading them: cheap enough to poll."""
        where, args = [], []
        if source is not None:
            where.append("source = ?")
            args.append(source)
        if labeler is not None:
            where.append("labeler = ?")
            args.append(labeler)
        sql = "SELECT COUNT(*) FROM comparisons"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            return self._db().execute(sql, args).fetchone()[0]

    def count_by_labeler(self) -> dict[str, int]:
        """{labeler: number of comparisons}, labelers sorted by name."""
        with self._lock:
            rows = self._db().execute(
                "SELECT labeler, COUNT(*) FROM comparisons GROUP BY labeler ORDER BY labeler"
            )
            return {name: n for name, n in rows}

    # ---------------------------------------------------------------- export

    def export(
        self,
        path: str | os.PathLike,
        format: str = "kwise",  # noqa: A002
        source: str | None = None,
        layout: str = "jsonl",
    ) -> int:
        """Write comparisons to `path`; return the rows written.

        kwise: {prompt, responses, ranking, labeler, source} per comparison.
        pairs: TRL preference rows {prompt, chosen, rejected}, one per pair of responses with
        different ranks (ties give no pair).
        layout "jsonl": one JSON object a line (temp file + rename). Layout "hf": a Hugging Face
        `datasets` folder (`Dataset.save_to_disk`, read back with `datasets.load_from_disk`),
        built beside `path` and renamed into place, so a reader never sees half a folder. An
        empty export is still a loadable dataset with the format's columns.
        """
        if format not in FORMATS:
            raise StoreError(f"unknown export format {format!r} (one of {', '.join(FORMATS)})")
        if layout not in LAYOUTS:
            raise StoreError(f"unknown export layout {layout!r} (one of {', '.join(LAYOUTS)})")
        stdout = str(path) == "-"
        if stdout and layout == "hf":
            raise StoreError("a datasets folder (--hf) needs a path, not - (standard output)")
        if not stdout:
            self._check_export_target(Path(path))
        if layout == "jsonl" and Path(path).is_dir():
            raise StoreError(f"{path}: is a folder; give a file path for the JSONL (or --hf)")
        rows: list[dict[str, Any]] = []
        for c in self.comparisons(source=source):
            if format == "kwise":
                rows.append(
                    {
                        "prompt": c.prompt,
                        "responses": c.responses,
                        "ranking": c.ranking,
                        "labeler": c.labeler,
                        "source": c.source,
                    }
                )
            else:
                rows += [{"prompt": c.prompt, "chosen": ch, "rejected": rj} for ch, rj in c.pairs()]
        if not rows and not stdout and (Path(path).exists() or Path(path).is_symlink()):
            what = f"{source} comparisons" if source else "comparisons"
            raise StoreError(f"no {what} to export; {path} was left as it was")
        if stdout:
            for row in rows:
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif layout == "hf":
            _write_hf(Path(path), rows, format)
        else:
            _write_jsonl(Path(path), rows)
        return len(rows)

    def _check_export_target(self, target: Path) -> None:
        """Refuse a path that an export, written beside it and renamed over it, would destroy
        or cannot take: the store itself (or its journal), or a device (/dev/stdout: the rename
        replaced the symlink with a file)."""
        absolute = Path(os.path.abspath(target))
        if absolute.parts[1:2] in (("dev",), ("proc",)) or (
            target.exists() and not (target.is_file() or target.is_dir())
        ):
            raise StoreError(
                f"{target}: not a regular file; give a file path, or - for standard output"
            )
        store = self.path.resolve()
        if target.resolve() in {
            store,
            *(Path(f"{store}{s}") for s in ("-wal", "-shm", "-journal")),
        }:
            raise StoreError(f"{target}: is the lab store itself; give another path")


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the store's lock; ROLLBACK on any error.

    sqlite3 errors (a locked database after the busy timeout, a full disk, corruption)
    become StoreError naming the file."""

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:
            self.conn = self.store._db()
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            self.store._lock.release()
            raise StoreError(f"{self.store.path}: cannot write to the lab store: {e}") from None
        except BaseException:
            self.store._lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            if exc_type is None:
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.Error as e:
                    self._rollback()
                    raise StoreError(
                        f"{self.store.path}: cannot write to the lab store: {e}"
                    ) from None
                return False
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(
                    f"{self.store.path}: cannot write to the lab store: {exc}"
                ) from None
            return False
        finally:
            self.store._lock.release()

    def _rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _file_mode(path: Path) -> int:
    """The mode a file written over `path` should have: the old file's, else what open()
    would give a new one under the umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    return 0o666 & ~umask()


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write JSONL to a temp file beside `path`, fsync, and rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _hf_features(format: str) -> Any:  # noqa: A002
    """Explicit columns, so an empty export has them too (nothing to infer them from)."""
    from datasets import Features, List, Value

    text = Value("string")
    if format == "kwise":
        return Features(
            {
                "prompt": text,
                "responses": List(text),
                "ranking": List(Value("int64")),
                "labeler": text,
                "source": text,
            }
        )
    return Features({"prompt": text, "chosen": text, "rejected": text})


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def _write_hf(path: Path, rows: list[dict[str, Any]], format: str) -> None:  # noqa: A002
    """Save a `datasets` folder to a temp dir beside `path`, then rename it over `path`.

    An existing `path` is replaced only once the new folder is complete, and only if it is an
    empty folder or a saved dataset: a typo in --out must not delete someone's directory."""
    from datasets import Dataset

    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise StoreError(f"{path}: exists and is not a folder; not replacing it")
        if any(path.iterdir()) and not _is_saved_dataset(path):
            raise StoreError(
                f"{path}: a folder that is not a saved dataset; not replacing it "
                "(choose a new path or remove it)"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(f".{path.name}.", path.parent, suffix=".tmp")
    old = path.parent / f".{path.name}.{uuid.uuid4().hex}.old"
    moved = False
    try:
        features = _hf_features(format)
        columns = {name: [row[name] for row in rows] for name in features}
        ds = Dataset.from_dict(columns, features=features)
        # save_to_disk writes no data file for 0 rows, and load_from_disk then fails: 1 shard.
        ds.save_to_disk(str(tmp), num_shards=None if rows else 1)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            os.rename(path, old)
            moved = True
        os.rename(tmp, path)
    except BaseException:
        if moved and not path.exists():
            os.rename(old, path)  # put the previous export back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["Comparison", "Store", "StoreError", "validate", "SOURCES", "FORMATS", "LAYOUTS"]
