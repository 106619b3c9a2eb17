"""The store protocol's contract, run against SQLite and PostgreSQL alike (docs/design.md, "State and durability")."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import Objective, ObjectiveType
from sidecar.errors import SchemaVersionError, StoreError
from sidecar.model import Decision, JobStatus, Offset
from sidecar.store import Batch, JobUpdate, Store, ValueRow, open_store
from sidecar.store import postgres as pg_store
from sidecar.store import sqlite as sqlite_store

OBJECTIVE = Objective(metric="val_loss", type=ObjectiveType.MINIMIZE)


@dataclass
class Backend:
    """One store implementation under test, with raw SQL access to its tables."""

    kind: str
    url: str

    def open(self) -> Store:
        return open_store(self.url)

    @property
    def migrations(self) -> list[str]:
        return sqlite_store.MIGRATIONS if self.kind == "sqlite" else pg_store.MIGRATIONS

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside the store (`?` placeholders) and commit it."""
        if self.kind == "sqlite":
            db = sqlite3.connect(sqlite_store.sqlite_path(self.url))
            try:
                rows = db.execute(query, params).fetchall()
                db.commit()
                return rows
            finally:
                db.close()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query.replace("?", "%s").encode(), params)
            return cur.fetchall() if cur.description else []

    def migrate(self, migrations: list[str]) -> int:
        """Run the store's migration procedure with only `migrations` (an old sidecar)."""
        if self.kind == "sqlite":
            db = sqlite3.connect(sqlite_store.sqlite_path(self.url), isolation_level=None)
            try:
                return sqlite_store.migrate(db, self.url, migrations)
            finally:
                db.close()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return pg_store.migrate(conn, self.url, migrations)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite://{tmp_path / 'history.db'}")
    return Backend("postgres", request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    s.ensure_tuning_job("t", OBJECTIVE)
    yield s
    s.close()


@pytest.fixture
def node2(backend: Backend, store: Store) -> Iterator[Store]:
    """A second store on the same history: another process, or another node."""
    s = backend.open()
    yield s
    s.close()


def values_of(store: Store, job: str, metric: str = "val_loss") -> list[tuple[int, float]]:
    found = store.load_job("t", job)
    assert found is not None
    return found.values.get(metric, [])


class TestTuningJobsAndLaunchOrder:
    def test_tuning_jobs_keep_the_first_objective_and_sort_by_bytes(self, store: Store) -> None:
        """A second ensure changes nothing; names list in byte order on both stores."""
        store.ensure_tuning_job("t", Objective(metric="acc", type=ObjectiveType.MAXIMIZE))
        store.ensure_tuning_job("B", OBJECTIVE)
        store.ensure_tuning_job("a", OBJECTIVE)
        assert store.tuning_jobs() == [("B", OBJECTIVE), ("a", OBJECTIVE), ("t", OBJECTIVE)]

    def test_orders_increase_in_registration_order_and_are_kept(self, store: Store) -> None:
        """A new job gets a later order than every earlier one; a known job keeps its own."""
        orders = [store.register_job("t", j) for j in ("a", "b", "c")]
        assert orders == sorted(set(orders))
        assert store.register_job("t", "b") == orders[1]
        store.ensure_tuning_job("u", OBJECTIVE)
        store.register_job("u", "a")
        assert store.register_job("t", "a") == orders[0]  # per tuning job: same name, other job
        assert [j.name for j in store.load_jobs("t")] == ["a", "b", "c"]

    def test_two_stores_interleaved_share_one_order(self, store: Store, node2: Store) -> None:
        """Two connections (two nodes) registering in turn see one order that both agree on."""
        orders = [
            store.register_job("t", "a"),
            node2.register_job("t", "b"),
            store.register_job("t", "c"),
            node2.register_job("t", "d"),
        ]
        assert orders == sorted(set(orders))
        assert node2.register_job("t", "a") == orders[0]
        assert store.register_job("t", "d") == orders[3]
        for s in (store, node2):
            assert [(j.name, j.order) for j in s.load_jobs("t")] == list(
                zip("abcd", orders, strict=True)
            )

    def test_registering_in_an_unknown_tuning_job_is_a_store_error(self, store: Store) -> None:
        """Jobs belong to a tuning job that ensure_tuning_job created."""
        with pytest.raises(StoreError, match="store"):
            store.register_job("nope", "a")


class TestValues:
    def test_values_roundtrip_including_nan_and_infinities(self, store: Store) -> None:
        """NaN, inf and -inf come back as they went in; an epoch is replaced, not duplicated."""
        store.register_job("t", "a")
        rows = [
            ValueRow("t", "a", "val_loss", e, v)
            for e, v in [(1, 1.0), (2, math.nan), (3, math.inf), (4, -math.inf), (5, 1e-310)]
        ]
        store.apply(Batch(values=rows))
        store.apply(Batch(values=[ValueRow("t", "a", "val_loss", 1, 0.5)]))
        series = values_of(store, "a")
        assert [e for e, _ in series] == [1, 2, 3, 4, 5]
        assert series[0][1] == 0.5 and math.isnan(series[1][1])
        assert series[2][1] == math.inf and series[3][1] == -math.inf
        assert series[4][1] == 1e-310  # subnormal: bit-exact

    def test_status_and_decision_roundtrip(self, store: Store, node2: Store) -> None:
        """A stop decision's evidence is stored with the job and read back, by any node."""
        store.register_job("t", "a")
        decision = Decision("t", "a", 3, math.inf, 0.8, 4, "sagemaker", dry_run=True)
        store.apply(Batch(updates=[JobUpdate("t", "a", JobStatus.STOPPED, decision)]))
        job = node2.load_job("t", "a")
        assert job is not None and job.status is JobStatus.STOPPED
        assert job.decision == decision
        store.apply(Batch(updates=[JobUpdate("t", "a", JobStatus.RUNNING)]))
        again = node2.load_job("t", "a")
        assert again is not None and again.status is JobStatus.RUNNING and again.decision is None

    def test_load_jobs_filters_metrics_and_load_job_reads_one(self, store: Store) -> None:
        """Only the asked metrics are loaded; an unknown job is None."""
        store.register_job("t", "a")
        store.register_job("t", "b")
        store.apply(
            Batch(
                values=[
                    ValueRow("t", "a", "val_loss", 1, 1.0),
                    ValueRow("t", "a", "acc", 1, 0.5),
                    ValueRow("t", "a", "f1", 1, 0.25),
                    ValueRow("t", "b", "acc", 1, 0.75),
                ]
            )
        )
        a, b = store.load_jobs("t", metrics={"acc"})
        assert a.values == {"acc": [(1, 0.5)]} and b.values == {"acc": [(1, 0.75)]}
        (a,) = store.load_jobs("t", metrics={"acc", "f1"})[:1]
        assert a.values == {"acc": [(1, 0.5)], "f1": [(1, 0.25)]}
        one = store.load_job("t", "a")
        assert one is not None and set(one.values) == {"val_loss", "acc", "f1"}
        assert store.load_job("t", "zz") is None

    def test_a_failing_batch_leaves_nothing_behind(self, store: Store) -> None:
        """Values, updates and offsets commit together or not at all; the error is a StoreError."""
        store.register_job("t", "a")
        good = Offset("node1", "1:2", "fp", "/x.log", 100)
        store.apply(Batch(values=[ValueRow("t", "a", "val_loss", 1, 1.0)], offsets=[good]))
        bad = Batch(
            values=[
                ValueRow("t", "a", "val_loss", 2, 0.5),
                ValueRow("t", "a", None, 3, 0.5),  # type: ignore[arg-type]
            ],
            updates=[JobUpdate("t", "a", JobStatus.COMPLETED)],
            offsets=[Offset("node1", "1:2", "fp", "/x.log", 200)],
        )
        with pytest.raises(StoreError, match="apply"):
            store.apply(bad)
        assert store.offsets("node1")["1:2"].offset == 100
        job = store.load_job("t", "a")
        assert job is not None and job.status is JobStatus.RUNNING
        assert job.values == {"val_loss": [(1, 1.0)]}

    def test_values_for_an_unknown_tuning_job_are_refused(self, store: Store) -> None:
        """A batch naming a tuning job that was never created fails as a whole."""
        with pytest.raises(StoreError, match="not in the store"):
            store.apply(Batch(values=[ValueRow("ghost", "a", "val_loss", 1, 1.0)]))


class TestOffsets:
    def test_offsets_are_per_node_and_replaced(self, store: Store, node2: Store) -> None:
        """Each node sees only its own offsets; a later offset replaces the earlier one."""
        store.apply(
            Batch(offsets=[Offset("n1", "k", "f", "/a", 1), Offset("n2", "k", "f", "/a", 2)])
        )
        node2.apply(Batch(offsets=[Offset("n2", "k", "g", "/b", 7, {"last_epoch": 3})]))
        assert store.offsets("n1") == {"k": Offset("n1", "k", "f", "/a", 1)}
        assert store.offsets("n2") == {"k": Offset("n2", "k", "g", "/b", 7, {"last_epoch": 3})}
        assert store.offsets("n3") == {}
        assert store.ping()


class TestChanges:
    def test_changes_follow_another_writer(self, store: Store, node2: Store) -> None:
        """From 0: everything; then only what changed since, with only the changed values."""
        store.register_job("t", "a")
        store.apply(Batch(values=[ValueRow("t", "a", "val_loss", e, e / 4) for e in (1, 2)]))
        cursor, jobs = node2.changes("t", "val_loss", 0)
        assert [(j.name, j.values) for j in jobs] == [("a", {"val_loss": [(1, 0.25), (2, 0.5)]})]
        assert node2.changes("t", "val_loss", cursor) == (cursor, [])

        store.register_job("t", "b")  # a new job shows up with no values yet
        cursor, jobs = node2.changes("t", "val_loss", cursor)
        assert [(j.name, j.values) for j in jobs] == [("b", {})]

        store.apply(
            Batch(
                values=[
                    ValueRow("t", "a", "val_loss", 2, 0.125),  # a replaced value comes again
                    ValueRow("t", "b", "acc", 1, 0.9),  # another metric is not this cursor's
                ]
            )
        )
        cursor, jobs = node2.changes("t", "val_loss", cursor)
        assert [(j.name, j.values) for j in jobs] == [("a", {"val_loss": [(2, 0.125)]})]

        store.apply(Batch(updates=[JobUpdate("t", "b", JobStatus.COMPLETED)]))
        cursor, jobs = node2.changes("t", "val_loss", cursor)
        assert [(j.name, j.status) for j in jobs] == [("b", JobStatus.COMPLETED)]
        assert node2.changes("t", "val_loss", cursor) == (cursor, [])

    def test_cursors_are_per_tuning_job(self, store: Store) -> None:
        """Writes to one tuning job do not show up in another's changes."""
        store.ensure_tuning_job("u", OBJECTIVE)
        cursor_u, _ = store.changes("u", "val_loss", 0)
        store.register_job("t", "a")
        store.apply(Batch(values=[ValueRow("t", "a", "val_loss", 1, 1.0)]))
        assert store.changes("u", "val_loss", cursor_u) == (cursor_u, [])
        assert store.changes("nope", "val_loss", 0) == (0, [])

    def test_a_cursor_past_the_history_starts_over(self, store: Store) -> None:
        """A cursor from a history that was replaced (larger than any write) reads it all."""
        store.register_job("t", "a")
        cursor, jobs = store.changes("t", "val_loss", 10_000)
        assert cursor < 10_000 and [j.name for j in jobs] == ["a"]


class TestLifecycle:
    def test_calls_after_close_are_store_errors(self, backend: Backend) -> None:
        """A closed store says so instead of leaking a driver error; ping is False."""
        s = backend.open()
        s.close()
        with pytest.raises(StoreError, match="closed"):
            s.tuning_jobs()
        assert not s.ping()


class TestSchemaVersions:
    def test_new_store_is_at_the_current_version(self, backend: Backend) -> None:
        """One row per version applied, 1..latest."""
        backend.open().close()
        rows = backend.sql("SELECT version FROM schema_version ORDER BY version")
        assert [v for (v,) in rows] == list(range(1, len(backend.migrations) + 1))

    def test_newer_schema_is_refused_and_left_alone(self, backend: Backend) -> None:
        """An older sidecar names both versions, says to upgrade, and changes nothing."""
        s = backend.open()
        s.ensure_tuning_job("t", OBJECTIVE)
        s.close()
        newer = len(backend.migrations) + 1
        backend.sql("INSERT INTO schema_version (version) VALUES (?)", (newer,))
        with pytest.raises(SchemaVersionError) as info:
            backend.open()
        message = str(info.value)
        assert f"schema version {newer}" in message
        assert f"this sidecar's {len(backend.migrations)}" in message
        assert "upgrade the sidecar" in message
        assert backend.sql("SELECT MAX(version) FROM schema_version") == [(newer,)]
        assert backend.sql("SELECT name FROM tuning_jobs") == [("t",)]

    def test_reopening_migrates_nothing(self, backend: Backend) -> None:
        """Opening an up-to-date store keeps its data and adds no version row."""
        s = backend.open()
        s.ensure_tuning_job("t", OBJECTIVE)
        s.close()
        s = backend.open()
        assert [n for n, _ in s.tuning_jobs()] == ["t"]
        s.close()
        assert backend.sql("SELECT COUNT(*) FROM schema_version") == [(len(backend.migrations),)]

    def test_a_failing_migration_changes_nothing(self, backend: Backend) -> None:
        """All pending versions are applied in one transaction, or none is."""
        backend.open().close()
        broken = [*backend.migrations, "CREATE TABLE half_done (a INTEGER);\nSELECT * FROM nope;"]
        with pytest.raises(Exception, match="nope"):
            backend.migrate(broken)
        assert backend.sql("SELECT MAX(version) FROM schema_version") == [
            (len(backend.migrations),)
        ]
        with pytest.raises(Exception, match="half_done"):
            backend.sql("SELECT * FROM half_done")

    def test_upgrade_from_the_first_version_keeps_everything(self, backend: Backend) -> None:
        """A v1 store written by an old sidecar is upgraded on open: values (NaN too), statuses,
        decisions, offsets and launch orders intact; the write cursor carries on after v1's."""
        assert backend.migrate(backend.migrations[:1]) == 1
        decision = Decision("t", "b", 2, 3.0, 2.0, 1, "sagemaker")
        from sidecar.store import decision_to_json

        backend.sql("INSERT INTO tuning_jobs VALUES ('t', 'val_loss', 'Minimize', 0)")
        backend.sql(
            "INSERT INTO jobs (tuning_job, name, launch_order, status, stopped_at_epoch, decision,"
            " started_at, seq) VALUES ('t', 'a', 1, 'Completed', NULL, NULL, 0, 1),"
            " ('t', 'b', 2, 'Stopped', 2, ?, 0, 3)",
            (decision_to_json(decision),),
        )
        backend.sql(
            "INSERT INTO metric_values (tuning_job, job, metric, epoch, value, seq) VALUES"
            " ('t', 'a', 'val_loss', 1, 1.0, 2), ('t', 'a', 'val_loss', 2, NULL, 2),"
            " ('t', 'b', 'val_loss', 1, 2.0, 3), ('t', 'b', 'val_loss', 2, 3.0, 3)"
        )
        backend.sql(
            "INSERT INTO source_offsets (node, file_key, fingerprint, path, byte_offset, state,"
            " updated_at) VALUES ('n1', '1:2', 'fp', '/a.log', 42, '{}', 0)"
        )
        backend.sql("UPDATE write_sequence SET value = 3")
        if backend.kind == "postgres":
            backend.sql("SELECT setval('launch_order', 2)")

        s = backend.open()
        try:
            assert backend.sql("SELECT MAX(version) FROM schema_version") == [
                (len(backend.migrations),)
            ]
            a, b = s.load_jobs("t")
            assert (a.name, a.order, a.status, a.decision) == ("a", 1, JobStatus.COMPLETED, None)
            assert a.values["val_loss"][0] == (1, 1.0) and math.isnan(a.values["val_loss"][1][1])
            assert (b.order, b.status, b.decision) == (2, JobStatus.STOPPED, decision)
            assert b.values == {"val_loss": [(1, 2.0), (2, 3.0)]}
            assert s.offsets("n1")["1:2"].offset == 42
            cursor, jobs = s.changes("t", "val_loss", 0)
            assert cursor == 3 and [j.name for j in jobs] == ["a", "b"]
            assert s.changes("t", "val_loss", cursor) == (cursor, [])
            assert s.register_job("t", "c") > 2
            s.apply(Batch(values=[ValueRow("t", "c", "val_loss", 1, 0.5)]))
            later, jobs = s.changes("t", "val_loss", cursor)
            assert later > cursor and [(j.name, j.values) for j in jobs] == [
                ("c", {"val_loss": [(1, 0.5)]})
            ]
        finally:
            s.close()
