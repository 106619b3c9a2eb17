"""The SQLite store: schema versions, launch order, values with NaN, offsets in one transaction."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from sidecar.config import Objective, ObjectiveType
from sidecar.errors import SchemaVersionError, StoreError
from sidecar.model import Decision, JobStatus
from sidecar.store import Batch, FileOffset, JobUpdate, ValueRow, open_store
from sidecar.store.sqlite import SCHEMA_VERSION, SqliteStore

OBJECTIVE = Objective(metric="val_loss", type=ObjectiveType.MINIMIZE)


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(str(tmp_path / "history.db"))
    s.ensure_tuning_job("t", OBJECTIVE)
    return s


class TestSchema:
    def test_new_store_is_at_current_schema_version_in_wal_mode(self, tmp_path: Path) -> None:
        """A new file is created, migrated to the latest version, and uses WAL."""
        path = tmp_path / "h.db"
        SqliteStore(str(path)).close()
        db = sqlite3.connect(path)
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_newer_schema_is_refused_with_a_clear_message(self, tmp_path: Path) -> None:
        """A store written by a newer sidecar is not touched."""
        path = tmp_path / "h.db"
        SqliteStore(str(path)).close()
        db = sqlite3.connect(path)
        db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
        db.commit()
        db.close()
        with pytest.raises(SchemaVersionError, match="newer than this sidecar"):
            SqliteStore(str(path))

    def test_reopening_does_not_migrate_twice(self, tmp_path: Path) -> None:
        """Opening an up-to-date store keeps its data and its version."""
        path = str(tmp_path / "h.db")
        first = SqliteStore(path)
        first.ensure_tuning_job("t", OBJECTIVE)
        first.close()
        second = SqliteStore(path)
        assert second.schema_version() == SCHEMA_VERSION
        assert [n for n, _ in second.tuning_jobs()] == ["t"]

    @pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://"])
    def test_bad_urls_are_store_errors(self, url: str) -> None:
        """An unknown scheme or an empty path is a StoreError naming the URL."""
        with pytest.raises(StoreError, match="store"):
            open_store(url)

    def test_missing_directory_is_a_clear_error(self, tmp_path: Path) -> None:
        """A store path in a directory that does not exist says so."""
        with pytest.raises(StoreError, match="does not exist"):
            open_store(f"sqlite://{tmp_path}/nope/h.db")

    def test_must_exist_does_not_create_a_file(self, tmp_path: Path) -> None:
        """`status` never creates an empty store by accident."""
        with pytest.raises(StoreError, match="no such file"):
            open_store(f"sqlite://{tmp_path}/h.db", must_exist=True)
        assert not (tmp_path / "h.db").exists()


class TestJobs:
    def test_launch_order_is_assigned_once_in_registration_order(self, store: SqliteStore) -> None:
        """Orders count 1, 2, 3 per tuning job; registering a known job returns its order."""
        assert [store.register_job("t", j) for j in ("a", "b", "c")] == [1, 2, 3]
        assert store.register_job("t", "b") == 2
        store.ensure_tuning_job("u", OBJECTIVE)
        assert store.register_job("u", "a") == 1

    def test_two_connections_share_one_order_sequence(self, tmp_path: Path) -> None:
        """Two processes' stores on one file never hand out the same order."""
        path = str(tmp_path / "h.db")
        one, two = SqliteStore(path), SqliteStore(path)
        one.ensure_tuning_job("t", OBJECTIVE)
        orders = [
            one.register_job("t", "a"),
            two.register_job("t", "b"),
            one.register_job("t", "c"),
        ]
        assert orders == [1, 2, 3]

    def test_values_roundtrip_including_nan_and_infinities(self, store: SqliteStore) -> None:
        """NaN (stored as NULL), inf and -inf come back as they went in; an epoch is replaced, not duplicated."""
        store.register_job("t", "a")
        rows = [
            ValueRow("t", "a", "val_loss", e, v)
            for e, v in [(1, 1.0), (2, math.nan), (3, math.inf), (4, -math.inf)]
        ]
        store.apply(Batch(values=rows))
        store.apply(Batch(values=[ValueRow("t", "a", "val_loss", 1, 0.5)]))
        (job,) = store.load_jobs("t")
        series = job.values["val_loss"]
        assert [e for e, _ in series] == [1, 2, 3, 4]
        assert series[0][1] == 0.5 and math.isnan(series[1][1])
        assert series[2][1] == math.inf and series[3][1] == -math.inf

    def test_status_and_decision_roundtrip(self, store: SqliteStore) -> None:
        """A stop decision's evidence is stored with the job and read back."""
        store.register_job("t", "a")
        decision = Decision("t", "a", 3, 0.9, 0.8, 4, "sagemaker", dry_run=True)
        store.apply(Batch(updates=[JobUpdate("t", "a", JobStatus.STOPPED, decision)]))
        (job,) = store.load_jobs("t")
        assert job.status is JobStatus.STOPPED
        assert job.decision == decision

    def test_load_jobs_filters_metrics(self, store: SqliteStore) -> None:
        """Only the asked metrics are loaded."""
        store.register_job("t", "a")
        store.apply(
            Batch(
                values=[ValueRow("t", "a", "val_loss", 1, 1.0), ValueRow("t", "a", "acc", 1, 0.5)]
            )
        )
        (job,) = store.load_jobs("t", metrics={"acc"})
        assert job.values == {"acc": [(1, 0.5)]}


class TestOffsets:
    def test_offsets_are_written_with_values_in_one_transaction(self, store: SqliteStore) -> None:
        """A failing batch leaves neither its values nor its offsets behind."""
        store.register_job("t", "a")
        good = FileOffset("node1", "1:2", "fp", "/x.log", 100)
        store.apply(Batch(values=[ValueRow("t", "a", "val_loss", 1, 1.0)], offsets=[good]))
        assert store.offsets("node1")["1:2"].offset == 100
        # an update of a job in a tuning job that does not exist violates nothing, so force a
        # failure through a value row whose epoch is not an integer column value
        bad_offset = FileOffset("node1", "1:2", "fp", "/x.log", 200)
        with pytest.raises(sqlite3.Error):
            store.apply(
                Batch(
                    values=[
                        ValueRow("t", "a", "val_loss", 2, 0.5),
                        ValueRow("t", "a", None, 3, 0.5),
                    ],  # type: ignore[arg-type]
                    offsets=[bad_offset],
                )
            )
        assert store.offsets("node1")["1:2"].offset == 100
        (job,) = store.load_jobs("t")
        assert job.values["val_loss"] == [(1, 1.0)]

    def test_offsets_are_per_node(self, store: SqliteStore) -> None:
        """Each node sees only its own offsets."""
        store.apply(
            Batch(
                offsets=[FileOffset("n1", "k", "f", "/a", 1), FileOffset("n2", "k", "f", "/a", 2)]
            )
        )
        assert store.offsets("n1")["k"].offset == 1
        assert store.offsets("n2")["k"].offset == 2
        assert store.ping()
