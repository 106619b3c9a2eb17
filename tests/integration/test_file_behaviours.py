"""Tailing logs exactly once with the real daemon as a process: one test per file behaviour
(appending, partial lines, rotation, copytruncate, deletion, kill -9 restarts, container
formats, job ends), the store read back after each.

Writers append sequence-numbered lines `seq=1`, `seq=2`, ... The config has one metric `seq` and
no epoch regex, so epochs are ordinal: when every line is applied exactly once and in order, the
store holds exactly [(k, k) for k in 1..N]. A duplicate shows as an extra epoch, a loss as a gap,
a line applied out of order or before its end as a value at the wrong epoch.

Nothing sleeps to synchronise with the daemon: the tests poll the store with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    DaemonProcess,
    History,
    ThreadedDaemon,
    append,
    config_text,
    lines,
    load,
    seq,
    start_writer,
    wait_for,
)

Run = Callable[..., subprocess.CompletedProcess[str]]
MakeDaemon = Callable[..., DaemonProcess]

TS_Z = "2024-05-01T10:00:00.123456789Z"
TS_OFFSET = "2024-05-01T10:00:00.123456789+00:00"  # podman's conmon writes numeric offsets
SPLIT = 16 * 1024


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History(tmp_path / "h.db")


@pytest.fixture
def make_daemon(tmp_path: Path, write_config: Callable[..., Path]) -> Iterator[MakeDaemon]:
    """A not-yet-started `sidecar run` process on the tests' config (plus `extra` YAML)."""
    made: list[DaemonProcess] = []

    def make(extra: str = "", source: str = "") -> DaemonProcess:
        config = write_config(config_text(tmp_path, extra=extra, source=source))
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.cleanup()


@pytest.fixture
def writers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Writer processes started by a test; killed at teardown if still running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def finish(daemon: DaemonProcess) -> None:
    """Graceful shutdown (drains what was read); it must exit 0."""
    code = daemon.terminate()
    assert code == 0, daemon.output()


def started_count(daemon: DaemonProcess) -> int:
    """How many times the daemon logged `started` (the initial scan has read every file)."""
    return sum(1 for line in daemon.output(10**7).splitlines() if '"event": "started"' in line)


def wait_started(daemon: DaemonProcess, times: int) -> None:
    wait_for(
        lambda: started_count(daemon) >= times or not daemon.alive(),
        20,
        what="the daemon to start",
        describe=daemon.output,
    )
    assert daemon.alive(), daemon.output()


