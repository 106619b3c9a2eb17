"""The functional core imports nothing that does IO, keeps no clock and no globals (DESIGN §5)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sidecar"
CORE = ["config", "model", "decode", "parse", "prefilter", "rule", "engine", "report"]
# modules that touch files, sockets, processes, clocks or the outside world
FORBIDDEN = {
    "os",
    "io",
    "socket",
    "sqlite3",
    "subprocess",
    "time",
    "threading",
    "asyncio",
    "pathlib",
    "shutil",
    "signal",
    "random",
    "datetime",
    "logging",
    "structlog",
    "prometheus_client",
    "watchdog",
    "psycopg",
    "docker",
    "kubernetes",
    "http",
    "urllib",
    "sidecar.store",
    "sidecar.logfile",
    "sidecar.cli",
    "sidecar.app",
    "sidecar.tail",
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io(module: str) -> None:
    """Core modules import no IO, clock or telemetry module (presets are read-only package data)."""
    imported = imported_modules(PACKAGE / f"{module}.py")
    bad = {name for name in imported if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN}
    assert not bad, f"sidecar/{module}.py imports {sorted(bad)}"


def test_every_module_has_a_one_line_docstring() -> None:
    """Each module starts with a one-line docstring saying what it holds."""
    for path in PACKAGE.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, f"{path} has no module docstring"
        assert doc.splitlines()[0].strip(), f"{path}: empty first docstring line"
