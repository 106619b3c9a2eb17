"""Sidecars on several nodes sharing one PostgreSQL history, and a PostgreSQL outage mid-run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sidecar.demo import SWEEP, demo_config, free_port
from tests.conftest import PrivateServer
from tests.helpers import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one query, or [] while the server is unreachable (polled during an outage)."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as con:
            return list(con.execute(sql, params).fetchall())
    except psycopg.Error:
        return []


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def sidecar(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def stop_daemon(daemon: subprocess.Popen[bytes]) -> str:
    daemon.send_signal(signal.SIGTERM)
    _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err.decode()
    return err.decode()


class TestSeveralNodes:
    def test_three_nodes_stop_exactly_what_replay_stops_in_launch_order(
        self, tmp_path: Path, postgres_url: str
    ) -> None:
        """Three `sidecar run` processes ("nodes"), each tailing its own folder; trainers are
        launched one after another, alternating between them. Every node decides on the whole
        shared history, so the stopped jobs and epochs equal `replay` of the logs in launch order."""
        base = demo_config(tmp_path, 0).model_dump(mode="json", exclude_none=True)
        daemons: list[subprocess.Popen[bytes]] = []
        folders = []
        for n in range(3):
            folder = tmp_path / f"node{n}"
            (folder / "logs").mkdir(parents=True)
            (folder / "pids").mkdir()
            folders.append(folder)
            doc = json.loads(json.dumps(base))
            doc["sources"] = [{"path": str(folder / "logs" / "*.log"), "format": "plain"}]
            doc["stop"]["signal"] = {"pid_file": str(folder / "pids" / "{job}.pid")}
            doc["store"] = postgres_url
            doc["node"] = f"node-{n}"
            doc["log_level"] = "warning"
            cfg = write_config(tmp_path / f"node{n}.json", doc)
            daemons.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sidecar", "run", "-c", str(cfg)],
                    stderr=subprocess.PIPE,
                )
            )
        logs: list[Path] = []
        try:
            wait_for(
                lambda: bool(query(postgres_url, "SELECT 1 FROM tuning_jobs")),
                timeout=60.0,
                what="the shared store",
            )
            for seed, (job, lr) in enumerate(SWEEP[:7]):
                folder = folders[seed % 3]
                log = folder / "logs" / f"{job}.log"
                logs.append(log)
                with log.open("wb") as out:
                    subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "sidecar.demo.trainer",
                            *("--job", job, "--lr", str(lr), "--epochs", "8"),
                            *("--seed", str(seed), "--epoch-seconds", "0.05"),
                            *("--pid-file", str(folder / "pids" / f"{job}.pid")),
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        timeout=60,
                        check=False,
                    )
                # the next job is launched only once this one's every value is in the history
                printed = log.read_bytes().count(b"val_loss=")
                wait_for(
                    lambda j=job, p=printed: (
                        query(  # type: ignore[misc]
                            postgres_url,
                            "SELECT count(*) FROM metric_values WHERE job = %s AND metric = 'val_loss'",
                            j,
                        )
                        == [(p,)]
                    ),
                    timeout=60.0,
                    what=f"{job} applied",
                )
        finally:
            errors = [stop_daemon(d) for d in daemons]
        assert not any("Traceback" in e for e in errors), errors
        status = json.loads(sidecar("status", "--store", postgres_url, "--json").stdout)
        live = {j["job"]: j["stopped_at_epoch"] for j in status["tuning_jobs"][0]["jobs"]}
        orders = [
            j["job"] for j in sorted(status["tuning_jobs"][0]["jobs"], key=lambda j: j["order"])
        ]
        assert orders == [job for job, _ in SWEEP[:7]], "launch order is the order of first lines"
        cfg0 = tmp_path / "node0.json"
        offline_doc = json.loads(sidecar("replay", "-c", cfg0, "--json", *logs).stdout)
        offline = {j["job"]: j["stopped_at_epoch"] for j in offline_doc["jobs"]}
        assert live == offline
        stopped = [job for job, epoch in live.items() if epoch is not None]
        assert stopped, "the sweep has losers: some job must have been stopped"
        for job in stopped:  # really signalled, by the node tailing it: the trainer saw SIGTERM
            log = next(path for path in logs if path.stem == job)
            assert b"received SIGTERM" in log.read_bytes()
        offsets = query(postgres_url, "SELECT DISTINCT node FROM source_offsets ORDER BY node")
        assert offsets == [("node-0",), ("node-1",), ("node-2",)]


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


class TestOutage:
    @pytest.mark.parametrize("bound", [100_000, 5], ids=["buffered", "back-pressure"])
    def test_values_written_during_an_outage_are_stored_exactly_once(
        self, tmp_path: Path, private_postgres: PrivateServer, bound: int
    ) -> None:
        """PostgreSQL stops mid-run and comes back: the daemon keeps tailing (up to
        `max_buffered_values`, then it stops reading), says not-ready, and afterwards every
        line's value is stored once, at its own ordinal epoch (a line read twice would show as an
        extra epoch, a lost one as a missing epoch)."""
        (tmp_path / "logs").mkdir()
        port = free_port(0)
        doc = {
            "tuning_job": "outage",
            "objective": {"metric": "loss", "type": "Minimize"},
            "metric_definitions": [{"Name": "loss", "Regex": r"loss=([0-9.]+)"}],
            "early_stopping": {"type": "Off"},
            "sources": [{"path": str(tmp_path / "logs" / "*.log"), "format": "plain"}],
            "stop": {"backend": "none"},
            "store": private_postgres.url,
            "http": {"host": "127.0.0.1", "port": port},
            "idle_timeout_seconds": 0,
            "max_buffered_values": bound,
            "log_level": "warning",
        }
        cfg = write_config(tmp_path / "config.json", doc)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "run", "-c", str(cfg)], stderr=subprocess.PIPE
        )
        jobs = [f"job-{i}" for i in range(3)]
        written: dict[str, list[float]] = {job: [] for job in jobs}

        def write(rounds: int) -> None:
            for _ in range(rounds):
                for job in jobs:
                    value = round(1.0 / (len(written[job]) + 1) + jobs.index(job), 6)
                    written[job].append(value)
                    with (tmp_path / "logs" / f"{job}.log").open("a") as f:
                        f.write(f"step done loss={value}\n")

        def stored() -> dict[str, list[tuple[int, float]]]:
            rows = query(
                private_postgres.url,
                "SELECT job, epoch, value FROM metric_values ORDER BY job, epoch",
            )
            out: dict[str, list[tuple[int, float]]] = {job: [] for job in jobs}
            for job, epoch, value in rows:
                out[job].append((int(epoch), float(value)))
            return out

        def expected() -> dict[str, list[tuple[int, float]]]:
            return {job: list(enumerate(values, start=1)) for job, values in written.items()}

        try:
            wait_for(lambda: readyz(port) == 200, timeout=60.0, what="ready")
            write(20)
            wait_for(
                lambda: stored() == expected(), timeout=60.0, what="values before the outage stored"
            )

            private_postgres.stop()
            write(30)  # read during the outage: buffered, not lost
            wait_for(
                lambda: readyz(port) == 503, timeout=60.0, what="not ready while the store is down"
            )
            wait_for(
                lambda: metric(port, "early_stopping_store_buffered_values") > 0,
                timeout=60.0,
                what="values buffered",
            )
            if bound > 1000:
                wait_for(
                    lambda: metric(port, "early_stopping_log_lines_total") == 150,
                    timeout=60.0,
                    what="every line read during the outage",
                )
            else:  # past the bound no more is taken: at most one more file's chunk after it
                assert metric(port, "early_stopping_store_buffered_values") <= bound + 30
                assert metric(port, "early_stopping_log_lines_total") < 150

            private_postgres.start()
            write(10)
            wait_for(
                lambda: stored() == expected(),
                timeout=60.0,
                what="every value stored after reconnect",
            )
            wait_for(lambda: readyz(port) == 200, timeout=60.0, what="ready again")
            assert metric(port, "early_stopping_store_buffered_values") == 0
        finally:
            err = stop_daemon(daemon)
        assert "Traceback" not in err, err
        assert stored() == expected()
        assert sum(len(v) for v in written.values()) == 180
