"""Helpers shared by the tests: polling with a deadline, the daemon as a real process, the store.

Nothing here sleeps to synchronise with the daemon: `wait_for` polls a condition (what the store
holds) until it is true or a deadline passes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from sidecar.config import Config, load_config
from sidecar.daemon import Daemon

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

JOB_STATUSES = ("Running", "Completed", "Stopped", "Failed")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 15.0,
    *,
    what: str = "condition",
    interval: float = 0.02,
    describe: Callable[[], object] | None = None,
    process: subprocess.Popen[Any] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes (fail).

    The one way the tests wait: never a bare sleep. With `process`, fail at once when it has
    exited (it will not make the condition true any more)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"the process exited ({process.returncode}) while waiting for {what}"
            )
        if time.monotonic() >= deadline:
            detail = f"; {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)  # the polling interval; the deadline bounds the wait


def at_once(count: int, action: Callable[[], T]) -> tuple[list[T], list[BaseException]]:
    """`action` in `count` threads released together by a barrier: what they returned, and what
    they raised (a test asserts there is nothing)."""
    start = threading.Barrier(count)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            results.append(action())
        except BaseException as exc:  # collected for the test to assert on
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def write_curve_logs(folder: Path, curves: Mapping[str, Sequence[float]]) -> list[str]:
    """One log per job, `epoch E val_loss=V` a line, in the order given: the paths."""
    paths = []
    for job, values in curves.items():
        path = folder / f"{job}.log"
        path.write_text("".join(f"epoch {e} val_loss={v}\n" for e, v in enumerate(values, 1)))
        paths.append(str(path))
    return paths


def replay_stops(config: Path, logs: Sequence[str | Path]) -> dict[str, int]:
    """`sidecar replay --json` of `logs` as a user runs it: each job it stops, and the epoch."""
    replayed = subprocess.run(
        [sys.executable, "-m", "sidecar", "replay", "-c", str(config), "--json", *map(str, logs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        j["job"]: j["decision"]["epoch"]
        for j in json.loads(replayed.stdout)["jobs"]
        if j["status"] == "Stopped"
    }


def seq(last: int, first: int = 1) -> list[tuple[int, float]]:
    """What the store holds when lines `seq=first..last` were each applied once, in order."""
    return [(k, float(k)) for k in range(first, last + 1)]


def lines(first: int, last: int) -> bytes:
    """`seq=first\\n ... seq=last\\n`."""
    return b"".join(f"seq={k}\n".encode() for k in range(first, last + 1))


def append(path: Path, data: bytes) -> None:
    """Append and close, as a process writing one line at a time to a log does."""
    with path.open("ab") as f:
        f.write(data)


def config_text(tmp: Path, *, extra: str = "", source: str = "") -> str:
    """The tests' config: one metric `seq` with ordinal epochs, nothing stopped."""
    return (
        "tuning_job: t\n"
        "objective: {metric: seq}\n"
        "metric_definitions:\n"
        "  - {Name: seq, Regex: 'seq=(\\d+)'}\n"
        "early_stopping: {type: Off}\n"
        "stop: {backend: none}\n"
        "http: {host: 127.0.0.1, port: 0}\n"
        f"store: 'sqlite://{tmp}/h.db'\n"
        f"sources: [{{path: '{tmp}/logs/*.log'{source}}}]\n"
        "node: test-node\n"
        "log_level: debug\n" + extra
    )


def load(text: str) -> Config:
    return load_config(text, env={})


