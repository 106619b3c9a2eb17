"""`sidecar exec`: byte-exact pass-through, exit codes, signal forwarding, stopping by the rule."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]


def config(tmp_path: Path, **extra: str) -> Path:
    """The exec tests' config; `extra` fields replace the defaults (a YAML key appears once)."""
    fields = {
        "tuning_job": "ex",
        "objective": "{metric: val_loss}",
        "metric_definitions": "[{Name: val_loss, Regex: 'val_loss=(\\S+)'}]",
        "early_stopping": "{min_jobs: 1}",
        "store": f"'sqlite://{tmp_path / 'h.db'}'",
        "stop": "{grace_seconds: 2}",
        "log_level": "warning",
    }
    fields.update(extra)
    lines = [f"{k}: {v}" for k, v in fields.items()]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_exec(cfg: Path, job: str, script: str, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar",
            "exec",
            "-c",
            str(cfg),
            "--job",
            job,
            *extra,
            "--",
            sys.executable,
            "-c",
            script,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )


def statuses(tmp_path: Path) -> dict[str, tuple[str, int | None]]:
    db = sqlite3.connect(tmp_path / "h.db")
    rows = db.execute("SELECT name, status, stopped_at_epoch FROM jobs").fetchall()
    return {name: (status, epoch) for name, status, epoch in rows}


class TestPassThrough:
    def test_stdout_and_stderr_pass_through_byte_for_byte(self, tmp_path: Path) -> None:
        """Binary output, invalid UTF-8, \\r redraws and a last line without newline arrive unchanged."""
        out = b"val_loss=1.0\r\n\x1b[1mbold\x1b[0m\rredraw\xff\xfe\nno newline at end"
        err = b"warning: \x00\x01 binary\nval_loss=0.5\n"
        script = (
            f"import sys; sys.stdout.buffer.write({out!r}); sys.stdout.flush(); "
            f"sys.stderr.buffer.write({err!r}); sys.stderr.flush()"
        )
        result = run_exec(config(tmp_path), "a", script)
        assert result.returncode == 0, result.stderr
        assert result.stdout == out
        assert result.stderr == err

    def test_large_output_is_not_truncated(self, tmp_path: Path) -> None:
        """Megabytes of output pass through whole while being parsed."""
        script = "import sys\nfor i in range(100000): sys.stdout.write(f'line {i} val_loss={i}\\n')"
        result = run_exec(config(tmp_path, early_stopping="{type: Off}"), "big", script)
        assert result.returncode == 0
        lines = result.stdout.splitlines()
        assert len(lines) == 100000 and lines[-1] == b"line 99999 val_loss=99999"


class TestExitCodes:
    @pytest.mark.parametrize("code", [0, 1, 3, 42])
    def test_exits_with_the_childs_code(self, tmp_path: Path, code: int) -> None:
        """Not stopped: exec exits as the child did; non-zero records the job as Failed."""
        result = run_exec(config(tmp_path), "j", f"print('val_loss=1.0'); raise SystemExit({code})")
        assert result.returncode == code
        assert statuses(tmp_path)["j"][0] == ("Completed" if code == 0 else "Failed")

    def test_killed_child_exits_128_plus_signal(self, tmp_path: Path) -> None:
        """A child killed by a signal: exit code 128 + signal number, as shells report it."""
        result = run_exec(
            config(tmp_path), "j", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
        )
        assert result.returncode == 128 + signal.SIGKILL

    def test_missing_command_is_a_usage_error(self, tmp_path: Path) -> None:
        """A command that cannot start: exit 2 naming it."""
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sidecar",
                "exec",
                "-c",
                str(config(tmp_path)),
                "--job",
                "j",
                "--",
                "/nonexistent/trainer",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert "/nonexistent/trainer" in result.stderr


