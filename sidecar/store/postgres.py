"""The PostgreSQL store: one history shared by sidecars on many nodes (psycopg 3 and a pool).

Same tables and semantics as the SQLite store (sidecar/store/sqlite.py), with the schema versions
in lockstep. What differs is how writers on different machines are ordered:

- Launch order comes from one database sequence, taken while holding the tuning job's row lock, so
  it is unique and increasing across every node (it may have gaps; only its order matters).
- The write cursor that `changes()` follows is a counter per tuning job (`tuning_jobs.write_seq`),
  bumped by every writing transaction with `UPDATE ... RETURNING`. The row lock that UPDATE takes
  is held until commit, so the writers of one tuning job take turns at that row and their numbers
  are in commit order. A global sequence (`nextval`) would not be: writer A could take 5, writer
  B 6, B commit first, and a reader that saw 6 would never ask for 5 again. With the counter, a
  snapshot that shows write_seq = C shows every row stamped with a number up to C.

Every psycopg error is raised as a StoreError naming the store (password hidden) and what failed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolClosed

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

T = TypeVar("T")
Connection = psycopg.Connection[TupleRow]

# Entry k migrates version k-1 to k (see sidecar.store.migrations); never edit a released entry,
# append a new one. Versions are in lockstep with sidecar.store.sqlite.MIGRATIONS.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE tuning_jobs (
        name text PRIMARY KEY,
        objective_metric text NOT NULL,
        objective_type text NOT NULL,
        created_at double precision NOT NULL
    );
    -- launch orders for every tuning job: unique and increasing on every node
    CREATE SEQUENCE launch_order;
    CREATE TABLE jobs (
        tuning_job text NOT NULL REFERENCES tuning_jobs (name),
        name text NOT NULL,
        launch_order bigint NOT NULL,
        status text NOT NULL,
        stopped_at_epoch bigint,
        decision text,
        started_at double precision NOT NULL,
        ended_at double precision,
        seq bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (tuning_job, name),
        UNIQUE (tuning_job, launch_order)
    );
    -- value NULL stands for NaN, as on SQLite (double precision holds the infinities)
    CREATE TABLE metric_values (
        tuning_job text NOT NULL,
        job text NOT NULL,
        metric text NOT NULL,
        epoch bigint NOT NULL,
        value double precision,
        seq bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (tuning_job, job, metric, epoch)
    );
    CREATE INDEX metric_values_by_metric ON metric_values (tuning_job, metric, job, epoch);
    CREATE INDEX metric_values_by_seq ON metric_values (tuning_job, seq);
    CREATE INDEX jobs_by_seq ON jobs (tuning_job, seq);
    -- one write number per writing transaction; its single row's lock orders the writers
    CREATE TABLE write_sequence (value bigint NOT NULL);
    INSERT INTO write_sequence (value) VALUES (0);
    CREATE TABLE source_offsets (
        node text NOT NULL,
        file_key text NOT NULL,
        fingerprint text NOT NULL,
        path text NOT NULL,
        byte_offset bigint NOT NULL,
        state text NOT NULL DEFAULT '{}',
        updated_at double precision NOT NULL,
        PRIMARY KEY (node, file_key)
    );
    """,
    # 2: a write counter per tuning job, so only the writers of one tuning job take turns (see
    # the module docstring). Starting each at the old global value keeps every stored seq at or
    # below its tuning job's counter: a cursor taken before the upgrade misses nothing after it.
    """
    ALTER TABLE tuning_jobs ADD COLUMN write_seq bigint NOT NULL DEFAULT 0;
    UPDATE tuning_jobs SET write_seq = (SELECT value FROM write_sequence);
    DROP TABLE write_sequence;
    DROP INDEX metric_values_by_seq;
    CREATE INDEX metric_values_by_cursor ON metric_values (tuning_job, metric, seq);
    """,
    # 3: the (tuning_job, metric, job, epoch) index goes, as on SQLite: the cursor index serves
    # the same lookups by (tuning_job, metric), and each index costs every value write
    """
    DROP INDEX metric_values_by_metric;
    """,
    # 4: the shadow rules' decisions (early_stopping.shadow), one per job and shadow
    """
    CREATE TABLE shadow_decisions (
        tuning_job text NOT NULL,
        job text NOT NULL,
        rule text NOT NULL,
        decision text NOT NULL,
        PRIMARY KEY (tuning_job, job, rule)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4
CONNECT_TIMEOUT = 5  # seconds: libpq's connect_timeout, unless the URL sets one
POOL_TIMEOUT = 5.0  # seconds a call waits for a connection before it raises StoreError
PING_TIMEOUT = 2.0
APPLICATION_NAME = "early-stopping-sidecar"
# pg_advisory_xact_lock(MIGRATION_LOCK, hashtext(schema)): sidecars starting at once migrate
# one schema one at a time
MIGRATION_LOCK = 0x5EC1DE
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def display_url(url: str) -> str:
    """The URL with any password replaced by `***`, for messages and logs."""
    hidden = re.sub(r"(?<=://)([^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"(?<=[?&])password=[^&]*", "password=***", hidden)


def connection_settings(url: str) -> tuple[str, str]:
    """(libpq conninfo, URL to show) for a `postgresql://` URL.

    Every libpq parameter is accepted in the query (sslmode, application_name, connect_timeout,
    options=-csearch_path%3Dmyschema, ...), plus `schema=NAME`, a shorthand for that search_path.
    application_name and connect_timeout get defaults when absent."""
    shown = display_url(url)
    if not url.startswith(("postgresql://", "postgres://")):
        raise StoreError(f"store {shown!r}: not a postgresql:// URL")
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    rest = url
    if schemas:  # libpq refuses unknown parameters: take ours out
        others = urlencode([(k, v) for k, v in query if k != "schema"], quote_via=quote)
        rest = urlunsplit(parts._replace(query=others))
    try:
        params: dict[str, Any] = conninfo_to_dict(rest)
    except psycopg.Error as exc:
        raise StoreError(f"store {shown!r}: invalid connection URL: {_reason(exc)}") from None
    if schemas:
        schema = schemas[-1]
        if not _SCHEMA_NAME.fullmatch(schema):
            raise StoreError(
                f"store {shown!r}: schema {schema!r} is not a plain identifier "
                "(letters, digits, _ and $, not starting with a digit)"
            )
        options = str(params.get("options") or "")
        params["options"] = f"{options} -csearch_path={schema}".strip()
    params.setdefault("application_name", APPLICATION_NAME)
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
    return make_conninfo("", **params), shown


def _reason(exc: BaseException) -> str:
    """A driver error on one line; a hint when the database user lacks a privilege."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        text += (
            " (the database user needs the privileges listed in docs/shared-history.md, "
            "'Privileges')"
        )
    return text


