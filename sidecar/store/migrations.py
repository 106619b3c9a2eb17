"""Versioned schemas shared by the stores: which migrations to run, and refusing a newer schema.

Each store keeps a list of migration scripts; script k (1-based) takes the schema from version k-1
to version k, and the store's `schema_version` table holds one row per version applied. Both stores
number their versions in lockstep: version N means the same tables on SQLite and on PostgreSQL.
A store migrates inside one transaction (all pending versions or none), and a store whose version
is higher than this sidecar's list is left untouched and refused: the sidecar is too old for it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sidecar import __version__
from sidecar.errors import SchemaVersionError

# a `;` that ends a line ends a statement (no migration puts one inside a literal or a comment)
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")


def statements(script: str) -> list[str]:
    """A migration script's statements, in order, without empty ones."""
    parts = (part.strip() for part in _STATEMENT_END.split(script))
    return [part for part in parts if part and not _only_comments(part)]


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


def newer_schema_error(url: str, found: int, supported: int) -> SchemaVersionError:
    """The refusal an older sidecar gives a store that a newer one has migrated."""
    return SchemaVersionError(
        f"store {url!r} has schema version {found}, newer than this sidecar's {supported} "
        f"(early-stopping-sidecar {__version__}): upgrade the sidecar to a release that knows "
        f"schema version {found}; the store was not changed"
    )


def pending(url: str, current: int, migrations: Sequence[str]) -> list[tuple[int, str]]:
    """The (version, script) pairs that bring a store at version `current` (0: empty) to the
    latest; empty when it is up to date. Raises SchemaVersionError when `current` is newer."""
    latest = len(migrations)
    if current > latest:
        raise newer_schema_error(url, current, latest)
    return [(version, migrations[version - 1]) for version in range(current + 1, latest + 1)]