class History:
    """Reads the daemon's SQLite store directly (a fresh connection per query)."""

    def __init__(self, db: Path, tuning_job: str = "t") -> None:
        self.db = db
        self.tuning_job = tuning_job

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        try:
            con = sqlite3.connect(self.db, timeout=10)
            try:
                return con.execute(sql, args).fetchall()
            finally:
                con.close()
        except sqlite3.OperationalError:  # tables not created yet
            return []

    def values(self, job: str = "job", metric: str = "seq") -> list[tuple[int, float]]:
        rows = self._query(
            "SELECT epoch, value FROM metric_values WHERE tuning_job = ? AND job = ?"
            " AND metric = ? ORDER BY epoch",
            (self.tuning_job, job, metric),
        )
        return [(int(e), float(v)) for e, v in rows]

    def status(self, job: str = "job") -> str | None:
        rows = self._query(
            "SELECT status FROM jobs WHERE tuning_job = ? AND name = ?", (self.tuning_job, job)
        )
        return str(rows[0][0]) if rows else None

    def launch_order(self) -> list[str]:
        rows = self._query(
            "SELECT name FROM jobs WHERE tuning_job = ? ORDER BY launch_order", (self.tuning_job,)
        )
        return [str(name) for (name,) in rows]

    def offset(self, path: Path) -> tuple[int, dict[str, Any]] | None:
        """The committed offset and state of the file now at `path` (by device and inode)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        rows = self._query(
            "SELECT byte_offset, state FROM source_offsets WHERE file_key = ?",
            (f"{st.st_dev}:{st.st_ino}",),
        )
        if not rows:
            return None
        state = json.loads(rows[0][1])
        state.pop("tail", None)  # the fingerprint of the bytes before the offset (its own tests)
        return int(rows[0][0]), state

    def caught_up(self, *paths: Path) -> bool:
        """Every file's committed offset is its size (each ends with a complete line)."""
        for path in paths:
            found = self.offset(path)
            if found is None or found[0] != path.stat().st_size:
                return False
        return True

    def wait_values(
        self, count: int, job: str = "job", timeout: float = 15.0
    ) -> list[tuple[int, float]]:
        """Wait until the job has at least `count` values; return them."""
        return wait_for(
            lambda: (v := self.values(job)) and len(v) >= count and v,
            timeout,
            what=f"{count} values of job {job!r}",
            describe=lambda: f"have {len(v := self.values(job))} values, the last: {v[-12:]}",
        )

    def wait_status(self, status: str, job: str = "job", timeout: float = 15.0) -> None:
        wait_for(
            lambda: self.status(job) == status,
            timeout,
            what=f"job {job!r} to be {status}",
            describe=lambda: f"status is {self.status(job)!r}",
        )


class DaemonProcess:
    """`python -m sidecar run -c CFG` as a real process, so that it can be killed with SIGKILL."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> DaemonProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        self._log_file = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "run", "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        return self

    def _closed(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._closed()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the staged shutdown; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._closed()
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self, last: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-last:]
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._closed()


class ThreadedDaemon:
    """`sidecar.app.Daemon` run in this process, on a thread; stopped with `should_exit`."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        self.daemon = Daemon(config, **kwargs)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="daemon-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.daemon.serve(install_signals=False)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> ThreadedDaemon:
        self._thread.start()
        wait_for(
            lambda: self.daemon.started.is_set() or not self._thread.is_alive(),
            20,
            what="the daemon to start",
        )
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.should_exit.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "daemon did not shut down"
        if self.error is not None and exc[0] is None:
            raise self.error


WRITER_SCRIPT = r"""
import sys, time
path, first, last, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
with open(path, "ab", buffering=0) as f:
    for k in range(first, last + 1):
        line = b"seq=%d\n" % k
        if k % 3 == 0:  # every third line in two writes: a partial line is on disk for a while
            f.write(line[:5])
            time.sleep(pause / 2)
            f.write(line[5:])
        else:
            f.write(line)
        time.sleep(pause)  # pacing only: the writer never waits for the daemon
"""


def start_writer(path: Path, first: int, last: int, pause: float) -> subprocess.Popen[bytes]:
    """A separate process appending `seq=first..last` at its own pace, unbuffered."""
    return subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(path), str(first), str(last), str(pause)],
        stdin=subprocess.DEVNULL,
    )


# a daemon's events and the status it leaves -------------------------------------------------
PYTHON = sys.executable


def sidecar_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}


def events(log: Path) -> list[dict[str, Any]]:
    """The JSON events a daemon wrote (its stdout and stderr share the file)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def named(log: Path, event: str) -> list[dict[str, Any]]:
    return [e for e in events(log) if e.get("event") == event]


def status(config: Path) -> dict[str, dict[str, Any]]:
    """`sidecar status -c CONFIG --json`: the config's tuning job's jobs by name."""
    result = subprocess.run(
        [PYTHON, "-m", "sidecar", "status", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        env=sidecar_env(),
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        return {}
    doc = json.loads(result.stdout)
    return {j["job"]: j for tj in doc["tuning_jobs"] for j in tj["jobs"]}
