"""The SQLite store (WAL): one host's history, shareable by several processes on that host."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sidecar.config import Objective, ObjectiveType
from sidecar.errors import SchemaVersionError, StoreError
from sidecar.model import JobStatus
from sidecar.store import (
    Batch,
    FileOffset,
    StoredJob,
    decision_from_json,
    decision_to_json,
    from_column,
    to_column,
)

MEMORY = ":memory:"

# Each entry migrates from the previous version; a store records the highest one applied.
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


class SqliteStore:
    """History in one SQLite file in WAL mode; every write is one `BEGIN IMMEDIATE` transaction."""

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
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            if path != MEMORY:
                self._db.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode: a process crash (kill -9) loses no committed transaction
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.url!r}: cannot open: {exc}") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"store {self.url!r} has schema version {current}, newer than this sidecar's "
                    f"{SCHEMA_VERSION}: upgrade the sidecar"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def schema_version(self) -> int:
        """The schema version this store is at."""
        with self._lock:
            return int(self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    @staticmethod
    def _next_seq(db: sqlite3.Connection) -> int:
        db.execute("UPDATE write_sequence SET value = value + 1")
        return int(db.execute("SELECT value FROM write_sequence").fetchone()[0])

    def ensure_tuning_job(self, name: str, objective: Objective) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO tuning_jobs (name, objective_metric, objective_type, created_at)"
                " VALUES (?, ?, ?, ?)",
                (name, objective.metric, objective.type.value, time.time()),
            )

    def register_job(self, tuning_job: str, job: str) -> int:
        with self._transaction() as db:
            row = db.execute(
                "SELECT launch_order FROM jobs WHERE tuning_job = ? AND name = ?", (tuning_job, job)
            ).fetchone()
            if row is not None:
                return int(row[0])
            (order,) = db.execute(
                "SELECT COALESCE(MAX(launch_order), 0) + 1 FROM jobs WHERE tuning_job = ?",
                (tuning_job,),
            ).fetchone()
            db.execute(
                "INSERT INTO jobs (tuning_job, name, launch_order, status, started_at, seq)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (tuning_job, job, order, JobStatus.RUNNING.value, time.time(), self._next_seq(db)),
            )
            return int(order)

    def apply(self, batch: Batch) -> None:
        if not batch:
            return
        now = time.time()
        with self._transaction() as db:
            seq = self._next_seq(db) if batch.values or batch.updates else 0
            if batch.values:
                db.executemany(
                    "INSERT INTO metric_values (tuning_job, job, metric, epoch, value, seq)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tuning_job, job, metric, epoch)"
                    " DO UPDATE SET value = excluded.value, seq = excluded.seq",
                    [
                        (v.tuning_job, v.job, v.metric, v.epoch, to_column(v.value), seq)
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
                        seq,
                        update.tuning_job,
                        update.job,
                    ),
                )
            if batch.offsets:
                db.executemany(
                    "INSERT INTO source_offsets (node, file_key, fingerprint, path, byte_offset,"
                    " state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node, file_key)"
                    " DO UPDATE SET fingerprint = excluded.fingerprint, path = excluded.path,"
                    " byte_offset = excluded.byte_offset, state = excluded.state,"
                    " updated_at = excluded.updated_at",
                    [
                        (o.node, o.file_key, o.fingerprint, o.path, o.offset, o.state, now)
                        for o in batch.offsets
                    ],
                )

    def tuning_jobs(self) -> list[tuple[str, Objective]]:
        with self._lock:
            rows = self._db.execute(
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
        with self._lock:
            job_rows = self._db.execute(
                "SELECT name, launch_order, status, decision FROM jobs WHERE tuning_job = ?"
                + job_filter
                + " ORDER BY launch_order",
                args,
            ).fetchall()
            value_rows = self._db.execute(
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

    def changes(self, tuning_job: str, metric: str, since: int) -> tuple[int, list[StoredJob]]:
        """Jobs whose row or `metric` values changed after write number `since`, with only the
        changed values; and the write number to ask from next time."""
        with self._lock:
            cursor = int(self._db.execute("SELECT value FROM write_sequence").fetchone()[0])
            job_rows = self._db.execute(
                "SELECT name, launch_order, status, decision FROM jobs WHERE tuning_job = ?"
                " AND (seq > ? OR name IN (SELECT job FROM metric_values WHERE tuning_job = ?"
                " AND metric = ? AND seq > ?)) ORDER BY launch_order",
                (tuning_job, since, tuning_job, metric, since),
            ).fetchall()
            value_rows = self._db.execute(
                "SELECT job, epoch, value FROM metric_values WHERE tuning_job = ? AND metric = ?"
                " AND seq > ? ORDER BY job, epoch",
                (tuning_job, metric, since),
            ).fetchall()
        jobs = {
            name: StoredJob(
                name, int(order), JobStatus(status), decision_from_json(tuning_job, name, d)
            )
            for name, order, status, d in job_rows
        }
        for job, epoch, value in value_rows:
            if job in jobs:
                jobs[job].values.setdefault(metric, []).append((int(epoch), from_column(value)))
        return cursor, list(jobs.values())

    def offsets(self, node: str) -> dict[str, FileOffset]:
        with self._lock:
            rows = self._db.execute(
                "SELECT file_key, fingerprint, path, byte_offset, state FROM source_offsets"
                " WHERE node = ?",
                (node,),
            ).fetchall()
        return {
            key: FileOffset(node, key, fp, path, int(off), state)
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
