"""Shared fixtures: sample logs, configs written to tmp files, the CLI run as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_LOGS = ROOT / "sample_logs"


def in_ci() -> bool:
    """CI sets `CI`: there, a missing external component fails a test instead of skipping it."""
    return bool(os.environ.get("CI"))


def skip_or_fail(reason: str) -> None:
    """Skip on a laptop; fail under CI, where every component must be present."""
    if in_ci():
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a YAML config text to a tmp file and return its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m sidecar ARGS` as a real subprocess."""

    def run(
        *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "sidecar", *map(str, args)],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd,
            timeout=120,
            check=False,
        )

    return run
