"""`replay --plot`: the traced medians and stops (pure), the PNG, and the missing-extra message."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.cli import read_config
from sidecar.extras import install_hint
from sidecar.replay import replay
from sidecar.rule import JobHistory
from sidecar.rules import make_rule
from sidecar.store import open_store
from tests.conftest import ROOT, SAMPLE_LOGS, skip_or_fail

Run = Callable[..., subprocess.CompletedProcess[str]]
QUICKSTART = SAMPLE_LOGS / "quickstart"
CONFIG = QUICKSTART / "config.yaml"
LOGS = sorted(QUICKSTART.glob("*.log"))
GOLDEN = ROOT / "tests" / "golden" / "quickstart.replay.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def traced(env: dict[str, str] | None = None) -> tuple[dict[str, Any], list[Any]]:
    """`replay(..., trace=True)` over the quickstart logs: the document and the traces."""
    config = read_config(str(CONFIG), env=env or {})
    store = open_store("sqlite://:memory:")
    try:
        result = replay(config, LOGS, store, trace=True)
    finally:
        store.close()
    return result.document, result.traces


class TestTrace:
    def test_stops_and_their_medians_are_the_replay_decisions(self) -> None:
        """Early stopping Auto: each trace's stop is the job's decision, and the median drawn at
        that epoch is the decision's median."""
        document, traces = traced()
        assert [t.job for t in traces] == [j["job"] for j in document["jobs"]]
        for job, trace in zip(document["jobs"], traces, strict=True):
            decision = job["decision"]
            assert trace.stopped is (decision is not None)
            if decision is None:
                assert trace.stop is None
                continue
            assert trace.stop is not None
            assert trace.stop.epoch == decision["epoch"]
            assert trace.medians[decision["epoch"]] == decision["median"]

    def test_medians_are_the_rules_over_earlier_jobs_running_averages(self) -> None:
        """Every median drawn is what the rule computes from the earlier jobs' values (cut at
        their stops), recomputed here from the traces themselves."""
        config = read_config(str(CONFIG), env={})
        rule = make_rule(config.early_stopping, config.objective.type)
        _, traces = traced()
        for i, trace in enumerate(traces):
            earlier = []
            for before in traces[:i]:
                history = JobHistory(before.order, config.objective.type)
                for epoch, value in before.values.items():
                    history.set_value(epoch, value)
                history.stop_epoch = before.stop.epoch if before.stop else None
                earlier.append(history)
            for epoch, median in trace.medians.items():
                verdict = rule.decide(epoch=epoch, value=trace.values[epoch], earlier=earlier)
                assert verdict.median == median, (trace.job, epoch)

    def test_every_logged_value_is_in_the_curve_even_after_a_stop(self) -> None:
        """A stopped job's curve goes on to the end of its log (drawn as what would not run)."""
        _, traces = traced()
        stopped = [t for t in traces if t.stopped]
        assert stopped
        for trace in stopped:
            assert trace.stop is not None
            assert max(trace.values) > trace.stop.epoch
            assert max(trace.medians) == trace.stop.epoch

    def test_early_stopping_off_traces_where_auto_would_have_stopped(self) -> None:
        """Off stops nothing, yet the traces mark the epochs where the rule would have stopped."""
        auto, auto_traces = traced()
        off, off_traces = traced({"SIDECAR_EARLY_STOPPING__TYPE": "Off"})
        assert {j["status"] for j in off["jobs"]} == {"Completed"}
        assert not any(t.stopped for t in off_traces)
        would = {t.job: t.stop.epoch for t in off_traces if t.stop is not None}
        assert would == {j["job"]: j["stopped_at_epoch"] for j in auto["jobs"] if j["decision"]}
        assert all(t.stop is None or t.stop.dry_run for t in off_traces)
        assert [t.medians for t in off_traces] == [t.medians for t in auto_traces]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def matplotlib_installed() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        skip_or_fail("matplotlib (the plot extra) is not installed")


class TestPlotCommand:
    @pytest.mark.usefixtures("matplotlib_installed")
    def test_plot_writes_a_png_of_the_quickstart_replay(self, run_cli: Run, tmp_path: Path) -> None:
        """`replay --plot curves.png` writes a PNG image and says so under the table."""
        out = tmp_path / "curves.png"
        result = run_cli("replay", "-c", CONFIG, "--plot", out, *LOGS)
        assert result.returncode == 0, result.stderr
        assert f"plot written to {out}" in result.stdout
        data = out.read_bytes()
        width, height = png_size(data)
        assert width > 400 and height > 300
        assert len(data) > 10_000  # curves drawn, not an empty canvas

    @pytest.mark.usefixtures("matplotlib_installed")
    def test_plot_with_json_leaves_stdout_the_json_document(
        self, run_cli: Run, tmp_path: Path
    ) -> None:
        """With `--json`, stdout is still exactly the replay document."""
        out = tmp_path / "curves.png"
        result = run_cli("replay", "-c", CONFIG, "--json", "--plot", out, *LOGS)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == json.loads(GOLDEN.read_text())
        assert out.read_bytes()[:8] == PNG_SIGNATURE

    @pytest.mark.usefixtures("matplotlib_installed")
    def test_unwritable_plot_path_fails_without_traceback(
        self, run_cli: Run, tmp_path: Path
    ) -> None:
        """A plot path in a missing folder: exit 1, one line naming it."""
        out = tmp_path / "missing" / "curves.png"
        result = run_cli("replay", "-c", CONFIG, "--plot", out, *LOGS)
        assert result.returncode == 1
        assert "curves.png" in result.stderr and "Traceback" not in result.stderr

    def test_missing_matplotlib_exits_2_with_the_install_command(self, tmp_path: Path) -> None:
        """Without matplotlib: exit 2 before any work, the message naming the extra to install."""
        out = tmp_path / "curves.png"
        code = (
            "import sys; sys.modules['matplotlib'] = None; "
            "from sidecar.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        args = ["replay", "-c", str(CONFIG), "--plot", str(out), *map(str, LOGS)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        result = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert result.returncode == 2
        assert "--plot needs the Python package(s) 'matplotlib'" in result.stderr
        assert install_hint("plot") in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
        assert not out.exists()
