"""The SQLite store: schema versions, launch order, values with NaN, offsets in one transaction."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from sidecar.config import Objective, ObjectiveType
from sidecar.errors import SchemaVersionError, StoreError
from sidecar.store import Batch, ValueRow, open_store
from sidecar.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore, migrate
from tests.helpers import at_once

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

    def test_threads_opening_a_new_file_at_once_all_succeed(self, tmp_path: Path) -> None:
        """SQLite refuses at once (no busy wait) when connections switch a new file to WAL
        together; trials of one sweep start at once, so every open must still succeed."""
        failures: list[BaseException] = []
        for round_ in range(60):
            path = str(tmp_path / f"h{round_}.db")
            _, errors = at_once(4, lambda path=path: SqliteStore(path).close())
            failures += errors
        assert failures == []

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


class TestSqliteSpecifics:
    def test_others_only_changes_skip_this_connections_writes_never_anothers(
        self, tmp_path: Path
    ) -> None:
        """`others_only`: after an answer, this connection's own writes are not read back (the
        data version shows no other commit), but another connection's write always is."""
        path = str(tmp_path / "h.db")
        mine, theirs = SqliteStore(path), SqliteStore(path)
        try:
            mine.ensure_tuning_job("t", OBJECTIVE)
            mine.register_job("t", "a")
            cursor, jobs = mine.changes("t", "val_loss", 0, others_only=True)
            assert [j.name for j in jobs] == ["a"]
            mine.apply(Batch(values=[ValueRow("t", "a", "val_loss", 1, 0.5)]))
            assert mine.changes("t", "val_loss", cursor, others_only=True) == (cursor, [])
            later, jobs = mine.changes("t", "val_loss", cursor)  # asked for everything
            assert later > cursor and [j.name for j in jobs] == ["a"]

            theirs.register_job("t", "b")
            theirs.apply(Batch(values=[ValueRow("t", "b", "val_loss", 1, 0.7)]))
            newest, jobs = mine.changes("t", "val_loss", later, others_only=True)
            assert newest > later
            assert [(j.name, j.values) for j in jobs] == [("b", {"val_loss": [(1, 0.7)]})]
            assert mine.changes("t", "val_loss", newest, others_only=True) == (newest, [])
        finally:
            mine.close()
            theirs.close()

    def test_upgrade_to_v2_moves_the_write_counter_into_tuning_jobs(self, tmp_path: Path) -> None:
        """v1's single write_sequence row becomes each tuning job's starting write_seq."""
        path = tmp_path / "h.db"
        db = sqlite3.connect(path, isolation_level=None)
        assert migrate(db, str(path), MIGRATIONS[:1]) == 1
        db.execute("INSERT INTO tuning_jobs VALUES ('t', 'loss', 'Minimize', 0)")
        db.execute("INSERT INTO tuning_jobs VALUES ('u', 'loss', 'Minimize', 0)")
        db.execute("UPDATE write_sequence SET value = 17")
        db.close()
        SqliteStore(str(path)).close()
        db = sqlite3.connect(path)
        assert db.execute("SELECT name, write_seq FROM tuning_jobs ORDER BY name").fetchall() == [
            ("t", 17),
            ("u", 17),
        ]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "write_sequence" not in tables

    def test_upgrade_to_v3_keeps_every_value_in_a_lean_table(self, tmp_path: Path) -> None:
        """v3 rebuilds metric_values WITHOUT ROWID with only the cursor index; nothing is lost,
        NaN (NULL) included, and the cursor still finds what changed."""
        path = tmp_path / "h.db"
        db = sqlite3.connect(path, isolation_level=None)
        assert migrate(db, str(path), MIGRATIONS[:2]) == 2
        db.execute("INSERT INTO tuning_jobs VALUES ('t', 'val_loss', 'Minimize', 0, 5)")
        db.execute("INSERT INTO jobs VALUES ('t', 'a', 1, 'Running', NULL, NULL, 0, NULL, 5)")
        rows = [("t", "a", "val_loss", 1, 0.5, 4), ("t", "a", "val_loss", 2, None, 5)]
        db.executemany("INSERT INTO metric_values VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.close()
        store = SqliteStore(str(path))
        job = store.load_job("t", "a")
        assert job is not None
        (e1, v1), (e2, v2) = job.values["val_loss"]
        assert (e1, v1, e2) == (1, 0.5, 2)
        assert math.isnan(v2)
        store.close()
        db = sqlite3.connect(path)
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'metric_values'").fetchone()
        assert "WITHOUT ROWID" in sql[0]
        indexes = {
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'metric_values'"
                " AND sql IS NOT NULL"
            )
        }
        assert indexes == {"metric_values_by_cursor"}
        assert sorted(db.execute("SELECT * FROM metric_values").fetchall(), key=str) == sorted(
            rows, key=str
        )

    def test_driver_errors_are_store_errors(self, store: SqliteStore) -> None:
        """A sqlite3 error inside a protocol method is a StoreError naming what failed."""
        with pytest.raises(StoreError, match="cannot apply a batch") as info:
            store.apply(Batch(values=[ValueRow("t", "a", None, 1, 1.0)]))  # type: ignore[arg-type]
        assert isinstance(info.value.__cause__, sqlite3.Error)
