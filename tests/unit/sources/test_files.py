"""The file tailer in-process: stepped by hand on a fake clock where the behaviour needs no
separate process (rotation, copytruncate, deletion, truncation seen by a wake-up read), and on
its own thread with polling alone.

Writers append sequence-numbered lines `seq=1`, `seq=2`, ...; what the tailer hands on is
compared with what was written, in order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sidecar.config import SourceConfig
from sidecar.model import Chunk, JobEnded, JobStatus
from sidecar.sources.files import ROTATE_WAIT_SECONDS, FileTailer
from tests.helpers import append, lines, wait_for


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


def collect(items: list[Chunk | JobEnded]) -> list[bytes]:
    return [line for item in list(items) if isinstance(item, Chunk) for line in item.lines]


class Stepped:
    """A FileTailer on `logs/*.log` without its thread, stepped by hand on a fake clock."""

    def __init__(self, logs: Path) -> None:
        self.now = 100.0
        self.items: list[Chunk | JobEnded] = []
        self.tailer = FileTailer(
            [SourceConfig(path=f"{logs}/*.log")],
            node="n",
            tuning_job="t",
            max_line_bytes=1 << 20,
            offsets={},
            emit=self.items.append,
            watch=False,
            clock=lambda: self.now,
        )

    def scan(self, advance: float = 0.0) -> None:
        """The reconcile, `advance` seconds after the last one."""
        self.now += advance
        self.tailer.scan()

    def event(self, path: Path) -> None:
        """A `modified` event for one path."""
        self.tailer.waker.wake(str(path))
        self.tailer.step()

    def ended(self) -> list[JobEnded]:
        return [i for i in self.items if isinstance(i, JobEnded)]


@pytest.fixture
def stepped(logs: Path) -> Iterator[Stepped]:
    made = Stepped(logs)
    yield made
    made.tailer.stop()


class TestSteppedFileBehaviours:
    """Each file behaviour once, deterministically: nothing lost, nothing twice, in order."""

    def test_rename_rotation_drains_the_old_file_before_the_new_one(
        self, logs: Path, stepped: Stepped
    ) -> None:
        job = logs / "job.log"
        append(job, lines(1, 3))
        stepped.scan()
        job.rename(logs / "job.log.1")
        append(logs / "job.log.1", lines(4, 5))  # the writer finishes in the renamed file
        append(job, lines(6, 7))  # then reopens its log
        stepped.event(job)  # the event names only the new file
        stepped.scan()
        assert collect(stepped.items) == lines(1, 7).splitlines()
        stepped.scan(ROTATE_WAIT_SECONDS)  # the renamed file is given up, the new one is kept
        assert [t.path for t in stepped.tailer.files.values()] == [str(job)]
        assert stepped.ended() == []  # the job goes on in its new file

    def test_copytruncate_reads_the_file_again_from_its_start(
        self, logs: Path, stepped: Stepped
    ) -> None:
        job = logs / "job.log"
        append(job, lines(1, 4))
        stepped.scan()
        (logs / "job.log.1").write_bytes(job.read_bytes())
        os.truncate(job, 0)
        append(job, lines(5, 6))
        stepped.scan()
        assert collect(stepped.items) == lines(1, 6).splitlines()
        fresh = [i.fresh for i in stepped.items if isinstance(i, Chunk) and i.lines]
        assert fresh == [True, True]  # each is the start of a file's text

    def test_a_deleted_file_ends_its_job_after_the_rotation_wait(
        self, logs: Path, stepped: Stepped
    ) -> None:
        job = logs / "job.log"
        append(job, lines(1, 2))
        stepped.scan()
        job.unlink()
        stepped.scan()
        assert stepped.ended() == []  # a successor may still come
        stepped.scan(ROTATE_WAIT_SECONDS)
        assert stepped.ended() == [JobEnded("t", "job", JobStatus.COMPLETED, "file deleted")]

    def test_a_file_deleted_and_recreated_is_read_from_its_start(
        self, logs: Path, stepped: Stepped
    ) -> None:
        job = logs / "job.log"
        append(job, lines(1, 2))
        stepped.scan()
        job.unlink()
        append(job, lines(3, 4))
        stepped.scan()
        stepped.scan(ROTATE_WAIT_SECONDS)
        assert collect(stepped.items) == lines(1, 4).splitlines()
        assert stepped.ended() == []  # the job has a file again


class TestSteppedIdle:
    """`idle_timeout`: a job is ended when none of its files grew for that long, on a fake clock.
    The check walks the files only when some job may have gone idle: these pin that it still
    ends every job on time."""

    @staticmethod
    def stepped(logs: Path, glob: str, job: str = "{stem}") -> Stepped:
        made = Stepped(logs)
        made.tailer = FileTailer(
            [SourceConfig(path=f"{logs}/{glob}", job=job)],
            node="n",
            tuning_job="t",
            max_line_bytes=1 << 20,
            offsets={},
            emit=made.items.append,
            idle_timeout=60.0,
            watch=False,
            clock=lambda: made.now,
        )
        return made

    @staticmethod
    def tick(made: Stepped, at: float) -> list[str]:
        """The reconcile at time `at`: the jobs ended as idle so far."""
        made.now = at
        made.tailer.step(reconcile=True)
        return [e.job for e in made.ended() if e.reason == "idle"]

    def test_each_job_ends_idle_on_time_whatever_the_others_do(self, logs: Path) -> None:
        made = self.stepped(logs, "*.log")
        append(logs / "a.log", lines(1, 1))
        made.scan()  # a grew at 100
        assert self.tick(made, 130.0) == []
        made.now = 140.0
        append(logs / "b.log", lines(1, 1))
        made.scan()  # b opened at 140, after the check at 130 saw only a
        assert self.tick(made, 159.0) == []
        assert self.tick(made, 160.0) == ["a"]
        made.now = 190.0
        append(logs / "b.log", lines(2, 2))
        made.scan()  # b grew at 190
        assert self.tick(made, 200.0) == ["a"]
        assert self.tick(made, 250.0) == ["a", "b"]
        assert self.tick(made, 400.0) == ["a", "b"]  # once each

    def test_a_job_whose_newest_file_goes_away_is_idle_since_its_other_file(
        self, logs: Path
    ) -> None:
        (logs / "job").mkdir()
        made = self.stepped(logs, "job/*.log", job="{parent}")
        append(logs / "job" / "old.log", lines(1, 1))
        made.scan()  # old.log grew at 100
        made.now = 150.0
        append(logs / "job" / "new.log", lines(2, 2))
        made.scan()  # new.log grew at 150
        assert self.tick(made, 155.0) == []  # idle at 210 at the earliest, as things stand
        (logs / "job" / "new.log").unlink()
        made.scan(ROTATE_WAIT_SECONDS)  # given up: the job's last growth is old.log's, at 100
        assert self.tick(made, 160.0 + ROTATE_WAIT_SECONDS) == ["job"]

    def test_a_job_ended_idle_whose_file_is_truncated_is_checked_again_at_once(
        self, logs: Path
    ) -> None:
        """A copytruncate of an idle job's log reads it again (nothing new): still no growth
        since 100, so it ends idle again at the next tick, not one timeout later."""
        made = self.stepped(logs, "*.log")
        append(logs / "a.log", lines(1, 1))
        made.scan()
        assert self.tick(made, 160.0) == ["a"]
        os.truncate(logs / "a.log", 0)
        made.scan(10.0)
        assert self.tick(made, 171.0) == ["a", "a"]

    def test_a_job_ended_idle_that_speaks_again_can_end_idle_again(self, logs: Path) -> None:
        made = self.stepped(logs, "*.log")
        append(logs / "a.log", lines(1, 1))
        made.scan()
        assert self.tick(made, 160.0) == ["a"]
        made.now = 170.0
        append(logs / "a.log", lines(2, 2))
        made.scan()
        assert self.tick(made, 229.0) == ["a"]
        assert self.tick(made, 230.0) == ["a", "a"]


class TestPollingOnly:
    """Without inotify (`watch=False`) the periodic poll alone finds files and their lines."""

    @staticmethod
    def tailer(
        logs: Path,
        items: list[Chunk | JobEnded],
        offsets: dict[str] | None = None,
        idle_timeout: float = 0.0,
    ) -> FileTailer:
        return FileTailer(
            [SourceConfig(path=f"{logs}/*.log")],
            node="n",
            tuning_job="t",
            max_line_bytes=1 << 20,
            offsets=offsets or {},
            emit=items.append,
            idle_timeout=idle_timeout,
            watch=False,
        )

    def test_lines_arrive_by_polling(self, logs: Path) -> None:
        """New files and appended lines arrive; a partial line waits; offsets end at line ends."""
        items: list[Chunk | JobEnded] = []
        tailer = self.tailer(logs, items)
        tailer.start()
        try:
            assert tailer.watcher is None
            job = logs / "job.log"
            append(job, lines(1, 3) + b"seq=")
            wait_for(lambda: collect(items) == [b"seq=1", b"seq=2", b"seq=3"])
            append(job, b"4\n" + lines(5, 6))
            wait_for(lambda: len(collect(items)) >= 6)
            assert collect(items) == lines(1, 6).splitlines()
            chunks = [i for i in items if isinstance(i, Chunk)]
            assert {c.job for c in chunks} == {"job"}
            assert chunks[-1].offset is not None
            assert chunks[-1].offset.offset == job.stat().st_size
            offsets = [c.offset.offset for c in chunks if c.offset]
            assert offsets == sorted(offsets)
        finally:
            tailer.stop()

    def test_rename_rotation_by_polling(self, logs: Path) -> None:
        """The renamed file is drained before the new one is read, by polling alone."""
        items: list[Chunk | JobEnded] = []
        tailer = self.tailer(logs, items)
        tailer.start()
        try:
            job = logs / "job.log"
            with job.open("ab", buffering=0) as old:
                old.write(lines(1, 5))
                wait_for(lambda: len(collect(items)) >= 5)
                job.rename(logs / "job.log.1")
                old.write(lines(6, 8))
            append(job, lines(9, 12))
            wait_for(lambda: len(collect(items)) >= 12)
            assert collect(items) == lines(1, 12).splitlines()
        finally:
            tailer.stop()

    def test_resumes_from_a_stored_offset(self, logs: Path) -> None:
        """A tailer given the offset (and state) a previous one handed on reads only what
        follows it."""
        job = logs / "job.log"
        append(job, lines(1, 4) + b"seq=")
        items: list[Chunk | JobEnded] = []
        first = self.tailer(logs, items)
        first.start()
        try:
            wait_for(lambda: len(collect(items)) >= 4)
        finally:
            first.stop()
        stored = [i for i in items if isinstance(i, Chunk)][-1].offset
        assert stored is not None
        append(job, b"5\n" + lines(6, 7))
        resumed: list[Chunk | JobEnded] = []
        second = self.tailer(logs, resumed, offsets={stored.file_key: stored})
        second.start()
        try:
            wait_for(lambda: len(collect(resumed)) >= 3)
            assert collect(resumed) == lines(5, 7).splitlines()
        finally:
            second.stop()

    def test_idle_job_is_reported_ended(self, logs: Path) -> None:
        """No growth for `idle_timeout`: one JobEnded(Completed, idle), not repeated."""
        items: list[Chunk | JobEnded] = []
        tailer = self.tailer(logs, items, idle_timeout=0.5)
        tailer.start()
        try:
            append(logs / "job.log", lines(1, 2))
            ended = wait_for(
                lambda: [i for i in list(items) if isinstance(i, JobEnded)], 10, what="JobEnded"
            )
            assert ended == [JobEnded("t", "job", JobStatus.COMPLETED, "idle")]
            assert collect(items) == lines(1, 2).splitlines()
        finally:
            tailer.stop()


@contextmanager
def tailer_closed(tailer: FileTailer) -> Iterator[FileTailer]:
    """Close a tailer's files at the end (`stop()` also works on one never started)."""
    try:
        yield tailer
    finally:
        tailer.stop()


