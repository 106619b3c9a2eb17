"""Each benchmark script runs on a tiny input and prints its table: the scripts do not rot.

Figures are not checked (no timing thresholds in tests); what is checked is that each script ends
cleanly and says what it measured, and that the parse benchmark's tools all found every value.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run(script: str, *args: str, timeout: float = 240) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return done.stdout


def test_parse_throughput_compares_every_tool_at_each_share(tmp_path: Path) -> None:
    if shutil.which("mtail") is None:
        skip_or_fail("mtail is not installed (apt-get install -y mtail)")
    results = tmp_path / "RESULTS.md"
    out = run(
        "parse_throughput.py",
        "--lines",
        "3000",
        "--runs",
        "1",
        "--metric-share",
        "0.02",
        "0.2",
        "--results",
        str(results),
    )
    assert "every tool extracted every value: yes" in out
    text = results.read_text()
    for row in ("| 2.0% | mtail |", "| 20.0% | sidecar replay |", "floor: re.finditer"):
        assert row in text


def test_scaling_prints_each_table(tmp_path: Path) -> None:
    out = run(
        "scaling.py",
        "--lines",
        "2000",
        "--jobs",
        "1",
        "10",
        "--epochs",
        "3",
        "--files",
        "2",
        "--idle-seconds",
        "0.5",
    )
    assert "| 2,000 lines |" in out
    assert "| 10 jobs x 3 epochs |" in out
    assert "| 2 files |" in out


def test_stop_latency_runs_its_trials_alone_and_beside_stuck_clients() -> None:
    out = run("stop_latency.py", "--trials", "3", "--stuck-clients", "2")
    assert "  alone " in out
    assert "2 never-reading SSE clients" in out
    assert "every decision made: 6 of 6 victims stopped" in out


def test_decision_history_runs_on_sqlite() -> None:
    out = run(
        "decision_history.py",
        "--jobs",
        "20",
        "--epochs",
        "3",
        "--cold",
        "1",
        "--repeat",
        "2",
        "--no-postgres",
    )
    assert "steady" in out


@pytest.mark.parametrize("layout", ["flat"])
def test_footprint_follows_a_few_files(layout: str) -> None:
    out = run("footprint.py", "--files", "3", "--idle-seconds", "1", "--layout", layout)
    assert "idle" in out.lower()


def test_rule_decisions_times_every_rule() -> None:
    out = run("rule_decisions.py", "--jobs", "20", "--epochs", "3", "--repeat", "2")
    for rule in ("sagemaker", "optuna-successive-halving", "katib-median"):
        assert rule in out


def test_whatif_speed_runs_its_candidates() -> None:
    out = run(
        "whatif_speed.py", "--candidates", "6", "--orders", "2", "--jobs", "3", "--epochs", "4"
    )
    assert "6 candidates x 2 orders" in out


def test_live_follow_compares_with_mtail_on_a_few_files() -> None:
    if shutil.which("mtail") is None:
        skip_or_fail("mtail is not installed (apt-get install -y mtail)")
    out = run("live_follow.py", "--files", "3", "--rate", "300", "--seconds", "1")
    assert "sidecar" in out and "mtail counted" in out
    assert "values never stored" not in out


def test_page_load_measures_a_small_sweep() -> None:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        skip_or_fail("chromium and chromium-driver are not installed")
    out = run("page_load.py", "--jobs", "3", "--epochs", "2", "--runs", "1")
    assert "first full render" in out
