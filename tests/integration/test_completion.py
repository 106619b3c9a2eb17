"""Sweep completion with real `sidecar exec` processes sharing one store: a complete tuning job
launches no more commands, and `stop_running` stops the jobs still running."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.helpers import wait_for
from tests.integration.test_execute import config, run_exec, statuses


def known(tmp_path: Path) -> set[str]:
    """The jobs in the store so far (none while the exec has not created it yet)."""
    try:
        return set(statuses(tmp_path))
    except sqlite3.OperationalError:
        return set()


COMPLETION = "{min_jobs: 1, completion: {target_objective_value: 0.1, stop_running: true}}"


def test_exec_of_a_complete_tuning_job_does_not_start_its_command(tmp_path: Path) -> None:
    cfg = config(tmp_path, early_stopping=COMPLETION, early_stopped_exit_code="7")
    first = run_exec(cfg, "a", "print('val_loss=0.05', flush=True)")
    assert first.returncode == 0, first.stderr
    marker = tmp_path / "started"
    second = run_exec(cfg, "b", f"open({str(marker)!r}, 'w').close()")
    assert second.returncode == 7, second.stderr
    assert not marker.exists()
    assert "tuning_job_complete" in second.stderr.decode()
    assert set(statuses(tmp_path)) == {"a"}  # b never became a job


def test_stop_running_stops_a_job_when_another_reaches_the_target(tmp_path: Path) -> None:
    cfg = config(tmp_path, early_stopping=COMPLETION, early_stopped_exit_code="7")
    slow = (
        "import time\n"
        "for e in range(1, 100000):\n"
        "    print(f'val_loss={1 + e / 1e6}', flush=True)\n"
        "    time.sleep(0.05)\n"
    )
    argv = [sys.executable, "-m", "sidecar", "exec", "-c", str(cfg), "--job", "slow", "--"]
    log = (tmp_path / "slow.err").open("wb")
    running = subprocess.Popen(
        [*argv, sys.executable, "-c", slow], stdout=subprocess.DEVNULL, stderr=log
    )
    try:
        wait_for(lambda: "slow" in known(tmp_path), 30, process=running)
        fast = run_exec(cfg, "fast", "print('val_loss=0.5'); print('val_loss=0.05', flush=True)")
        assert fast.returncode == 0, fast.stderr
        # the slow job's sidecar reads the shared history, sees the target reached, stops it
        assert running.wait(60) == 7, (tmp_path / "slow.err").read_text()
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
        log.close()
    status = statuses(tmp_path)
    assert status["fast"][0] == "Completed"
    assert status["slow"][0] == "Stopped"
    db = sqlite3.connect(tmp_path / "h.db")
    (decision,) = db.execute("SELECT decision FROM jobs WHERE name = 'slow'").fetchone()
    db.close()
    assert json.loads(decision)["rule"] == "completion:target_objective_value"