class TestAppending:
    """Lines appended to plain logs are applied once each, in order, whoever wrote them how."""

    def test_lines_appended_over_time(
        self, logs: Path, history: History, make_daemon: MakeDaemon
    ) -> None:
        """A file created after start and appended to in batches: every line once, in order."""
        daemon = make_daemon().start()
        job = logs / "job.log"
        last = 0
        for batch in (1, 9, 5, 15):
            append(job, lines(last + 1, last + batch))
            last += batch
            assert history.wait_values(last) == seq(last)
        finish(daemon)
        assert history.values() == seq(last)
        assert history.status() == "Running"

    def test_split_writes(self, logs: Path, history: History, make_daemon: MakeDaemon) -> None:
        """Lines written two bytes at a time, unbuffered: a partial line is never applied early
        (`seq=1` of `seq=11` would be a wrong value at the wrong epoch). At each checkpoint the
        end of line k and the start of line k+1 go in one write, so once line k is applied the
        daemon has certainly read a half-written line."""
        job = logs / "job.log"
        daemon = make_daemon().start()
        data = lines(1, 41)
        stops = {len(lines(1, k)) + 5: k for k in (10, 20, 30, 40)}  # after `seq=1` of k+1
        pos = 0
        with job.open("ab", buffering=0) as f:
            while pos < len(data):
                stop = min((s for s in stops if s > pos), default=None)
                if stop is None:
                    step = 2
                elif pos < stop - 6:  # the newline of line k is at stop - 6
                    step = min(2, stop - 6 - pos)
                else:
                    step = stop - pos
                f.write(data[pos : pos + step])
                pos += step
                if pos in stops:
                    assert history.wait_values(stops[pos]) == seq(stops[pos])
        assert history.wait_values(41) == seq(41)
        finish(daemon)
        assert history.values() == seq(41)

    def test_file_present_before_start_is_read_from_the_beginning(
        self, logs: Path, history: History, make_daemon: MakeDaemon, run_cli: Run, tmp_path: Path
    ) -> None:
        """History written before the daemon started matters to the rule: it is all read."""
        job = logs / "job.log"
        append(job, lines(1, 200))
        daemon = make_daemon().start()
        assert history.wait_values(200) == seq(200)
        append(job, lines(201, 210))
        assert history.wait_values(210) == seq(210)
        finish(daemon)
        result = run_cli("status", "--store", f"sqlite://{tmp_path}/h.db", "--json", "--values")
        assert result.returncode == 0, result.stderr
        (tuning_job,) = json.loads(result.stdout)["tuning_jobs"]
        (doc,) = tuning_job["jobs"]
        assert (doc["job"], doc["status"], doc["epochs"]) == ("job", "Running", 210)
        assert doc["values"]["seq"] == [[k, float(k)] for k in range(1, 211)]

    def test_several_jobs_at_once(
        self, logs: Path, history: History, make_daemon: MakeDaemon
    ) -> None:
        """Four files, appended to in turns: each job's lines once and in order; launch order
        is the order the files were first seen (sorted paths at start)."""
        names = ["d", "a", "c", "b"]
        for name in names:
            append(logs / f"{name}.log", lines(1, 1))
        daemon = make_daemon().start()
        last = 1
        for batch in (3, 7, 2):
            for name in names:
                append(logs / f"{name}.log", lines(last + 1, last + batch))
            last += batch
            for name in names:
                history.wait_values(last, name)
        finish(daemon)
        for name in names:
            assert history.values(name) == seq(last), name
        assert history.launch_order() == ["a", "b", "c", "d"]

    def test_log_directory_created_after_start(
        self, tmp_path: Path, history: History, make_daemon: MakeDaemon
    ) -> None:
        """The glob's directory may appear after the daemon started (it is watched when it does)."""
        shutil.rmtree(tmp_path / "logs", ignore_errors=True)
        daemon = make_daemon().start()
        wait_started(daemon, 1)
        (tmp_path / "logs").mkdir()
        append(tmp_path / "logs" / "job.log", lines(1, 5))
        assert history.wait_values(5) == seq(5)
        append(tmp_path / "logs" / "job.log", lines(6, 9))
        assert history.wait_values(9) == seq(9)
        finish(daemon)


class TestPartialLines:
    """A last line without its newline is not applied until the newline arrives (docs/design.md, "State and durability")."""

    def test_partial_last_line_waits_for_its_end(
        self, logs: Path, history: History, make_daemon: MakeDaemon
    ) -> None:
        """`seq=1` (of `seq=10`) on disk: lines 1..9 are applied, the offset stops before it."""
        job = logs / "job.log"
        daemon = make_daemon().start()
        wait_started(daemon, 1)  # else a kill -9 may come before `started` is logged
        complete = lines(1, 9)
        append(job, complete + b"seq=1")  # one write: read together with line 9
        assert history.wait_values(9) == seq(9)
        wait_for(lambda: history.offset(job) == (len(complete), {"format": "plain"}))
        assert history.values() == seq(9)
        append(job, b"0\n")
        assert history.wait_values(10) == seq(10)
        finish(daemon)
        assert history.values() == seq(10)

    def test_partial_last_line_across_kill9(
        self, logs: Path, history: History, make_daemon: MakeDaemon
    ) -> None:
        """kill -9 while a partial line is on disk; restart; complete it: counted once."""
        job = logs / "job.log"
        daemon = make_daemon().start()
        wait_started(daemon, 1)  # else a kill -9 may come before `started` is logged
        complete = lines(1, 9)
        append(job, complete + b"seq=1")
        history.wait_values(9)
        wait_for(lambda: history.offset(job) == (len(complete), {"format": "plain"}))
        daemon.kill9()
        daemon.start()
        wait_started(daemon, 2)  # the restarted daemon has read the file (still partial)
        assert history.values() == seq(9)
        append(job, b"0\n" + lines(11, 15))
        assert history.wait_values(15) == seq(15)
        daemon.kill9()
        append(job, b"seq=1")  # partial while the daemon is down
        daemon.start()
        wait_started(daemon, 3)
        append(job, b"6\n")
        assert history.wait_values(16) == seq(16)
        finish(daemon)
        assert history.values() == seq(16)


