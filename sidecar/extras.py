"""Optional dependencies: which config fields need which extra, checked before any work starts."""

from __future__ import annotations

import importlib.util
import sys

from sidecar.config import Config
from sidecar.errors import ConfigError

DISTRIBUTION = "early-stopping-sidecar"

# extra -> the modules it installs (all must import)
EXTRAS: dict[str, tuple[str, ...]] = {
    "docker": ("docker",),
    "kubernetes": ("kubernetes",),
    "postgres": ("psycopg", "psycopg_pool"),
    "plot": ("matplotlib",),
    "optuna": ("optuna",),
}


def missing(extra: str) -> list[str]:
    """The modules of an extra that cannot be imported here (found without importing them:
    some take a second to import)."""
    absent = []
    for module in EXTRAS[extra]:
        if module in sys.modules and sys.modules[module] is None:  # blocked on purpose
            absent.append(module)
            continue
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is None:
            absent.append(module)
    return absent


def install_hint(extra: str) -> str:
    """How to install an extra, from a checkout and from a package index."""
    return (
        f"pip install '.[{extra}]' in a checkout of the sidecar, or "
        f"pip install '{DISTRIBUTION}[{extra}]' from a package index"
    )


def require(extra: str, *, what: str) -> None:
    """Raise ConfigError (exit 2) naming `what` needs the extra and how to install it."""
    absent = missing(extra)
    if absent:
        names = ", ".join(repr(m) for m in absent)
        raise ConfigError(
            f"{what} needs the Python package(s) {names}, not installed here: {install_hint(extra)}"
        )


def needed(config: Config, *, dry_run: bool = False) -> list[tuple[str, str]]:
    """(extra, the field that needs it) for a config, in the order the fields appear."""
    found: list[tuple[str, str]] = []
    for i, source in enumerate(config.sources):
        if source.docker is not None:
            found.append(("docker", f"sources[{i}].docker"))
    if not dry_run and config.stop.backend in ("docker", "kubernetes"):
        found.append((config.stop.backend, f"stop.backend: {config.stop.backend}"))
    if config.store.startswith(("postgresql://", "postgres://")):
        found.append(("postgres", "store: postgresql://..."))
    return found


def require_extras(config: Config, *, dry_run: bool = False) -> None:
    """Every extra the config needs is installed, else ConfigError for the first that is not."""
    for extra, what in needed(config, dry_run=dry_run):
        require(extra, what=what)


def problems(config: Config) -> list[str]:
    """What `require_extras` would refuse, as messages (for `sidecar check`)."""
    out = []
    for extra, what in needed(config):
        try:
            require(extra, what=what)
        except ConfigError as exc:
            out.append(str(exc))
    return out
