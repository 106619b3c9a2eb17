"""The house's rules, checked from the code's own imports: the functional core (the list in
docs/design.md, "Architecture") imports nothing of the shell and nothing that does IO, and no
import cycle exists anywhere in the package. Run as a script, it prints the import layers."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sidecar"
DESIGN = ROOT / "docs" / "design.md"

# modules that touch files, sockets, processes, clocks, threads or the outside world
IO_MODULES = {
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
    "select",
    "random",
    "datetime",
    "logging",
    "tempfile",
    "structlog",
    "prometheus_client",
    "watchdog",
    "psycopg",
    "psycopg_pool",
    "docker",
    "kubernetes",
    "http",
    "urllib",
    "matplotlib",
    "optuna",
}


def core_modules() -> list[str]:
    """The core, as docs/design.md lists it (its table of `sidecar/...` modules)."""
    text = DESIGN.read_text()
    section = text.split("**The core**", 1)[1].split("**The shell**", 1)[0]
    found = re.findall(r"^\| `sidecar/([\w/]+?)(?:\.py|/)` \|", section, re.M)
    assert found, "docs/design.md lists no core modules"
    return ["sidecar." + name.replace("/", ".") for name in found]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str) -> Iterator[str]:
    """Every module `path` imports, at the top or inside a function (a lazy import is still a
    dependency), with relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            for alias in node.names:  # `from sidecar import rules` imports sidecar.rules
                yield f"{base}.{alias.name}"


def graph() -> dict[str, set[str]]:
    """The package's import graph: module -> the package modules it imports."""
    modules = package_modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports(path, name):
            if imported in modules and imported != name:
                targets.add(imported)
        edges[name] = targets - {"sidecar"}
    return edges


def is_core(name: str, core: list[str]) -> bool:
    return any(name == c or name.startswith(c + ".") for c in core)


def layers(edges: dict[str, set[str]]) -> list[list[str]]:
    """Modules by layer: layer 0 imports nothing of the package, layer n only layers below."""
    placed: dict[str, int] = {}
    remaining = dict(edges)
    out: list[list[str]] = []
    while remaining:
        ready = sorted(m for m, deps in remaining.items() if deps <= placed.keys())
        if not ready:
            break  # a cycle: the cycle test names it
        for m in ready:
            placed[m] = len(out)
            del remaining[m]
        out.append(ready)
    return out


@pytest.mark.parametrize("module", core_modules())
def test_a_core_module_imports_only_the_core_and_no_io(module: str) -> None:
    """Every `sidecar.*` import of a core module is of a core module (checked by prefix, at
    any depth of the module), and nothing it imports does IO."""
    core = core_modules()
    modules = package_modules()
    paths = [p for name, p in modules.items() if name == module or name.startswith(module + ".")]
    assert paths, f"{module} is listed in docs/design.md but does not exist"
    for path in paths:
        name = module_name(path)
        for imported in imports(path, name):
            top = imported.split(".")[0]
            assert top not in IO_MODULES, f"{name} imports {imported}, which does IO"
            if imported.startswith("sidecar.") and imported in modules:
                assert is_core(imported, core), f"{name} (core) imports {imported} (shell)"


def test_no_import_cycle_in_the_package() -> None:
    """No module imports, directly or through others, a module that imports it."""
    edges = graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_core_is_below_the_shell() -> None:
    """Seen as layers, no core module sits above a shell module it could import."""
    core = core_modules()
    edges = graph()
    for name, deps in edges.items():
        if is_core(name, core):
            assert all(is_core(d, core) for d in deps), (name, sorted(deps))
    assert sum(len(layer) for layer in layers(edges)) == len(edges)


def test_every_module_has_a_one_line_docstring() -> None:
    """Each module starts with a docstring whose first line says what it holds."""
    for path in PACKAGE.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, f"{path} has no module docstring"
        assert doc.splitlines()[0].strip(), f"{path}: empty first docstring line"


def test_nothing_cites_a_design_document_outside_the_repository() -> None:
    """The design cited is docs/design.md, by section name: no `DESIGN §n` left anywhere."""
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *ROOT.glob("*.md")]:
        if path == Path(__file__).resolve():
            continue
        text = path.read_text()
        assert not re.search(r"DESIGN(?:\.md)? ?§|§ ?\d", text), path


def print_layers() -> None:
    core = core_modules()
    for i, layer in enumerate(layers(graph())):
        shown = ", ".join(f"{m}{'' if is_core(m, core) else ' [shell]'}" for m in layer)
        print(f"layer {i}: {shown}")


if __name__ == "__main__":
    print_layers()
    sys.exit(0)