class TestRotation:
    """Rename rotation, copytruncate, delete and recreate: nothing lost, nothing twice (docs/design.md, "Reliability and safety")."""

    def test_rename_rotation(self, logs: Path, history: History, make_daemon: MakeDaemon) -> None:
        """job.log → job.log.1 and a new job.log; the writer finishes its lines in the old file
        first. The old file is drained before its successor; the rotated name, which the glob
        does not match, is never read again (not after a restart either)."""
        job = logs / "job.log"
        daemon = make_daemon().start()
        with job.open("ab", buffering=0) as old:
            old.write(lines(1, 20))
            history.wait_values(20)
            job.rename(logs / "job.log.1")
            old.write(lines(21, 25))  # still writing to the rotated file
        with job.open("ab", buffering=0) as new:
            new.write(lines(26, 40))
        assert history.wait_values(40) == seq(40)
        finish(daemon)
        assert history.values() == seq(40)
        daemon.start()
        append(job, lines(41, 45))
        assert history.wait_values(45) == seq(45)
        finish(daemon)
        assert history.values() == seq(45)

    def test_repeated_rotation(self, logs: Path, history: History, make_daemon: MakeDaemon) -> None:
        """logrotate-style (job.log.2 → .3, .1 → .2, job.log → .1) four times, the writer
        finishing each generation in the renamed file before opening the new one."""
        job = logs / "job.log"
        daemon = make_daemon().start()
        last = 0
        f = job.open("ab", buffering=0)
        try:
            for _ in range(4):
                f.write(lines(last + 1, last + 10))
                last += 10
                history.wait_values(last)
                for n in (2, 1):
                    if (logs / f"job.log.{n}").exists():
                        (logs / f"job.log.{n}").rename(logs / f"job.log.{n + 1}")
                job.rename(logs / "job.log.1")
                f.write(lines(last + 1, last + 3))
                last += 3
                f.close()
                f = job.open("ab", buffering=0)
            f.write(lines(last + 1, last + 5))
            last += 5
        finally:
            f.close()
        assert history.wait_values(last) == seq(last)
        finish(daemon)
        assert history.values() == seq(last)

    def test_copytruncate(self, logs: Path, history: History, make_daemon: MakeDaemon) -> None:
        """copy job.log to job.log.1, truncate job.log in place; the writer (O_APPEND) carries
        on at the new end. The shorter file is read again from its start."""
        job = logs / "job.log"
        daemon = make_daemon().start()
        with job.open("ab", buffering=0) as f:
            f.write(lines(1, 30))
            history.wait_values(30)
            shutil.copyfile(job, logs / "job.log.1")
            os.truncate(job, 0)
            f.write(lines(31, 33))  # shorter than what was read before the truncation
            assert history.wait_values(33) == seq(33)
            f.write(lines(34, 50))
            assert history.wait_values(50) == seq(50)
        finish(daemon)
        assert history.values() == seq(50)

    @pytest.mark.parametrize("olddir", [False, True], ids=["copy-beside", "copy-to-olddir"])
    def test_copytruncate_then_quick_regrowth(
        self, tmp_path: Path, logs: Path, history: History, make_daemon: MakeDaemon, olddir: bool
    ) -> None:
        """The writer refills the truncated file past the old offset at once, before the daemon
        looks: a changed fingerprint still means reading from the start, not from the old
        offset in the middle of new text. Also when the copy goes to another directory
        (logrotate's `olddir`), so that no file appears in the watched one."""
        job = logs / "job.log"
        archive = tmp_path / "archive" if olddir else logs
        archive.mkdir(exist_ok=True)
        daemon = make_daemon().start()
        with job.open("ab", buffering=0) as f:
            f.write(lines(1, 10))
            history.wait_values(10)
            shutil.copyfile(job, archive / "job.log.1")
            os.truncate(job, 0)
            f.write(lines(11, 40))  # one write, longer than lines 1..10 were
            history.wait_values(40, timeout=10)
        finish(daemon)
        assert history.values() == seq(40)

    def test_copytruncate_while_the_daemon_is_down(
        self, logs: Path, history: History, make_daemon: MakeDaemon
    ) -> None:
        """Truncated and refilled past the stored offset during a restart: the fingerprint tells
        it is new text, read from its start."""
        job = logs / "job.log"
        daemon = make_daemon().start()
        append(job, lines(1, 10))
        history.wait_values(10)
        daemon.kill9()
        shutil.copyfile(job, logs / "job.log.1")
        os.truncate(job, 0)
        append(job, lines(11, 60))
        daemon.start()
        assert history.wait_values(60) == seq(60)
        finish(daemon)
        assert history.values() == seq(60)

    def test_delete_and_recreate(
        self, logs: Path, history: History, make_daemon: MakeDaemon
    ) -> None:
        """job.log deleted and created again, three times: the new files continue the job."""
        job = logs / "job.log"
        daemon = make_daemon().start()
        last = 0
        for _ in range(3):
            append(job, lines(last + 1, last + 10))
            last += 10
            history.wait_values(last)
            job.unlink()
        append(job, lines(last + 1, last + 4))
        last += 4
        assert history.wait_values(last) == seq(last)
        finish(daemon)
        assert history.values() == seq(last)

    def test_delete_and_recreate_while_the_daemon_is_down(
        self, logs: Path, history: History, make_daemon: MakeDaemon
    ) -> None:
        """A new file at the same path, maybe with the deleted file's inode number (ext4 reuses
        them), is told apart by its fingerprint and read from its start."""
        job = logs / "job.log"
        daemon = make_daemon().start()
        append(job, lines(1, 10))
        history.wait_values(10)
        wait_for(lambda: history.caught_up(job))
        finish(daemon)
        job.unlink()
        append(job, lines(11, 40))
        daemon.start()
        assert history.wait_values(40) == seq(40)
        finish(daemon)
        assert history.values() == seq(40)


