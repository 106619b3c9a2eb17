"""Hostile input and long faults against a real daemon: no poison line, no hang, no unbounded
growth. Each test is a reproduction from the fault-injection campaign, with real files,
processes and PostgreSQL servers; what it checks is what a user then sees (values stored, the
daemon ready, the counters), never how long something took.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PrivateServer, skip_or_fail
from tests.helpers import PYTHON, events, named, sidecar_env, wait_for


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(port: int, name: str, labels: str = "") -> float:
    """One sample's value from /metrics (0 when absent)."""
    _, body = http_get(port, "/metrics")
    wanted = name + (f"{{{labels}}}" if labels else "")
    for line in body.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


class Daemon:
    """`sidecar run` as a real process, stdout and stderr in one file, its port known."""

    def __init__(self, tmp: Path, config: dict[str, Any], *, nofile: int | None = None) -> None:
        self.tmp = tmp
        self.log = tmp / "daemon.log"
        self.config = tmp / "config.json"
        self.config.write_text(json.dumps(config))
        self.nofile = nofile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        limit = self.nofile

        def limits() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "sidecar", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=sidecar_env(),
                preexec_fn=limits,  # noqa: PLW1509 (the test process starts no threads that fork)
            )
        started = len(named(self.log, "started")) if self.log.exists() else 0
        wait_for(
            lambda: len(named(self.log, "started")) > started or self.proc.poll() is not None,  # type: ignore[union-attr]
            60,
            what="the daemon to start",
            describe=lambda: self.log.read_text()[-2000:],
        )
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return self

    @property
    def port(self) -> int:
        return int(named(self.log, "started")[-1]["http"].rsplit(":", 1)[1])

    def terminate(self, timeout: float = 45.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def only_json_on_stderr(self) -> None:
        """Every line the daemon wrote is a JSON event (libraries' logging included)."""
        for line in self.log.read_text(errors="replace").splitlines():
            if line.strip():
                json.loads(line)


def base_config(tmp: Path, **extra: Any) -> dict[str, Any]:
    (tmp / "logs").mkdir(exist_ok=True)
    doc: dict[str, Any] = {
        "tuning_job": "t",
        "objective": {"metric": "loss", "type": "Minimize"},
        "metric_definitions": [{"Name": "loss", "Regex": r"loss=([-+0-9.eE]+|nan|inf)"}],
        "sources": [{"path": str(tmp / "logs" / "*.log"), "format": "plain"}],
        "stop": {"backend": "none"},
        "store": f"sqlite://{tmp / 'h.db'}",
        "http": {"host": "127.0.0.1", "port": 0},
        "idle_timeout_seconds": 0,
        "log_level": "info",
    }
    doc.update(extra)
    return doc


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for daemon in made:
        daemon.cleanup()


def sql(url: str, query: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite://"):
        import sqlite3

        con = sqlite3.connect(url.removeprefix("sqlite://"), timeout=10)
        try:
            return con.execute(query).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            return conn.execute(query).fetchall()
    except psycopg.Error:
        return []


class TestPoisonLines:
    @pytest.mark.parametrize("kind", ["sqlite", "postgres"])
    def test_an_epoch_no_store_can_hold_is_counted_and_writes_go_on(
        self, tmp_path: Path, daemons: list[Daemon], kind: str, request: pytest.FixtureRequest
    ) -> None:
        """`epoch=99999999999999999999` (and JSON `1e300`) stopped every store write for good:
        now each is a counted `bad_epoch`, and the lines after it are stored."""
        store = f"sqlite://{tmp_path / 'h.db'}"
        if kind == "postgres":
            store = request.getfixturevalue("postgres_url")
        config = base_config(
            tmp_path,
            store=store,
            epoch={"regex": r"epoch=(\d+)"},
            metric_definitions=[
                {"Name": "loss", "Regex": r"loss=([-+0-9.eE]+)"},
                {"Name": "{key}", "kind": "jsonl"},
            ],
        )
        daemon = Daemon(tmp_path, config).start()
        daemons.append(daemon)
        (tmp_path / "logs" / "j.log").write_text(
            "epoch=99999999999999999999 loss=0.1\n"
            '{"epoch": 1e300, "loss": 0.2}\n'
            "epoch=1 loss=0.3\nepoch=2 loss=0.25\n"
        )
        rows = wait_for(
            lambda: sql(store, "SELECT epoch, value FROM metric_values ORDER BY epoch"),
            30,
            what="the good lines stored",
        )
        assert [(int(e), float(v)) for e, v in rows] == [(1, 0.3), (2, 0.25)]
        assert metric(daemon.port, "early_stopping_parse_errors_total", 'reason="bad_epoch"') == 2
        assert http_get(daemon.port, "/readyz")[0] == 200

    def test_replay_counts_them_without_a_traceback(self, run_cli: Any, tmp_path: Path) -> None:
        log = tmp_path / "j.log"
        log.write_text("epoch=99999999999999999999 loss=0.1\nepoch=1 loss=0.3\n")
        config = tmp_path / "c.yaml"
        config.write_text(
            "objective: {metric: loss}\n"
            "metric_definitions: [{Name: loss, Regex: 'loss=([0-9.]+)'}]\n"
            "epoch: {regex: 'epoch=(\\d+)'}\n"
        )
        result = run_cli("replay", "-c", config, log)
        assert result.returncode == 0, result.stderr
        assert "skipped: bad_epoch 1" in result.stdout
        assert "Traceback" not in result.stderr


class TestJobRegexTimeout:
    def test_a_path_the_job_regex_cannot_match_in_time_is_skipped_not_fatal(
        self, tmp_path: Path, daemons: list[Daemon]
    ) -> None:
        """`(?P<job>(a|aa)+)\\.log$` on `aaaa…a!.log` ran past its timeout and killed the
        tailer: now that file is skipped and counted, the others (and files that appear later)
        are read, and the daemon stays ready."""
        config = base_config(
            tmp_path,
            sources=[
                {
                    "path": str(tmp_path / "logs" / "*.log"),
                    "job_regex": r"(?P<job>(a|aa)+|b+)\.log$",
                }
            ],
        )
        (tmp_path / "logs" / ("a" * 60 + "!.log")).write_text("loss=1\n")
        (tmp_path / "logs" / "bb.log").write_text("loss=0.5\n")
        daemon = Daemon(tmp_path, config).start()
        daemons.append(daemon)
        store = f"sqlite://{tmp_path / 'h.db'}"
        wait_for(lambda: sql(store, "SELECT job FROM metric_values WHERE job = 'bb'"), 30)
        skipped = metric(
            daemon.port, "early_stopping_files_skipped_total", 'reason="job_regex_timeout"'
        )
        assert skipped == 1
        (tmp_path / "logs" / "bbb.log").write_text("loss=0.4\n")
        wait_for(lambda: sql(store, "SELECT job FROM metric_values WHERE job = 'bbb'"), 30)
        assert http_get(daemon.port, "/readyz")[0] == 200
        assert len(named(daemon.log, "file_skipped")) == 1  # said once, not at every scan


@pytest.mark.slow
@pytest.mark.postgres
class TestStoreOutage:
    def outage_config(self, tmp: Path, server: PrivateServer, **extra: Any) -> dict[str, Any]:
        return base_config(
            tmp,
            store=server.url,
            epoch={"regex": r"epoch=(\d+)"},
            early_stopping={"min_jobs": 2, "start_epoch": 1},
            **extra,
        )

    def test_sigterm_with_the_write_buffer_full_still_shuts_down(
        self, tmp_path: Path, daemons: list[Daemon], private_postgres: PrivateServer
    ) -> None:
        """An outage longer than `max_buffered_values` allows: reading stops (back-pressure),
        and SIGTERM still ends the daemon within its shutdown timeout (it used to loop forever
        putting its end marker into the full queue)."""
        daemon = Daemon(
            tmp_path, self.outage_config(tmp_path, private_postgres, max_buffered_values=5)
        ).start()
        daemons.append(daemon)
        private_postgres.stop()
        for i in range(40):
            (tmp_path / "logs" / f"j{i}.log").write_text(
                "".join(f"epoch={e} loss={1 / e}\n" for e in range(1, 30))
            )
        wait_for(
            lambda: metric(daemon.port, "early_stopping_store_buffered_values") >= 5,
            60,
            what="the write buffer to fill",
        )
        code = daemon.terminate(timeout=60)
        assert code == 0, daemon.log.read_text()[-2000:]
        assert named(daemon.log, "stopped")
        daemon.only_json_on_stderr()

    def test_decisions_scrapes_and_registrations_go_on_while_the_store_is_down(
        self, tmp_path: Path, daemons: list[Daemon], private_postgres: PrivateServer
    ) -> None:
        """PostgreSQL goes away mid-sweep. A new job's first line is registered from memory (a
        provisional launch order), the loser is stopped without waiting for the store, every
        scrape answers; when the store is back everything read is written and the new job has
        its order from the store."""
        daemon = Daemon(tmp_path, self.outage_config(tmp_path, private_postgres)).start()
        daemons.append(daemon)
        logs = tmp_path / "logs"
        for job, scale in (("a", 1.0), ("b", 1.1)):
            (logs / f"{job}.log").write_text(
                "".join(f"epoch={e} loss={scale / e:.4f}\n" for e in range(1, 6))
            )
        wait_for(
            lambda: len(sql(private_postgres.url, "SELECT * FROM metric_values")) == 10,
            60,
            what="the first jobs stored",
        )
        private_postgres.stop()
        (logs / "loser.log").write_text("epoch=1 loss=9.0\nepoch=2 loss=8.0\n")
        decision = wait_for(
            lambda: named(daemon.log, "stop_decision"), 60, what="the loser's decision"
        )
        assert decision[0]["job"] == "loser" and decision[0]["epoch"] == 1
        registered = [e for e in named(daemon.log, "job_registered") if e["job"] == "loser"]
        assert registered and registered[0].get("provisional_order") is True
        for _ in range(5):  # the scrape lock is never held across store IO
            status, body = http_get(daemon.port, "/metrics", timeout=10)
            assert status == 200 and "early_stopping_jobs" in body
        assert http_get(daemon.port, "/readyz")[0] == 503
        private_postgres.start()
        wait_for(
            lambda: (
                sql(
                    private_postgres.url,
                    "SELECT status, stopped_at_epoch FROM jobs WHERE name = 'loser'",
                )
                == [("Stopped", 1)]
            ),
            60,
            what="the loser stored as stopped once the store is back",
        )
        orders = dict(sql(private_postgres.url, "SELECT name, launch_order FROM jobs"))
        assert orders["loser"] > orders["b"] > orders["a"]
        wait_for(lambda: http_get(daemon.port, "/readyz")[0] == 200, 60, what="ready again")
        assert daemon.terminate() == 0
        daemon.only_json_on_stderr()


class TestSymlinkLoop:
    def test_a_symlink_loop_under_a_double_star_glob_neither_hangs_nor_blinds(
        self, tmp_path: Path, daemons: list[Daemon]
    ) -> None:
        """`ln -s . logs/l1` under `logs/**/*.log` made the scan endless: no new file read,
        SIGTERM hung, a restart never ready. Now each folder is followed once."""
        logs = tmp_path / "logs"
        logs.mkdir()
        (logs / "l1").symlink_to(".")
        (logs / "sub").mkdir()
        (logs / "sub" / "up").symlink_to("..")
        config = base_config(tmp_path, sources=[{"path": str(logs / "**" / "*.log")}])
        daemon = Daemon(tmp_path, config).start()
        daemons.append(daemon)
        assert http_get(daemon.port, "/readyz")[0] == 200
        (logs / "sub" / "job.log").write_text("loss=0.5\n")
        store = f"sqlite://{tmp_path / 'h.db'}"
        wait_for(lambda: sql(store, "SELECT name FROM jobs"), 30, what="the new file read")
        assert sql(store, "SELECT name FROM jobs") == [("job",)]  # once, not once per path
        assert daemon.terminate() == 0
        daemon.start()
        wait_for(lambda: http_get(daemon.port, "/readyz")[0] == 200, 30, what="ready again")
        loops = metric(daemon.port, "early_stopping_files_skipped_total", 'reason="directory_loop"')
        assert loops >= 1


class TestUnboundedGrowth:
    def test_ever_new_json_keys_are_bounded_in_the_store_and_in_metrics(
        self, tmp_path: Path, daemons: list[Daemon]
    ) -> None:
        """A `{key}` definition over lines of 500 new keys each took /metrics to 14.7 MB: now
        a job keeps at most `max_metrics_per_job` names and /metrics at most
        `max_metric_series` label values per family, the rest counted."""
        config = base_config(
            tmp_path,
            metric_definitions=[{"Name": "{key}", "kind": "jsonl"}],
            max_metrics_per_job=300,
            max_metric_series=200,
        )
        daemon = Daemon(tmp_path, config).start()
        daemons.append(daemon)
        lines = []
        for n in range(40):
            doc = {"epoch": n + 1, "loss": 1.0 / (n + 1)}
            doc.update({f"k{n}_{i}": float(i) for i in range(500)})
            lines.append(json.dumps(doc))
        (tmp_path / "logs" / "j.log").write_text("\n".join(lines) + "\n")
        port = daemon.port
        wait_for(
            lambda: (
                metric(port, "early_stopping_parse_errors_total", 'reason="too_many_metrics"') > 0
            ),
            60,
            what="names past the bound counted",
        )
        store = f"sqlite://{tmp_path / 'h.db'}"
        wait_for(
            lambda: (
                sql(store, "SELECT count(*) FROM metric_values WHERE metric = 'loss'") == [(40,)]
            ),
            60,
            what="the objective kept on every line",
        )
        names = sql(store, "SELECT count(DISTINCT metric) FROM metric_values")[0][0]
        assert names <= 300
        _, body = http_get(port, "/metrics")
        series = [
            line
            for line in body.splitlines()
            if line.startswith("early_stopping_metric_values_total{")
        ]
        assert len(series) <= 201  # 200 names and `other`
        assert metric(port, "early_stopping_metric_series_folded_total") > 0
        assert len(body) < 200_000

    @pytest.mark.slow
    def test_two_thousand_files_under_a_1024_descriptor_limit_are_all_read(
        self, tmp_path: Path, daemons: list[Daemon]
    ) -> None:
        """At nofile 1024 with 2,000 files only 1,014 jobs were ever read (36,492 open_failed
        lines): now files read to their end give their descriptor back, every job is read, and
        nothing failed to open."""
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 1024:
            skip_or_fail(f"the hard descriptor limit is {hard}, below 1024")
        logs = tmp_path / "logs"
        logs.mkdir()
        for i in range(2000):
            (logs / f"j{i:04d}.log").write_text(f"loss={1 + i / 10000}\n")
        daemon = Daemon(tmp_path, base_config(tmp_path), nofile=1024).start()
        daemons.append(daemon)
        store = f"sqlite://{tmp_path / 'h.db'}"
        wait_for(
            lambda: sql(store, "SELECT count(DISTINCT job) FROM metric_values") == [(2000,)],
            120,
            what="every job read",
            describe=lambda: sql(store, "SELECT count(DISTINCT job) FROM metric_values"),
        )
        port = daemon.port
        assert metric(port, "early_stopping_open_failures_total") == 0
        assert metric(port, "early_stopping_open_files") <= 1024
        assert http_get(port, "/readyz")[0] == 200
        with (logs / "j0000.log").open("a") as f:  # a file whose descriptor was given back
            f.write("loss=0.9\n")
        wait_for(
            lambda: sql(store, "SELECT count(*) FROM metric_values WHERE job = 'j0000'") == [(2,)],
            30,
            what="a closed file reopened when it grows",
        )
        assert not named(daemon.log, "open_failed")


class TestCountedInRun:
    def test_cut_lines_and_malformed_records_are_counted(
        self, tmp_path: Path, daemons: list[Daemon]
    ) -> None:
        """The docs said `run` counts lines cut at `max_line_bytes` and malformed CRI/Docker
        records; nothing did. A CRI `P` line that never gets its `F` is cut and handed on."""
        config = base_config(
            tmp_path,
            sources=[{"path": str(tmp_path / "logs" / "*.log"), "format": "cri"}],
            max_line_bytes=1024,
        )
        daemon = Daemon(tmp_path, config).start()
        daemons.append(daemon)
        ts = "2026-12-01T10:00:00.000000000Z"
        records = [
            f"{ts} stdout F loss=0.5",
            "this is not a CRI record",
            f"{ts} stdout F " + "x" * 5000,
            *[f"{ts} stdout P " + "y" * 600 for _ in range(20)],  # never gets its F
            f"{ts} stderr F loss=0.4",
        ]
        (tmp_path / "logs" / "c.log").write_text("\n".join(records) + "\n")
        port = daemon.port
        wait_for(
            lambda: metric(port, "early_stopping_parse_errors_total", 'reason="bad_record"') == 1,
            30,
            what="the malformed record counted",
        )
        cut = metric(port, "early_stopping_parse_errors_total", 'reason="line_too_long"')
        assert cut == 2  # the long F line, and the endless P line cut once
        offsets = sql(f"sqlite://{tmp_path / 'h.db'}", "SELECT state FROM source_offsets")
        assert all(len(state) < 4096 for (state,) in offsets)  # no megabyte partial kept


class TestRewrittenWhileDown:
    def test_a_file_rewritten_in_place_while_the_daemon_was_down_is_a_new_run(
        self, tmp_path: Path, daemons: list[Daemon]
    ) -> None:
        """Same inode (`>`), same first KiB (a banner), new content as long as the old offset:
        the new run's first epochs were never read and its series mixed two runs. Now the
        bytes before the stored offset are checked: the new run is read from its start, as a
        new attempt of the job, and the old run's history stays as it was."""
        config = base_config(tmp_path, epoch={"regex": r"epoch=(\d+)"})
        banner = "#" * 1100 + "\n"
        log = tmp_path / "logs" / "job.log"
        log.write_text(banner + "".join(f"epoch={e} loss=1.{e:03d}\n" for e in range(1, 51)))
        daemon = Daemon(tmp_path, config).start()
        daemons.append(daemon)
        store = f"sqlite://{tmp_path / 'h.db'}"
        wait_for(
            lambda: sql(store, "SELECT count(*) FROM metric_values WHERE job = 'job'") == [(50,)],
            30,
        )
        assert daemon.terminate() == 0
        inode = log.stat().st_ino
        with log.open("r+") as f:
            f.truncate(0)
            f.write(banner + "".join(f"epoch={e} loss=2.{e:03d}\n" for e in range(1, 61)))
        assert log.stat().st_ino == inode
        daemon.start()
        wait_for(
            lambda: sql(store, "SELECT count(*) FROM metric_values WHERE job = 'job~2'") == [(60,)],
            30,
            what="the new run read from its start",
            describe=lambda: sql(store, "SELECT job, count(*) FROM metric_values GROUP BY job"),
        )
        old = sql(store, "SELECT epoch, value FROM metric_values WHERE job = 'job' ORDER BY epoch")
        assert [(int(e), round(v, 3)) for e, v in old] == [(e, 1 + e / 1000) for e in range(1, 51)]
        assert any(e.get("event") == "file_rewritten" for e in events(daemon.log))
