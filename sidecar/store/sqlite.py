"""The SQLite store (WAL): one host's history, shareable by several processes on that host."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sidecar.config import Objective, ObjectiveType
from sidecar.errors import StoreDataError, StoreError
from sidecar.model import Decision, JobStatus, Offset
from sidecar.store.migrations import pending, statements
from sidecar.store.records import (
    Batch,
    StoredJob,
    decision_from_json,
    decision_to_json,
    from_column,
    state_json,
    to_column,
)

MEMORY = ":memory:"

# Entry k migrates version k-1 to k (see sidecar.store.migrations); never edit a released entry,
# append a new one. Versions are in lockstep with sidecar.store.postgres.MIGRATIONS.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE tuning_jobs (
        name TEXT PRIMARY KEY,
        objective_metric TEXT NOT NULL,
        objective_type TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE jobs (
        tuning_job TEXT NOT NULL REFERENCES tuning_jobs(name),
        name TEXT NOT NULL,
        launch_order INTEGER NOT NULL,
        status TEXT NOT NULL,
        stopped_at_epoch INTEGER,
        decision TEXT,
        started_at REAL NOT NULL,
        ended_at REAL,
        seq INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tuning_job, name),
        UNIQUE (tuning_job, launch_order)
    );
    -- value NULL stands for NaN, which SQL REAL cannot hold
    CREATE TABLE metric_values (
        tuning_job TEXT NOT NULL,
        job TEXT NOT NULL,
        metric TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        value REAL,
        seq INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tuning_job, job, metric, epoch)
    );
    CREATE INDEX metric_values_by_metric ON metric_values (tuning_job, metric, job, epoch);
    CREATE INDEX metric_values_by_seq ON metric_values (tuning_job, seq);
    CREATE INDEX jobs_by_seq ON jobs (tuning_job, seq);
    -- one number per write transaction, in commit order (SQLite serialises writers): readers in
    -- other processes fetch what changed since the number they saw last
    CREATE TABLE write_sequence (value INTEGER NOT NULL);
    INSERT INTO write_sequence (value) VALUES (0);
    CREATE TABLE source_offsets (
        node TEXT NOT NULL,
        file_key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        path TEXT NOT NULL,
        byte_offset INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL,
        PRIMARY KEY (node, file_key)
    );
    """,
    # 2: one write counter per tuning job (tuning_jobs.write_seq) instead of one for the whole
    # store, as on PostgreSQL, where it serialises only the writers of one tuning job. Starting
    # every tuning job's counter at the old global value keeps each stored seq at or below it, so
    # a cursor taken before the upgrade misses nothing after it.
    """
    ALTER TABLE tuning_jobs ADD COLUMN write_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE tuning_jobs SET write_seq = (SELECT value FROM write_sequence);
    DROP TABLE write_sequence;
    DROP INDEX metric_values_by_seq;
    CREATE INDEX metric_values_by_cursor ON metric_values (tuning_job, metric, seq);
    """,
    # 3: leaner value writes (docs/design.md, "Lean writes"). The rows live in their primary key
    # (WITHOUT ROWID: one b-tree, not a table and its key), and the (tuning_job, metric, job,
    # epoch) index goes: the cursor index serves the same lookups by (tuning_job, metric).
    # Measured: 4.5 -> 3.3 us per value row, the file about half the size.
    """
    CREATE TABLE metric_values_v3 (
        tuning_job TEXT NOT NULL,
        job TEXT NOT NULL,
        metric TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        value REAL,
        seq INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tuning_job, job, metric, epoch)
    ) WITHOUT ROWID;
    INSERT INTO metric_values_v3 (tuning_job, job, metric, epoch, value, seq)
        SELECT tuning_job, job, metric, epoch, value, seq FROM metric_values;
    DROP TABLE metric_values;
    ALTER TABLE metric_values_v3 RENAME TO metric_values;
    CREATE INDEX metric_values_by_cursor ON metric_values (tuning_job, metric, seq);
    """,
    # 4: the shadow rules' decisions (early_stopping.shadow), one per job and shadow
    """
    CREATE TABLE shadow_decisions (
        tuning_job TEXT NOT NULL,
        job TEXT NOT NULL,
        rule TEXT NOT NULL,
        decision TEXT NOT NULL,
        PRIMARY KEY (tuning_job, job, rule)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def sqlite_path(url: str) -> str:
    """The file path in a SQLite store URL (`sqlite:///abs`, `sqlite://rel`, or a bare path)."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
    elif "://" in url:
        raise StoreError(
            f"store {url!r}: unknown scheme; use sqlite:///path/to/history.db, "
            "sqlite://:memory: or postgresql://user@host/db"
        )
    else:
        path = url
    if not path:
        raise StoreError(f"store {url!r}: no file path after sqlite://")
    return path