def _schema_version(conn: Connection) -> int:
    """The version recorded in this connection's schema (0: no sidecar tables yet)."""
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_tables"
        " WHERE schemaname = current_schema() AND tablename = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def migrate(conn: Connection, url: str, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema that `conn` (autocommit) writes to, its search_path's first schema, to
    the last of `migrations` in one transaction; returns the version it is at.

    An up-to-date store is only read (a user without CREATE can open it); a newer one raises
    SchemaVersionError and is not touched. Migrating takes a transaction-scoped advisory lock, so
    of several sidecars starting at once one migrates and the others find it done."""
    row = conn.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise StoreError(
            f"store {url!r}: the search_path names no existing schema "
            "(CREATE SCHEMA it, or fix options=-csearch_path=... / schema=...)"
        )
    if not pending(url, _schema_version(conn), migrations):
        return len(migrations)
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (MIGRATION_LOCK,)
        )
        current = _schema_version(conn)  # another sidecar may have migrated while we waited
        todo = pending(url, current, migrations)
        if todo and current == 0:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        for version, script in todo:
            for statement in statements(script):
                conn.execute(statement.encode())
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            current = version
    return current


class PostgresStore:
    """History in PostgreSQL, behind a small connection pool; safe to use from several threads."""

    def __init__(
        self, url: str, *, min_size: int = POOL_MIN_SIZE, max_size: int = POOL_MAX_SIZE
    ) -> None:
        conninfo, self.url = connection_settings(url)
        self._max_size = max_size
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                migrate(conn, self.url)
        except psycopg.Error as exc:
            raise StoreError(f"store {self.url!r}: cannot open: {_reason(exc)}") from None
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            conninfo,
            kwargs={"autocommit": True},
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=POOL_TIMEOUT,
            name="sidecar-store",
            num_workers=2,
            configure=_configure,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT + 1.0)
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreError(f"store {self.url!r}: cannot open: {_reason(exc)}") from None

    # plumbing ------------------------------------------------------------------------------
    def _run(
        self, what: str, work: Callable[[Connection], T], *, timeout: float | None = None
    ) -> T:
        """`work` on a pooled connection; psycopg errors become StoreErrors saying `what` failed.

        A pooled connection the server has closed (a restart, an idle timeout) fails on first use;
        the pool drops it and the work runs again on another. That is safe because every write
        here is idempotent: upserts of the same rows, and registration returns a known order."""
        attempts = self._max_size + 1
        for attempt in range(attempts):
            conn: Connection | None = None
            try:
                with self._pool.connection(timeout=timeout) as conn:
                    return work(conn)
            except PoolClosed:
                raise StoreError(
                    f"store {self.url!r}: cannot {what}: the store is closed"
                ) from None
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                raise StoreDataError(f"store {self.url!r}: cannot {what}: {_reason(exc)}") from exc
            except psycopg.Error as exc:
                if conn is not None and conn.broken and attempt + 1 < attempts:
                    continue
                raise StoreError(f"store {self.url!r}: cannot {what}: {_reason(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _next_seq(self, conn: Connection, tuning_job: str) -> int:
        """The tuning job's next write number; holds its row lock until this transaction ends,
        which is what puts write numbers in commit order (module docstring)."""
        row = conn.execute(
            "UPDATE tuning_jobs SET write_seq = write_seq + 1 WHERE name = %s RETURNING write_seq",
            (tuning_job,),
        ).fetchone()
        if row is None:
            raise StoreError(
                f"store {self.url!r}: tuning job {tuning_job!r} is not in the store "
                "(ensure_tuning_job first)"
            )
        return int(row[0])

    # the Store protocol --------------------------------------------------------------------
    def schema_version(self) -> int:
        """The schema version this store is at."""
        return self._run("read the schema version", _schema_version)

    def ensure_tuning_job(self, name: str, objective: Objective) -> None:
        def work(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO tuning_jobs (name, objective_metric, objective_type, created_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                (name, objective.metric, objective.type.value, time.time()),
            )

        self._run(f"create tuning job {name!r}", work)

    def register_job(self, tuning_job: str, job: str) -> int:
        find = "SELECT launch_order FROM jobs WHERE tuning_job = %s AND name = %s"

        def work(conn: Connection) -> int:
            row = conn.execute(find, (tuning_job, job)).fetchone()
            if row is not None:
                return int(row[0])
            with conn.transaction():
                # the tuning job's row lock first: registrations of one tuning job take turns,
                # so the sequence hands out orders in commit order, and the row is stamped
                seq = self._next_seq(conn, tuning_job)
                row = conn.execute(
                    "INSERT INTO jobs (tuning_job, name, launch_order, status, started_at, seq)"
                    " VALUES (%s, %s, nextval('launch_order'), %s, %s, %s)"
                    " ON CONFLICT (tuning_job, name) DO NOTHING RETURNING launch_order",
                    (tuning_job, job, JobStatus.RUNNING.value, time.time(), seq),
                ).fetchone()
                if row is None:  # another node registered it since our first look
                    row = conn.execute(find, (tuning_job, job)).fetchone()
                assert row is not None
                return int(row[0])

        return self._run(f"register job {job!r}", work)

    def apply(self, batch: Batch) -> None:
        if not batch:
            return
        now = time.time()

        def work(conn: Connection) -> None:
            with conn.transaction(), conn.cursor() as cur:
                touched = {v.tuning_job for v in batch.values}
                touched |= {u.tuning_job for u in batch.updates}
                # sorted: two batches that touch the same tuning jobs lock them in one order
                seqs = {name: self._next_seq(conn, name) for name in sorted(touched)}
                if batch.values:
                    cur.executemany(
                        "INSERT INTO metric_values (tuning_job, job, metric, epoch, value, seq)"
                        " VALUES (%s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (tuning_job, job, metric, epoch)"
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
                if batch.updates:
                    cur.executemany(
                        "UPDATE jobs SET status = %s, stopped_at_epoch = %s, decision = %s,"
                        " ended_at = %s, seq = %s WHERE tuning_job = %s AND name = %s",
                        [
                            (
                                u.status.value,
                                u.decision.epoch if u.decision else None,
                                decision_to_json(u.decision),
                                None if u.status is JobStatus.RUNNING else now,
                                seqs[u.tuning_job],
                                u.tuning_job,
                                u.job,
                            )
                            for u in batch.updates
                        ],
                    )
                if batch.shadows:
                    cur.executemany(
                        "INSERT INTO shadow_decisions (tuning_job, job, rule, decision)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT (tuning_job, job, rule) DO NOTHING",
                        [
                            (d.tuning_job, d.job, d.rule, decision_to_json(d.decision))
                            for d in batch.shadows
                        ],
                    )
                if batch.offsets:
                    cur.executemany(
                        "INSERT INTO source_offsets (node, file_key, fingerprint, path,"
                        " byte_offset, state, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (node, file_key) DO UPDATE SET"
                        " fingerprint = excluded.fingerprint, path = excluded.path,"
                        " byte_offset = excluded.byte_offset, state = excluded.state,"
                        " updated_at = excluded.updated_at",
                        [
                            (
                                o.node,
                                o.file_key,
                                o.fingerprint,
                                o.path,
                                o.offset,
                                state_json(o),
                                now,
                            )
                            for o in batch.offsets
                        ],
                    )

        self._run("apply a batch", work)

    def tuning_jobs(self) -> list[tuple[str, Objective]]:
        def work(conn: Connection) -> list[TupleRow]:
            # byte order, as SQLite sorts, whatever the database's collation
            return conn.execute(
                'SELECT name, objective_metric, objective_type FROM tuning_jobs ORDER BY name COLLATE "C"'
            ).fetchall()

        rows = self._run("list tuning jobs", work)
        return [(n, Objective(metric=m, type=ObjectiveType(t))) for n, m, t in rows]

    def load_job(self, tuning_job: str, job: str) -> StoredJob | None:
        found = self._load(tuning_job, None, job)
        return found[0] if found else None

    def load_jobs(self, tuning_job: str, *, metrics: set[str] | None = None) -> list[StoredJob]:
        return self._load(tuning_job, metrics, None)

    def _load(self, tuning_job: str, metrics: set[str] | None, only: str | None) -> list[StoredJob]:
        # one statement: one snapshot, one round trip; each (job, metric) series as two arrays
        job_filter = " AND j.name = %(job)s" if only is not None else ""
        value_filter = " AND job = %(job)s" if only is not None else ""
        if metrics is not None:
            value_filter += " AND metric = ANY(%(metrics)s)"
        query = f"""
            SELECT j.name, j.launch_order, j.status, j.decision, v.metric, v.epochs, v.vals
              FROM jobs j LEFT JOIN (
                   SELECT job, metric, array_agg(epoch ORDER BY epoch) AS epochs,
                          array_agg(value ORDER BY epoch) AS vals
                     FROM metric_values WHERE tuning_job = %(tj)s{value_filter}
                    GROUP BY job, metric
              ) v ON v.job = j.name
             WHERE j.tuning_job = %(tj)s{job_filter}
             ORDER BY j.launch_order, v.metric
        """
        params = {"tj": tuning_job, "job": only, "metrics": sorted(metrics or ())}

        def work(conn: Connection) -> list[TupleRow]:
            return conn.execute(query, params).fetchall()

        rows = self._run(f"load tuning job {tuning_job!r}", work)
        jobs: dict[str, StoredJob] = {}
        for name, order, status, decision, metric, epochs, values in rows:
            stored = jobs.get(name)
            if stored is None:
                stored = jobs[name] = _stored_job(tuning_job, name, order, status, decision)
            if metric is not None:
                stored.values[metric] = _series(epochs, values)
        return list(jobs.values())

    # The changes since a cursor, in one statement (one snapshot, one round trip): the tuning job's
    # counter, and the jobs whose row or `metric` values were stamped after the cursor, each with
    # those values. A cursor past the counter (a history replaced) starts over from 0.
    _CHANGES = """
        WITH s AS (
            SELECT write_seq AS cursor,
                   CASE WHEN %(since)s > write_seq THEN 0 ELSE %(since)s END AS since
              FROM tuning_jobs WHERE name = %(tj)s
        ), v AS (
            SELECT job, array_agg(epoch ORDER BY epoch) AS epochs,
                   array_agg(value ORDER BY epoch) AS vals
              FROM metric_values
             WHERE tuning_job = %(tj)s AND metric = %(metric)s AND seq > (SELECT since FROM s)
             GROUP BY job
        ), j AS (
            SELECT name, launch_order, status, decision FROM jobs
             WHERE tuning_job = %(tj)s AND seq > (SELECT since FROM s)
            UNION
            SELECT name, launch_order, status, decision FROM jobs
             WHERE tuning_job = %(tj)s AND name IN (SELECT job FROM v)
        )
        SELECT s.cursor, j.name, j.launch_order, j.status, j.decision, v.epochs, v.vals
          FROM s LEFT JOIN (j LEFT JOIN v ON v.job = j.name) ON true
         ORDER BY j.launch_order
    """

    def shadow_decisions(self, tuning_job: str) -> dict[str, dict[str, Decision]]:
        def work(conn: Connection) -> list[TupleRow]:
            return conn.execute(
                "SELECT job, rule, decision FROM shadow_decisions WHERE tuning_job = %s"
                ' ORDER BY job COLLATE "C", rule COLLATE "C"',
                (tuning_job,),
            ).fetchall()

        out: dict[str, dict[str, Decision]] = {}
        for job, rule, text in self._run("load shadow decisions", work):
            decision = decision_from_json(tuning_job, job, text)
            if decision is not None:
                out.setdefault(job, {})[rule] = decision
        return out

    def changes(
        self, tuning_job: str, metric: str, since: int, *, others_only: bool = False
    ) -> tuple[int, list[StoredJob]]:
        """Jobs whose row or `metric` values changed after write number `since`, with only the
        changed values; and the write number to ask from next time (`others_only` changes
        nothing here: the one statement is the cheap way to know).

        The counter and the rows are read in one snapshot (one statement). Numbers are in commit
        order (module docstring), so that snapshot holds every row stamped up to the counter it
        shows and none stamped after: following the cursor skips nothing."""
        params = {"tj": tuning_job, "metric": metric, "since": since}

        def work(conn: Connection) -> list[TupleRow]:
            return conn.execute(self._CHANGES, params).fetchall()

        rows = self._run(f"read changes of tuning job {tuning_job!r}", work)
        if not rows:  # no such tuning job (yet)
            return 0, []
        jobs = []
        for _, name, order, status, decision, epochs, values in rows:
            if name is None:
                continue
            stored = _stored_job(tuning_job, name, order, status, decision)
            if epochs is not None:
                stored.values[metric] = _series(epochs, values)
            jobs.append(stored)
        return int(rows[0][0]), jobs

    def offsets(self, node: str) -> dict[str, Offset]:
        def work(conn: Connection) -> list[TupleRow]:
            return conn.execute(
                "SELECT file_key, fingerprint, path, byte_offset, state FROM source_offsets"
                " WHERE node = %s",
                (node,),
            ).fetchall()

        rows = self._run(f"read offsets of node {node!r}", work)
        return {
            key: Offset(node, key, fp, path, int(off), json.loads(state or "{}"))
            for key, fp, path, off, state in rows
        }

    def ping(self) -> bool:
        try:
            self._run(
                "ping", lambda conn: conn.execute("SELECT 1").fetchone(), timeout=PING_TIMEOUT
            )
        except StoreError:
            return False
        return True

    def close(self) -> None:
        self._pool.close()


def _configure(conn: Connection) -> None:
    """Each new pooled connection: no JIT. The planner's generic estimate for `seq > cursor` is a
    third of the table, which on a long history crosses jit_above_cost, and compiling then takes
    10-20 ms for a query that runs in 0.1 ms."""
    conn.execute("SET jit = off")


def _stored_job(
    tuning_job: str, name: str, order: int, status: str, decision: str | None
) -> StoredJob:
    return StoredJob(
        name=name,
        order=int(order),
        status=JobStatus(status),
        decision=decision_from_json(tuning_job, name, decision),
    )


def _series(epochs: list[int], values: list[float | None]) -> list[tuple[int, float]]:
    return [(int(e), from_column(v)) for e, v in zip(epochs, values, strict=True)]
