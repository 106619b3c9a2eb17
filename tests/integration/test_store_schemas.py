"""The two stores write their schema each in its own dialect, kept in step by hand: this reads
both back from the databases themselves and compares them — the same tables, columns (by kind),
primary keys, unique keys and indexes, at the same schema version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from sidecar.store import open_store
from sidecar.store.postgres import SCHEMA_VERSION as PG_VERSION
from sidecar.store.sqlite import SCHEMA_VERSION as SQLITE_VERSION

KINDS = {
    "integer": "int",
    "bigint": "int",
    "text": "text",
    "real": "float",
    "double precision": "float",
}

Schema = dict[str, dict[str, object]]


def read_sqlite_schema(path: Path) -> Schema:
    con = sqlite3.connect(path)
    try:
        tables = [
            name
            for (name,) in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        out: Schema = {}
        for table in tables:
            cols = con.execute(f"PRAGMA table_info({table})").fetchall()
            columns = {c[1]: (KINDS[c[2].lower()], bool(c[3])) for c in cols}
            primary = tuple(c[1] for c in sorted(cols, key=lambda c: c[5]) if c[5])
            uniques, indexes = set(), set()
            for _, name, unique, origin, _ in con.execute(f"PRAGMA index_list({table})"):
                columns_of = tuple(r[2] for r in con.execute(f"PRAGMA index_info('{name}')"))
                if origin == "pk":
                    continue
                (uniques if unique else indexes).add(columns_of)
            out[table] = {
                "columns": columns,
                "primary": primary,
                "unique": uniques,
                "indexes": indexes,
            }
        return out
    finally:
        con.close()


def read_postgres_schema(url: str, schema: str) -> Schema:
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        ]
        out: Schema = {}
        for table in tables:
            cols = conn.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s",
                (schema, table),
            ).fetchall()
            columns = {c: (KINDS[t], n == "NO") for c, t, n in cols}
            keys: dict[str, set[tuple[str, ...]]] = {"p": set(), "u": set(), "i": set()}
            for name, is_primary, is_unique, defn in conn.execute(
                "SELECT c.relname, i.indisprimary, i.indisunique, pg_get_indexdef(i.indexrelid)"
                " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_class t ON t.oid = i.indrelid"
                " JOIN pg_namespace n ON n.oid = t.relnamespace"
                " WHERE n.nspname = %s AND t.relname = %s",
                (schema, table),
            ):
                del name
                columns_of = tuple(
                    part.strip().split()[0]
                    for part in defn[defn.index("(") + 1 : defn.rindex(")")].split(",")
                )
                keys["p" if is_primary else "u" if is_unique else "i"].add(columns_of)
            primary = next(iter(keys["p"]), ())
            out[table] = {
                "columns": columns,
                "primary": primary,
                "unique": keys["u"],
                "indexes": keys["i"],
            }
        return out


@pytest.mark.postgres
def test_sqlite_and_postgres_hold_the_same_schema(
    tmp_path: Path, postgres_url: str, postgres_schema: str
) -> None:
    """Every table, column (integer, text or float; NOT NULL or not), key and index of one
    store is in the other; version N means the same tables on both."""
    assert SQLITE_VERSION == PG_VERSION
    open_store(f"sqlite://{tmp_path / 'h.db'}").close()
    open_store(postgres_url).close()
    lite = read_sqlite_schema(tmp_path / "h.db")
    pg = read_postgres_schema(postgres_url, postgres_schema)
    # SQLite's INTEGER PRIMARY KEY columns are NOT NULL by the key, not by the column
    for tables in (lite, pg):
        for table in tables.values():
            columns = table["columns"]
            assert isinstance(columns, dict)
            for column in table["primary"]:  # type: ignore[attr-defined]
                kind, _ = columns[column]
                columns[column] = (kind, True)
    assert sorted(lite) == sorted(pg)
    for name in lite:
        assert lite[name] == pg[name], name