@pytest.mark.slow
class TestKillRestart:
    """kill -9 of the daemon at several points while writers keep writing: every line once."""

    def test_kill9_three_times_while_writing(
        self,
        logs: Path,
        history: History,
        make_daemon: MakeDaemon,
        writers: list[subprocess.Popen[bytes]],
    ) -> None:
        """Two writer processes; the daemon is killed after 40, 140 and 240 lines of job a were
        applied and restarted each time; in the end both jobs hold exactly 1..N."""
        n = 400
        a, b = logs / "a.log", logs / "b.log"
        daemon = make_daemon().start()
        writers.append(start_writer(a, 1, n, 0.008))
        writers.append(start_writer(b, 1, n, 0.005))
        for applied in (40, 140, 240):
            history.wait_values(applied, "a", timeout=30)
            daemon.kill9()
            daemon.start()
        for writer in writers:
            assert writer.wait(timeout=60) == 0
        history.wait_values(n, "a", timeout=30)
        history.wait_values(n, "b", timeout=30)
        wait_for(lambda: history.caught_up(a, b))
        finish(daemon)
        assert history.values("a") == seq(n)
        assert history.values("b") == seq(n)

    def test_kill9_during_the_initial_read(
        self, logs: Path, history: History, make_daemon: MakeDaemon
    ) -> None:
        """Killed as soon as it started on a large existing log, three times over."""
        job = logs / "job.log"
        append(job, lines(1, 50_000))
        daemon = make_daemon()
        for times in (1, 2, 3):
            daemon.start()
            wait_started(daemon, times)
            daemon.kill9()
        daemon.start()
        assert history.wait_values(50_000, timeout=60) == seq(50_000)
        finish(daemon)
        assert history.values() == seq(50_000)


def cri(text: str, stream: str = "stdout", tag: str = "F", ts: str = TS_Z) -> bytes:
    return f"{ts} {stream} {tag} {text}\n".encode()


def docker(text: str, stream: str = "stdout") -> bytes:
    doc = {"log": text, "stream": stream, "time": "2024-05-01T10:00:00.123456789Z"}
    return json.dumps(doc).encode() + b"\n"


