"""Live runs: real trainer processes beside `sidecar run`; the daemon stops what `replay` stops."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.demo import SWEEP, demo_config
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def stored_epochs(db: Path, job: str) -> int:
    if not db.exists():
        return -1
    con = sqlite3.connect(db)
    try:
        row = con.execute(
            "SELECT COUNT(*) FROM metric_values WHERE job = ? AND metric = 'val_loss'", (job,)
        ).fetchone()
    except sqlite3.OperationalError:
        return -1
    finally:
        con.close()
    return int(row[0])


def logged_epochs(log: Path) -> int:
    return log.read_bytes().count(b"val_loss=")


def write_config(tmp_path: Path) -> Path:
    config = demo_config(tmp_path, 0)
    doc = config.model_dump(mode="json", by_alias=False, exclude_none=True)
    doc["log_level"] = "warning"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


class TestLiveMatchesReplay:
    def test_daemon_stops_exactly_the_jobs_replay_stops(self, tmp_path: Path) -> None:
        """Trainers run one after another; `run` stops the same jobs at the same epochs as `replay`."""
        (tmp_path / "logs").mkdir()
        (tmp_path / "pids").mkdir()
        cfg = write_config(tmp_path)
        db = tmp_path / "history.db"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "run", "-c", str(cfg)], stderr=subprocess.PIPE
        )
        try:
            wait_for(db.exists, what="the store")
            for seed, (job, lr) in enumerate(SWEEP[:6]):
                log = tmp_path / "logs" / f"{job}.log"
                with log.open("wb") as out:
                    trainer = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "sidecar.demo.trainer",
                            "--job",
                            job,
                            "--lr",
                            str(lr),
                            "--epochs",
                            "8",
                            "--seed",
                            str(seed),
                            "--epoch-seconds",
                            "0.05",
                            "--pid-file",
                            str(tmp_path / "pids" / f"{job}.pid"),
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                    trainer.wait(timeout=60)
                # the next job starts only when the daemon has applied every line of this one
                wait_for(
                    lambda j=job, f=log: stored_epochs(db, j) == logged_epochs(f),  # type: ignore[misc]
                    what=f"{job} applied",
                )
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err.decode()
        status = subprocess.run(
            [sys.executable, "-m", "sidecar", "status", "--store", f"sqlite://{db}", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        live = {
            j["job"]: j["stopped_at_epoch"]
            for j in json.loads(status.stdout)["tuning_jobs"][0]["jobs"]
        }
        logs = [str(tmp_path / "logs" / f"{job}.log") for job, _ in SWEEP[:6]]
        replayed = subprocess.run(
            [sys.executable, "-m", "sidecar", "replay", "-c", str(cfg), "--json", *logs],
            capture_output=True,
            text=True,
            check=True,
        )
        offline = {j["job"]: j["stopped_at_epoch"] for j in json.loads(replayed.stdout)["jobs"]}
        assert live == offline
        stopped = [job for job, epoch in live.items() if epoch is not None]
        assert stopped, "the sweep has losers: some job must have been stopped"
        for job in stopped:  # really signalled: the trainer saw SIGTERM
            assert b"received SIGTERM" in (tmp_path / "logs" / f"{job}.log").read_bytes()


class TestDemo:
    def test_demo_runs_the_sweep_and_summarises(self, tmp_path: Path) -> None:
        """`sidecar demo` starts real trainers, stops the losers by signal and prints a summary."""
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sidecar",
                "demo",
                "--dir",
                str(tmp_path),
                "--port",
                "0",
                "--epoch-seconds",
                "0.05",
            ],
            input="\n",  # the sweep over, Enter ends the page's serving
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "live page at http://127.0.0.1:" in out
        assert "until you press Enter" in out
        assert "JOB" in out and "EPOCHS SAVED" in out
        summary = [line for line in out.splitlines() if "jobs stopped early" in line]
        assert summary and not summary[0].startswith("0 of")
        stopped = [
            line.split()[1] for line in out.splitlines() if line.strip().startswith("STOPPED")
        ]
        for job in stopped:
            assert b"received SIGTERM" in (tmp_path / "logs" / f"{job}.log").read_bytes()
        assert "lr-0.5000" in stopped  # the diverging job is always stopped