class TestTruncationOnWakeUp:
    """copytruncate seen first by a wake-up read (a file event, not the periodic reconcile).

    Driven step by step on a FileTailer without its thread: `scan()` is the reconcile,
    `read(file)` what a `modified` event triggers. Whatever the order in which they see the
    truncated-and-refilled file, its new text is read once from its start.
    """

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            pytest.param(10, 30, id="small-file-fingerprint-under-1KiB"),
            pytest.param(200, 300, id="file-over-1KiB"),
        ],
    )
    def test_refilled_past_the_old_offset_before_a_wake_up_read(
        self, logs: Path, old: int, new: int
    ) -> None:
        items: list[Chunk | JobEnded] = []
        tailer = TestPollingOnly.tailer(logs, items)
        job = logs / "job.log"
        with tailer_closed(tailer), job.open("ab", buffering=0) as f:
            f.write(lines(1, old))
            tailer.scan()
            assert collect(items) == lines(1, old).splitlines()
            os.truncate(job, 0)
            f.write(lines(old + 1, old + new))  # longer than the old text, at once
            (tailed,) = tailer.files.values()
            tailer.read(tailed)  # a `modified` event
            tailer.scan()  # the next reconcile
            tailer.scan()
        assert collect(items) == lines(1, old + new).splitlines()