class TestContainerFormats:
    """CRI and Docker json-file logs tailed live with `format: auto`, including a restart
    while a split line is pending (its chunks are committed with the offset)."""

    def test_cri_live(self, logs: Path, history: History, make_daemon: MakeDaemon) -> None:
        """P chunks joined per stream until F, stderr interleaved, a line over 16 KiB, both
        timestamp styles; a kill -9 after a committed P chunk loses nothing."""
        job = logs / "job.log"
        daemon = make_daemon(source=", format: auto").start()
        first = cri("seq=1")
        append(job, first[:25])  # not one complete line yet: the format waits for one
        append(job, first[25:])
        assert history.wait_values(1) == seq(1)
        append(job, cri("seq=", tag="P") + cri("warning: x", "stderr", ts=TS_OFFSET))
        append(job, cri("2", ts=TS_OFFSET) + cri("err part", "stderr", "P"))
        append(job, cri("seq=3") + cri(" end", "stderr"))
        long_line = "x" * 20_000 + " seq=4"
        append(job, cri(long_line[:SPLIT], tag="P") + cri("between", "stderr"))
        append(job, cri(long_line[SPLIT:]))
        assert history.wait_values(4) == seq(4)
        append(job, cri("seq=1", tag="P") + cri("pending err", "stderr", "P"))
        size = job.stat().st_size
        wait_for(lambda: (o := history.offset(job)) is not None and o[0] == size)
        _, state = history.offset(job) or (0, {})
        assert state["format"] == "cri" and set(state["pending"]) == {"stdout", "stderr"}
        daemon.kill9()
        append(job, cri("5", ts=TS_OFFSET) + cri("!", "stderr") + cri("seq=6"))
        daemon.start()
        # the pending `seq=1` joined with `5` after the restart: 15 at epoch 5
        assert history.wait_values(6) == [*seq(4), (5, 15.0), (6, 6.0)]
        finish(daemon)

    def test_docker_json_live(self, logs: Path, history: History, make_daemon: MakeDaemon) -> None:
        """Records without their final newline continue in the stream's next record, stderr
        interleaved; a kill -9 after a committed split record loses nothing."""
        job = logs / "job.log"
        daemon = make_daemon(source=", format: auto").start()
        first = docker("seq=1\n")
        append(job, first[:12])
        append(job, first[12:])
        assert history.wait_values(1) == seq(1)
        append(job, docker("seq=") + docker("warning: ", "stderr"))
        append(job, docker("2\n") + docker("x\n", "stderr") + docker("seq=3\n"))
        long_line = "y" * 40_000 + " seq=4\n"
        append(
            job, b"".join(docker(long_line[i : i + SPLIT]) for i in range(0, len(long_line), SPLIT))
        )
        assert history.wait_values(4) == seq(4)
        append(job, docker("seq=") + docker("pending err", "stderr"))
        size = job.stat().st_size
        wait_for(lambda: (o := history.offset(job)) is not None and o[0] == size)
        _, state = history.offset(job) or (0, {})
        assert state["format"] == "docker-json" and set(state["pending"]) == {"stdout", "stderr"}
        daemon.kill9()
        append(job, docker("5\n") + docker("\n", "stderr") + docker("seq=6\n"))
        daemon.start()
        assert history.wait_values(6) == seq(6)
        finish(daemon)
        assert history.values() == seq(6)


class TestJobLifecycle:
    """A job is Completed when its source ends: its file deleted, or idle past the timeout."""

    @pytest.mark.slow
    def test_completed_when_its_file_is_deleted(
        self, logs: Path, history: History, make_daemon: MakeDaemon
    ) -> None:
        """Deleted and not recreated within the rotate wait (~5 s): Completed."""
        job = logs / "job.log"
        daemon = make_daemon().start()
        append(job, lines(1, 5))
        history.wait_values(5)
        assert history.status() == "Running"
        job.unlink()
        history.wait_status("Completed", timeout=20)
        finish(daemon)
        assert history.values() == seq(5)

    def test_completed_when_idle_and_running_when_it_speaks_again(
        self, tmp_path: Path, logs: Path, history: History
    ) -> None:
        """idle_timeout_seconds: 1 — no growth for a second: Completed; a new line: Running."""
        config = load(config_text(tmp_path, extra="idle_timeout_seconds: 1\n"))
        job = logs / "job.log"
        with ThreadedDaemon(config):
            append(job, lines(1, 5))
            history.wait_values(5)
            history.wait_status("Completed", timeout=10)
            append(job, lines(6, 8))
            assert history.wait_values(8) == seq(8)
            history.wait_status("Running")
        assert history.values() == seq(8)
