"""The history store: one protocol (sidecar/store/records.py), with SQLite (default) and
PostgreSQL implementations behind it, and the URL that chooses one."""

from __future__ import annotations

from pathlib import Path

from sidecar.errors import StoreError
from sidecar.store.records import (
    Batch,
    JobUpdate,
    ShadowDecision,
    Store,
    StoredJob,
    ValueRow,
    decision_from_json,
    decision_to_json,
    from_column,
    to_column,
)
from sidecar.store.sqlite import MEMORY, SqliteStore, sqlite_path

__all__ = [
    "Batch",
    "JobUpdate",
    "ShadowDecision",
    "Store",
    "StoreError",
    "StoredJob",
    "ValueRow",
    "decision_from_json",
    "decision_to_json",
    "from_column",
    "open_store",
    "to_column",
]


def open_store(url: str, *, must_exist: bool = False) -> Store:
    """Open the store a URL names: `sqlite:///abs/path.db`, `sqlite://rel.db`, `sqlite://:memory:`,
    a bare path (SQLite), or `postgresql://...`. `must_exist`: never create a new SQLite file."""
    if url.startswith(("postgresql://", "postgres://")):
        from sidecar.extras import require

        require("postgres", what="a postgresql:// store")
        from sidecar.store.postgres import PostgresStore

        store: Store = PostgresStore(url)
        return store
    path = sqlite_path(url)
    if must_exist and path != MEMORY and not Path(path).is_file():
        raise StoreError(f"store {url!r}: no such file {path!r}")
    return SqliteStore(path, url=url)