def migrate(db: sqlite3.Connection, url: str, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema of `db` (an autocommit connection) to the last of `migrations` in one
    transaction; returns the version it is at. Raises SchemaVersionError, touching nothing, when
    the store is newer. BEGIN IMMEDIATE makes processes opening one file at once take turns."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        for version, script in pending(url, current, migrations):
            for statement in statements(script):
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            current = version
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return current


OPEN_RETRY_SECONDS = 30.0


def _busy(exc: sqlite3.Error) -> bool:
    """True for SQLITE_BUSY and SQLITE_LOCKED (extended codes included): another connection
    holds the file for now, so trying again can succeed."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


class SqliteStore:
    """History in one SQLite file in WAL mode; every write is one `BEGIN IMMEDIATE` transaction.

    Every sqlite3 error is raised as a StoreError naming the store and what failed."""

    def __init__(self, path: str, *, url: str | None = None) -> None:
        self.url = url or f"sqlite://{path}"
        self.path = path
        self._lock = threading.RLock()
        if path != MEMORY:
            parent = Path(path).parent
            if not parent.is_dir():
                raise StoreError(
                    f"store {self.url!r}: directory {str(parent)!r} does not exist "
                    "(create it, or set `store:` / SIDECAR_STORE to a writable path)"
                )
        self._db = self._open(path)
        # (tuning job, metric) -> (the data version, the cursor) of the last `changes` answer
        self._asked: dict[tuple[str, str], tuple[int, int]] = {}

    def _open(self, path: str) -> sqlite3.Connection:
        """Connect, switch to WAL and migrate, retrying while another connection holds the file.

        SQLite answers SQLITE_BUSY at once, without waiting out the busy timeout, when two
        connections switch a new file to WAL together or one opens while another closes the
        last connection (it checkpoints and removes the WAL): processes and threads starting
        one sweep at once open one file, so a busy open is retried until OPEN_RETRY_SECONDS."""
        deadline = time.monotonic() + OPEN_RETRY_SECONDS
        pause = 0.005
        while True:
            db: sqlite3.Connection | None = None
            try:
                db = sqlite3.connect(
                    path, isolation_level=None, check_same_thread=False, timeout=30.0
                )
                if path != MEMORY:
                    db.execute("PRAGMA journal_mode=WAL")
                    # NORMAL in WAL mode: a process crash (kill -9) loses no committed transaction
                    db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA foreign_keys=ON")
                migrate(db, self.url)
                return db
            except BaseException as exc:
                if db is not None:
                    db.close()  # also when the schema is newer: nothing stays open
                if not isinstance(exc, sqlite3.Error):
                    raise
                if _busy(exc) and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.25)
                    continue
                raise StoreError(f"store {self.url!r}: cannot open: {exc}") from None

    @contextmanager
    def _transaction(self, what: str, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: BEGIN IMMEDIATE to write (writers take turns), a plain BEGIN to read
        one consistent snapshot. sqlite3 errors become StoreErrors saying `what` failed."""
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except (sqlite3.IntegrityError, sqlite3.DataError, OverflowError) as exc:
                raise StoreDataError(f"store {self.url!r}: cannot {what}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.url!r}: cannot {what}: {exc}") from exc

    def schema_version(self) -> int:
        """The schema version this store is at."""
        with self._transaction("read the schema version", write=False) as db:
            return int(db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    def _next_seq(self, db: sqlite3.Connection, tuning_job: str) -> int:
        """The tuning job's next write number. Writers of a store take turns (BEGIN IMMEDIATE),
        so write numbers are in commit order: see `changes`."""
        row = db.execute(
            "UPDATE tuning_jobs SET write_seq = write_seq + 1 WHERE name = ? RETURNING write_seq",
            (tuning_job,),
        ).fetchone()
        if row is None:
            raise StoreError(
                f"store {self.url!r}: tuning job {tuning_job!r} is not in the store "
                "(ensure_tuning_job first)"
            )
        return int(row[0])

    def ensure_tuning_job(self, name: str, objective: Objective) -> None:
        with self._transaction(f"create tuning job {name!r}") as db:
            db.execute(
                "INSERT OR IGNORE INTO tuning_jobs (name, objective_metric, objective_type, created_at)"
                " VALUES (?, ?, ?, ?)",
                (name, objective.metric, objective.type.value, time.time()),
            )

    def register_job(self, tuning_job: str, job: str) -> int:
        with self._transaction(f"register job {job!r}") as db:
            row = db.execute(
                "SELECT launch_order FROM jobs WHERE tuning_job = ? AND name = ?", (tuning_job, job)
            ).fetchone()
            if row is not None:
                return int(row[0])
            seq = self._next_seq(db, tuning_job)
            (order,) = db.execute(
                "SELECT COALESCE(MAX(launch_order), 0) + 1 FROM jobs WHERE tuning_job = ?",
                (tuning_job,),
            ).fetchone()
            db.execute(
                "INSERT INTO jobs (tuning_job, name, launch_order, status, started_at, seq)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (tuning_job, job, order, JobStatus.RUNNING.value, time.time(), seq),
            )
            return int(order)

    def apply(self, batch: Batch) -> None:
        if not batch:
            return
        now = time.time()
        with self._transaction("apply a batch") as db:
            touched = {v.tuning_job for v in batch.values} | {u.tuning_job for u in batch.updates}
            seqs = {name: self._next_seq(db, name) for name in sorted(touched)}
            if batch.values:
                db.executemany(
                    "INSERT INTO metric_values (tuning_job, job, metric, epoch, value, seq)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tuning_job, job, metric, epoch)"
                    " DO UPDATE SET value = excluded.value, seq = excluded.seq",
                    [
                        (
                            v.tuning_job,
                            v.job,
                            v.metric,
                            v.epoch,
                            to_column(v.value),
                            seqs[v.tuning_job],
                        )
                        for v in batch.values
                    ],
                )
            for update in batch.updates:
                decision = update.decision
                db.execute(
                    "UPDATE jobs SET status = ?, stopped_at_epoch = ?, decision = ?,"
                    " ended_at = CASE WHEN ? = 'Running' THEN NULL ELSE ? END, seq = ?"
                    " WHERE tuning_job = ? AND name = ?",
                    (
                        update.status.value,
                        decision.epoch if decision else None,
                        decision_to_json(decision),
                        update.status.value,
                        now,
                        seqs[update.tuning_job],
                        update.tuning_job,
                        update.job,
                    ),
                )
            if batch.shadows:
                db.executemany(
                    "INSERT INTO shadow_decisions (tuning_job, job, rule, decision)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (tuning_job, job, rule) DO NOTHING",
                    [
                        (d.tuning_job, d.job, d.rule, decision_to_json(d.decision))
                        for d in batch.shadows
                    ],
                )
            if batch.offsets:
                db.executemany(
                    "INSERT INTO source_offsets (node, file_key, fingerprint, path, byte_offset,"
                    " state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node, file_key)"
                    " DO UPDATE SET fingerprint = excluded.fingerprint, path = excluded.path,"
                    " byte_offset = excluded.byte_offset, state = excluded.state,"
                    " updated_at = excluded.updated_at",
                    [
                        (o.node, o.file_key, o.fingerprint, o.path, o.offset, state_json(o), now)
                        for o in batch.offsets
                    ],
                )

    def tuning_jobs(self) -> list[tuple[str, Objective]]:
        with self._transaction("list tuning jobs", write=False) as db:
            rows = db.execute(
                "SELECT name, objective_metric, objective_type FROM tuning_jobs ORDER BY name"
            ).fetchall()
        return [(n, Objective(metric=m, type=ObjectiveType(t))) for n, m, t in rows]

    def load_job(self, tuning_job: str, job: str) -> StoredJob | None:
        found = self._load(tuning_job, None, job)
        return found[0] if found else None

    def load_jobs(self, tuning_job: str, *, metrics: set[str] | None = None) -> list[StoredJob]:
        return self._load(tuning_job, metrics, None)

    def _load(self, tuning_job: str, metrics: set[str] | None, only: str | None) -> list[StoredJob]:
        job_filter = " AND name = ?" if only is not None else ""
        value_filter = " AND job = ?" if only is not None else ""
        args: tuple[str, ...] = (tuning_job, only) if only is not None else (tuning_job,)
        if metrics is not None and len(metrics) == 1:
            value_filter += " AND metric = ?"
            value_args = (*args, next(iter(metrics)))
        else:
            value_args = args
        with self._transaction(f"load tuning job {tuning_job!r}", write=False) as db:
            job_rows = db.execute(
                "SELECT name, launch_order, status, decision FROM jobs WHERE tuning_job = ?"
                + job_filter
                + " ORDER BY launch_order",
                args,
            ).fetchall()
            value_rows = db.execute(
                "SELECT job, metric, epoch, value FROM metric_values WHERE tuning_job = ?"
                + value_filter
                + " ORDER BY job, metric, epoch",
                value_args,
            ).fetchall()
        jobs = {
            name: StoredJob(
                name=name,
                order=int(order),
                status=JobStatus(status),
                decision=decision_from_json(tuning_job, name, decision),
            )
            for name, order, status, decision in job_rows
        }
        for job, metric, epoch, value in value_rows:
            stored = jobs.get(job)
            if stored is None or (metrics is not None and metric not in metrics):
                continue
            stored.values.setdefault(metric, []).append((int(epoch), from_column(value)))
        return list(jobs.values())

    def shadow_decisions(self, tuning_job: str) -> dict[str, dict[str, Decision]]:
        with self._transaction("load shadow decisions", write=False) as db:
            rows = db.execute(
                "SELECT job, rule, decision FROM shadow_decisions WHERE tuning_job = ?"
                " ORDER BY job, rule",
                (tuning_job,),
            ).fetchall()
        out: dict[str, dict[str, Decision]] = {}
        for job, rule, text in rows:
            decision = decision_from_json(tuning_job, job, text)
            if decision is not None:
                out.setdefault(job, {})[rule] = decision
        return out

    def changes(
        self, tuning_job: str, metric: str, since: int, *, others_only: bool = False
    ) -> tuple[int, list[StoredJob]]:
        """Jobs whose row or `metric` values changed after write number `since`, with only the
        changed values; and the write number to ask from next time.

        `others_only`: SQLite's data version tells whether another connection committed since
        the last answer; when none did and `since` is that answer, nothing is read.

        Rows carry the write number of the transaction that last wrote them, and numbers are
        handed out in commit order (writers take turns), so a snapshot that shows the tuning job's
        counter at C shows every row written with a number up to C: nothing is skipped."""
        key = (tuning_job, metric)
        with self._lock:
            try:
                version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.url!r}: read the data version: {exc}") from None
            if others_only and self._asked.get(key) == (version, since):
                # no other connection committed since the last answer, which was `since`: what
                # changed since is this connection's own writes, which the caller does not need
                return since, []
        with self._transaction(f"read changes of tuning job {tuning_job!r}", write=False) as db:
            row = db.execute(
                "SELECT write_seq FROM tuning_jobs WHERE name = ?", (tuning_job,)
            ).fetchone()
            cursor = int(row[0]) if row is not None else 0
            self._asked[key] = (version, cursor)
            if cursor == since:
                return cursor, []
            if since > cursor:  # a cursor from a history that was replaced: start over
                since = 0
            # a UNION rather than `seq > ? OR name IN (...)`, which reads every job of the
            # tuning job; no ORDER BY on the values, which would tempt the planner to read the
            # whole metric in (job, epoch) order instead of only the changed rows
            job_rows = db.execute(
                "SELECT name, launch_order, status, decision FROM jobs"
                " WHERE tuning_job = ? AND seq > ?"
                " UNION SELECT name, launch_order, status, decision FROM jobs"
                " WHERE tuning_job = ? AND name IN (SELECT job FROM metric_values"
                " WHERE tuning_job = ? AND metric = ? AND seq > ?)",
                (tuning_job, since, tuning_job, tuning_job, metric, since),
            ).fetchall()
            value_rows = db.execute(
                "SELECT job, epoch, value FROM metric_values"
                " WHERE tuning_job = ? AND metric = ? AND seq > ?",
                (tuning_job, metric, since),
            ).fetchall()
        jobs = {
            name: StoredJob(
                name, int(order), JobStatus(status), decision_from_json(tuning_job, name, d)
            )
            for name, order, status, d in sorted(job_rows, key=lambda row: int(row[1]))
        }
        for job, epoch, value in value_rows:
            if job in jobs:
                jobs[job].values.setdefault(metric, []).append((int(epoch), from_column(value)))
        for stored in jobs.values():
            for series in stored.values.values():
                series.sort(key=lambda item: item[0])
        return cursor, list(jobs.values())

    def offsets(self, node: str) -> dict[str, Offset]:
        with self._transaction(f"read offsets of node {node!r}", write=False) as db:
            rows = db.execute(
                "SELECT file_key, fingerprint, path, byte_offset, state FROM source_offsets"
                " WHERE node = ?",
                (node,),
            ).fetchall()
        return {
            key: Offset(node, key, fp, path, int(off), json.loads(state or "{}"))
            for key, fp, path, off, state in rows
        }

    def ping(self) -> bool:
        try:
            with self._lock:
                self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._db.close()