class TestStopping:
    LOSER = "import time\nprint('val_loss=2.0', flush=True)\ntime.sleep(30)\nprint('not reached')\n"

    def test_a_losing_child_is_stopped_and_exec_exits_0(self, tmp_path: Path) -> None:
        """Worse than the median: the child's group is signalled and exec exits 0 (configurable)."""
        cfg = config(tmp_path)
        assert run_exec(cfg, "good", "print('val_loss=1.0')").returncode == 0
        started = time.monotonic()
        result = run_exec(cfg, "bad", self.LOSER)
        assert time.monotonic() - started < 25  # did not sleep its 30 s out
        assert result.returncode == 0
        assert b"not reached" not in result.stdout
        assert statuses(tmp_path)["bad"] == ("Stopped", 1)

    def test_early_stopped_exit_code_is_configurable(self, tmp_path: Path) -> None:
        """`early_stopped_exit_code` replaces 0 for an early-stopped child."""
        cfg = config(tmp_path, early_stopped_exit_code="77")
        run_exec(cfg, "good", "print('val_loss=1.0')")
        assert run_exec(cfg, "bad", self.LOSER).returncode == 77

    def test_marker_file_tells_early_stopped_from_failed(self, tmp_path: Path) -> None:
        """`stop.marker` is written with the decision's evidence before the child is signalled."""
        marker = tmp_path / "markers" / "{job}.stopped"
        cfg = config(tmp_path)
        cfg.write_text(
            cfg.read_text().replace(
                "stop: {grace_seconds: 2}", f"stop: {{grace_seconds: 2, marker: '{marker}'}}"
            )
        )
        run_exec(cfg, "good", "print('val_loss=1.0')")
        run_exec(cfg, "bad", self.LOSER)
        doc = json.loads((tmp_path / "markers" / "bad.stopped").read_text())
        assert (
            doc["job"] == "bad"
            and doc["epoch"] == 1
            and doc["value"] == 2.0
            and doc["median"] == 1.0
        )
        assert not (tmp_path / "markers" / "good.stopped").exists()

    def test_dry_run_decides_but_lets_the_child_finish(self, tmp_path: Path) -> None:
        """--dry-run: the job is recorded Stopped (dry run) and the child runs to its own end."""
        cfg = config(tmp_path)
        run_exec(cfg, "good", "print('val_loss=1.0')")
        result = run_exec(cfg, "bad", "print('val_loss=2.0'); print('finished')", "--dry-run")
        assert result.returncode == 0
        assert b"finished" in result.stdout
        assert statuses(tmp_path)["bad"] == ("Stopped", 1)
        db = sqlite3.connect(tmp_path / "h.db")
        (decision,) = db.execute("SELECT decision FROM jobs WHERE name = 'bad'").fetchone()
        assert json.loads(decision)["dry_run"] is True

    def test_sigterm_is_forwarded_to_the_child(self, tmp_path: Path) -> None:
        """SIGTERM to exec reaches the child, whose exit code exec then reports."""
        script = (
            "import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: (print('got term', flush=True), sys.exit(5)))\n"
            "print('ready', flush=True)\ntime.sleep(30)\n"
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecar",
                "exec",
                "-c",
                str(config(tmp_path)),
                "--job",
                "t",
                "--",
                sys.executable,
                "-c",
                script,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert b"got term" in out
        assert proc.returncode == 5


def test_a_command_that_cannot_run_leaves_no_job(tmp_path: Path) -> None:
    """`exec` of a missing program exits 2 and registers nothing: no ghost `Running` job."""
    config = tmp_path / "c.yaml"
    db = tmp_path / "h.db"
    config.write_text(
        "tuning_job: t\nobjective: {metric: loss}\n"
        "metric_definitions: [{Name: loss, Regex: 'loss=([0-9.]+)'}]\n"
        f"store: 'sqlite://{db}'\nstop: {{backend: none}}\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar",
            "exec",
            "-c",
            str(config),
            "--job",
            "j",
            "--",
            str(tmp_path / "no-such-program"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot run" in result.stderr
    status = subprocess.run(
        [sys.executable, "-m", "sidecar", "status", "--store", f"sqlite://{db}", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    jobs = [j for tj in json.loads(status.stdout)["tuning_jobs"] for j in tj["jobs"]]
    assert jobs == []
