"""The file tailer against a model: random file operations, every complete line once, in order.

In the spirit of Vector's file-source model tests. A hypothesis state machine plays two writers
(jobs `job-a` and `job-b`, one file each under a `*.log` glob) and everything that happens to
their files — appends, partial lines completed later, rename rotation, copytruncate, deletion,
recreation, a rewrite in place while the daemon is down — and the daemon around a `FileTailer`:
a consumer that commits a prefix of what it received (each chunk's lines, and its offset as the
store would keep it), graceful restarts and kill -9 (what was not committed is dropped), time
passing (a fake clock, past the rotate wait and the idle-close delay) and scans. The tailer is
stepped by hand: no thread, no sleep.

Every line carries its job and a sequence number, so the checker can tell order, duplicates and
losses apart. The invariant: the lines applied to each job are exactly the complete lines its
writer wrote, in order, each once — except lines the model marks as possibly lost, because no
tailer could have read them: copytruncate's window (written after the tailer last read the file,
gone from it when it is truncated), a file renamed away or deleted before any scan of the tailer
found it, lines a writer adds to a renamed file after the tailer gave it up (ROTATE_WAIT_SECONDS
after it noticed the rename), a deleted file's unread lines when the tailer had closed its
descriptor (given back under the descriptor budget), lines written to a renamed file after its
last read when its descriptor had been given back (CLOSED_RENAME_MAY_LOSE), and what a kill -9
dropped uncommitted or a restart cannot reach any more
(its file renamed away, truncated or rewritten while the daemon was down). A line the model marks may be missing,
never applied twice or out of order. A partial line applied before its end is a line never
written.

The tailer gets one descriptor for the two jobs' files, so one of them is nearly always given
back and reopened: the closed-descriptor paths meet every rule. What the model found in the
tailer is shown case by case in TestWhatTheModelFound (fixed since).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sidecar.config import SourceConfig
from sidecar.model import Chunk, JobEnded, Offset
from sidecar.sources.files import FINGERPRINT_BYTES, ROTATE_WAIT_SECONDS, FileTailer

JOBS = ("job-a", "job-b")
# more examples to hunt bugs: SIDECAR_TEST_TAIL_MODEL_EXAMPLES=2000
MAX_EXAMPLES = int(os.environ.get("SIDECAR_TEST_TAIL_MODEL_EXAMPLES", "200"))
STEPS = int(os.environ.get("SIDECAR_TEST_TAIL_MODEL_STEPS", "40"))
# A file whose descriptor was given back (budget pressure) and is then renamed is drained only
# if found beside its path with its first bytes unchanged: what was written to it after its
# last read may be lost otherwise. That is the design's trade (docs/design.md, "Reliability and
# safety"), so the model allows it; it never allows a line to go to the wrong job or twice.
CLOSED_RENAME_MAY_LOSE = True
# a banner longer than the fingerprint: files of one job share their first bytes, so only the
# bytes before the stored offset tell a rewrite in place from the file that was read
BANNER_HEAD = FINGERPRINT_BYTES + 16
# how far the clock moves before a scan: around the rotate wait, and well past it
ADVANCES = st.one_of(
    st.sampled_from([0.0, ROTATE_WAIT_SECONDS, 30.0, 30.0 + ROTATE_WAIT_SECONDS]),
    st.floats(0.5, 40.0),
)
# one descriptor for the two jobs' files: one of them is always closed (given back, read to its
# end) and reopened when it changes, so every rule meets the closed-descriptor paths too
MAX_OPEN = 1

F = TypeVar("F", bound=Callable[..., None])


def line(job: str, k: int) -> bytes:
    """The `k`-th line of a job: fixed width, so no partial line equals a complete one."""
    return f"{job} seq={k:05d}".encode()


def banner(job: str, file_id: int) -> bytes:
    """A first line of a job's file: the same first BANNER_HEAD bytes in every file of the job."""
    return f"{job} banner ".encode().ljust(BANNER_HEAD, b"=") + f" file={file_id}".encode()


def is_banner(text: bytes) -> bool:
    return any(text.startswith(f"{job} banner ".encode()) for job in JOBS)


def complete_lines(path: Path) -> list[bytes]:
    """The complete lines a file holds now (none when it does not exist)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return data.split(b"\n")[:-1]


def append(path: Path, data: bytes) -> None:
    """One write at the end (O_APPEND), as a process writing its log does."""
    with path.open("ab") as f:
        f.write(data)


def step(method: F) -> F:
    """A rule or invariant: when it fails, teardown skips the final drain (the failure stands)."""

    @functools.wraps(method)
    def run(self: TailerModel, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except BaseException:
            self.failed = True
            raise

    return run  # type: ignore[return-value]


@dataclass(slots=True)
class Renamed:
    """The file a writer still appends to after rotation renamed it (until it reopens its log)."""

    path: Path
    followed: bool  # the running tailer drains it: it had found it, and has not given up yet
    noticed_at: float | None = None  # the scan that first missed it at the job's path


class TailerModel(RuleBasedStateMachine):
    """Writers, their files and a daemon around a FileTailer; the lines each job should get."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="tail-model-"))
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.failed = False
        self.now = 1000.0
        self.files_made = 0  # banner ids and rotated names, unique per example
        # the consumer: chunks received and not committed; the store: lines applied, offsets
        self.pending: list[Chunk] = []
        self.applied: dict[str, list[bytes]] = {job: [] for job in JOBS}
        self.offsets: dict[str, Offset] = {}
        # the writers: complete lines in the order written, the line being written, if any,
        # and the renamed file a writer still appends to
        self.written: dict[str, list[bytes]] = {job: [] for job in JOBS}
        self.order: dict[bytes, tuple[str, int]] = {}
        self.partial: dict[str, tuple[bytes, int] | None] = dict.fromkeys(JOBS)
        self.seq = dict.fromkeys(JOBS, 0)
        self.renamed: dict[str, Renamed | None] = dict.fromkeys(JOBS)
        self.may_lose: set[bytes] = set()
        # the file now at each job's path (an id), and those the running tailer's scans found
        self.current: dict[str, int | None] = dict.fromkeys(JOBS)
        self.seen: set[int] = set()
        self.held = 0  # files kept aside so that a new file does not get a recycled inode
        self.started_with: dict[str, Offset] = {}
        self.tailer: FileTailer | None = self._tailer()

    # the daemon --------------------------------------------------------------------------
    def _tailer(self) -> FileTailer:
        self.started_with = dict(self.offsets)
        return FileTailer(
            [SourceConfig(path=f"{self.logs}/*.log", format="plain")],
            node="n",
            tuning_job="t",
            max_line_bytes=1 << 16,
            offsets=dict(self.offsets),
            emit=self._emit,
            watch=False,
            clock=lambda: self.now,
            max_open=MAX_OPEN,
        )

    def _emit(self, item: Chunk | JobEnded) -> None:
        if isinstance(item, JobEnded):
            return
        assert isinstance(item, Chunk) and item.offset is not None, item
        assert item.job in JOBS, item.job
        if item.lines and is_banner(item.lines[0]) and not self._resumed_at_zero(item):
            # a file read from its start (new, or rewritten in place): its lines start a run
            assert item.fresh, f"{item.lines[0][:40]!r}... read from the start, not fresh"
        self.pending.append(item)

    def _resumed_at_zero(self, chunk: Chunk) -> bool:
        """Whether the tailer was started with offset 0 stored for the chunk's file: it resumes
        there, not fresh, whatever the file holds now. (Stored after a truncation, the
        fingerprint of 0 bytes matches any file: a new file on the recycled inode resumes the
        old one's stored state. Not checked here.)"""
        assert chunk.offset is not None
        stored = self.started_with.get(chunk.offset.file_key)
        return stored is not None and stored.offset == 0

    def _commit(self, count: int) -> None:
        """The consumer applies the first `count` chunks: their lines, then their offsets."""
        done, self.pending = self.pending[:count], self.pending[count:]
        for chunk in done:
            offset = chunk.offset
            assert offset is not None
            self.applied[chunk.job].extend(chunk.lines)
            # what the store gives back: the state through JSON, as the consumer commits it
            self.offsets[offset.file_key] = Offset(
                offset.node,
                offset.file_key,
                offset.fingerprint,
                offset.path,
                offset.offset,
                json.loads(json.dumps(dict(offset.state))),
            )

    def _emitted(self) -> set[bytes]:
        """Every line the running tailer (or an earlier one) handed on: pending or applied."""
        lines = {text for chunk in self.pending for text in chunk.lines}
        for applied in self.applied.values():
            lines.update(applied)
        return lines

    @property
    def up(self) -> bool:
        return self.tailer is not None

    def _stop(self) -> None:
        assert self.tailer is not None
        self.tailer.stop()
        self.tailer = None
        for renamed in self.renamed.values():
            if renamed is not None:
                renamed.followed = False  # no later daemon finds it

    def _start(self) -> None:
        """A new daemon from what was committed. A line not applied that no glob-matched file
        holds any more (renamed away, truncated, rewritten) cannot be read again."""
        reachable = {text for job in JOBS for text in complete_lines(self.path(job))}
        applied = {text for lines in self.applied.values() for text in lines}
        for lines in self.written.values():
            self.may_lose.update(t for t in lines if t not in applied and t not in reachable)
        self.seen.clear()
        self.tailer = self._tailer()

    def _scan(self, advance: float) -> None:
        """The tailer's reconcile, and what the model knows follows from it: the files at the
        jobs' paths are found; a renamed file is drained until ROTATE_WAIT_SECONDS after the
        first scan that missed it, then given up."""
        assert self.tailer is not None
        self.now += advance
        self.tailer.scan()
        self.seen.update(f for f in self.current.values() if f is not None)
        for renamed in self.renamed.values():
            if renamed is None or not renamed.followed:
                continue
            if renamed.noticed_at is None:
                renamed.noticed_at = self.now
            elif self.now - renamed.noticed_at >= ROTATE_WAIT_SECONDS:
                renamed.followed = False

    def _scan_first(self, scan_first: bool) -> None:
        """With `scan_first`, the operation comes after a reconcile (if the daemon is up):
        the tailer has read all there was, nothing is in the operation's loss window."""
        if scan_first and self.up:
            self._scan(0.0)

    # the writers -------------------------------------------------------------------------
    def path(self, job: str) -> Path:
        return self.logs / f"{job}.log"

    def exists(self, job: str) -> bool:
        return self.current[job] is not None

    def _complete(self, job: str, text: bytes) -> None:
        self.order[text] = (job, len(self.written[job]))
        self.written[job].append(text)

    def _next(self, job: str) -> bytes:
        self.seq[job] += 1
        return line(job, self.seq[job])

    def _finish_partial(self, job: str) -> bytes:
        """The rest of the line being written, with its newline (nothing when there is none)."""
        partial = self.partial[job]
        if partial is None:
            return b""
        text, written = partial
        self.partial[job] = None
        self._complete(job, text)
        return text[written:] + b"\n"

    def _lines(self, job: str, count: int) -> bytes:
        data = b""
        for _ in range(count):
            text = self._next(job)
            self._complete(job, text)
            data += text + b"\n"
        return data

    def _write(self, job: str, make: Callable[[], bytes]) -> None:
        """One write by the job's writer, of what `make` returns: to the file it has open (a
        renamed one, or job.log, created if missing). Lines written to a renamed file the
        running tailer does not follow are lost."""
        before = len(self.written[job])
        data = make()
        renamed = self.renamed[job]
        if renamed is None:
            if not self.exists(job):
                self._new_file(job, with_banner=False)
            target = self.path(job)
        else:
            target = renamed.path
            if not (self.up and renamed.followed):
                self.may_lose.update(self.written[job][before:])
        if data:
            append(target, data)

    def _reopen(self, job: str, *, with_banner: bool) -> None:
        """The writer finishes its line in the renamed file and opens job.log again (created
        unless logrotate did), writing a banner first if it is empty (`with_banner`)."""
        self._write(job, lambda: self._finish_partial(job))
        self.renamed[job] = None
        if not self.exists(job):
            self._new_file(job, with_banner=with_banner)
        elif with_banner and self.path(job).stat().st_size == 0:
            self._write(job, lambda: self._banner_line(job))

    def _banner_line(self, job: str) -> bytes:
        self.files_made += 1
        text = banner(job, self.files_made)
        self._complete(job, text)
        return text + b"\n"

    def _new_file(self, job: str, *, with_banner: bool) -> None:
        """A new job.log (not on a recycled inode the tailer would take for another file)."""
        self.files_made += 1
        data = self._banner_line(job) if with_banner else b""
        path = self.path(job)
        path.touch(exist_ok=False)
        append(path, data)
        self.current[job] = self.files_made

    def _followed_closed(self, path: Path) -> bool:
        """Whether the running tailer follows the file at `path` with its descriptor closed
        (it was idle). Only what the known bugs need to know of the tailer's insides."""
        if self.tailer is None:
            return False
        st = path.stat()
        tailed = self.tailer.files.get(f"{st.st_dev}:{st.st_ino}")
        return tailed is not None and tailed.fd is None

    def _gone(self, job: str, lines: list[bytes], *, closed: bool) -> bool:
        """The job's file leaves the glob (renamed or deleted) holding `lines`. If no scan of
        the running tailer found it, what the tailer has not handed on of it, it never will;
        nor when `closed` says the tailer had closed its descriptor. True when it will."""
        if self.up and self.current[job] in self.seen and not closed:
            return True
        emitted = self._emitted()
        self.may_lose.update(t for t in lines if t not in emitted)
        return False

    def _rewrite_in_place(self, job: str, count: int) -> None:
        """A new run rewrites job.log in place (same inode, the same first bytes, at least as
        long as before): to be read from its start, its banner first. What the old text held
        and was not applied is gone."""
        path = self.path(job)
        old = complete_lines(path)
        if not self.exists(job) or not old or not old[0].startswith(f"{job} banner ".encode()):
            return
        size = path.stat().st_size
        applied = set(self.applied[job])
        self.may_lose.update(t for t in old if t not in applied)
        if self.renamed[job] is None:
            self.partial[job] = None
        data = self._banner_line(job) + self._lines(job, count)
        while len(data) < size:
            data += self._lines(job, 1)
        with path.open("r+b") as f:
            f.write(data)
            f.truncate()

    # rules: what the writers and the log rotation do -------------------------------------
    @initialize(
        kinds=st.tuples(*(st.sampled_from(["none", "plain", "banner"]) for _ in JOBS)),
        counts=st.tuples(*(st.integers(0, 3) for _ in JOBS)),
    )
    @step
    def files_before_the_first_scan(self, kinds: tuple[str, ...], counts: tuple[int, ...]) -> None:
        """The jobs' files (or not), maybe with a banner and lines, before the tailer looks."""
        for job, kind, count in zip(JOBS, kinds, counts, strict=True):
            if kind != "none":
                self._new_file(job, with_banner=kind == "banner")
                append(self.path(job), self._lines(job, count))

    @rule(
        job=st.sampled_from(JOBS),
        count=st.integers(0, 4),
        cut=st.none() | st.integers(1, 20),
        reopen=st.booleans(),
    )
    @step
    def write(self, job: str, count: int, cut: int | None, reopen: bool) -> None:
        """One write: the end of the line being written, `count` lines, maybe the start of
        the next one (`cut` bytes of it, no newline yet). A writer still on a renamed file
        reopens its log first if `reopen`."""
        if reopen and self.renamed[job] is not None:
            self._reopen(job, with_banner=False)

        def make() -> bytes:
            data = self._finish_partial(job) + self._lines(job, count)
            if cut is not None:
                text = self._next(job)
                written = min(cut, len(text))
                self.partial[job] = (text, written)
                data += text[:written]
            return data

        self._write(job, make)

    @rule(job=st.sampled_from(JOBS), more=st.integers(1, 8))
    @precondition(lambda self: any(p is not None for p in self.partial.values()))
    @step
    def extend_partial_line(self, job: str, more: int) -> None:
        """More of the line being written, still without its newline."""
        partial = self.partial[job]
        if partial is None or partial[1] == len(partial[0]):
            return
        text, written = partial
        grown = min(len(text), written + more)
        self.partial[job] = (text, grown)
        self._write(job, lambda: text[written:grown])

    @rule(job=st.sampled_from(JOBS), with_banner=st.booleans())
    @precondition(lambda self: not all(self.exists(job) for job in JOBS))
    @step
    def create_file(self, job: str, with_banner: bool) -> None:
        """A new file at the job's path (logrotate's `create`, a new run), a banner first if
        its writer starts in it."""
        if self.exists(job):
            return
        self._new_file(job, with_banner=with_banner and self.renamed[job] is None)

    @rule(job=st.sampled_from(JOBS), successor=st.booleans(), scan_first=st.booleans())
    @precondition(lambda self: any(self.exists(j) and self.renamed[j] is None for j in JOBS))
    @step
    def rename_rotate(self, job: str, successor: bool, scan_first: bool) -> None:
        """job.log -> job.log.N, which the glob does not match; the writer goes on writing to
        it until it reopens its log; logrotate creates an empty job.log (`successor`) or not."""
        if not self.exists(job) or self.renamed[job] is not None:
            return
        self._scan_first(scan_first)
        self.files_made += 1
        path, rotated = self.path(job), self.logs / f"{job}.log.{self.files_made}"
        # renamed with its descriptor given back: see CLOSED_RENAME_MAY_LOSE
        closed = CLOSED_RENAME_MAY_LOSE and self._followed_closed(path)
        os.rename(path, rotated)
        followed = self._gone(job, complete_lines(rotated), closed=closed)
        self.renamed[job] = Renamed(rotated, followed)
        self.current[job] = None
        if successor:
            self._new_file(job, with_banner=False)

    @rule(job=st.sampled_from(JOBS), with_banner=st.booleans())
    @precondition(lambda self: any(r is not None for r in self.renamed.values()))
    @step
    def reopen(self, job: str, with_banner: bool) -> None:
        """The writer finishes its line in the renamed file and opens job.log again."""
        if self.renamed[job] is not None:
            self._reopen(job, with_banner=with_banner)

    @rule(job=st.sampled_from(JOBS), scan_first=st.booleans())
    @precondition(
        lambda self: any(
            self.exists(j) and (self.partial[j] is None or self.renamed[j] is not None)
            for j in JOBS
        )
    )
    @step
    def copytruncate(self, job: str, scan_first: bool) -> None:
        """Copy job.log to job.log.N, truncate job.log in place; the writer carries on at the
        new end. What the tailer had not read yet is in the copy only: possibly lost."""
        if not self.exists(job) or (self.partial[job] is not None and self.renamed[job] is None):
            return
        self._scan_first(scan_first)
        self.files_made += 1
        path = self.path(job)
        shutil.copyfile(path, self.logs / f"{job}.log.{self.files_made}")
        emitted = self._emitted()
        self.may_lose.update(t for t in complete_lines(path) if t not in emitted)
        os.truncate(path, 0)

    @rule(job=st.sampled_from(JOBS), scan_first=st.booleans())
    @precondition(lambda self: any(self.exists(job) for job in JOBS))
    @step
    def delete(self, job: str, scan_first: bool) -> None:
        """job.log unlinked (its writer's unfinished line with it, if it writes there). What
        the tailer had not read of it is lost if it had closed the file's descriptor (idle):
        nothing can open a deleted file again."""
        if not self.exists(job):
            return
        self._scan_first(scan_first)
        path = self.path(job)
        self._gone(job, complete_lines(path), closed=self._followed_closed(path))
        path.unlink()
        if self.renamed[job] is None:
            self.partial[job] = None
        self.current[job] = None

    # rules: the daemon -------------------------------------------------------------------
    @rule(advance=ADVANCES)
    @precondition(lambda self: self.up)
    @step
    def scan(self, advance: float) -> None:
        """Time passes, then the periodic reconcile: globs matched, every changed file read."""
        self._scan(advance)

    @rule(job=st.sampled_from(JOBS))
    @precondition(lambda self: self.up)
    @step
    def file_event(self, job: str) -> None:
        """A `modified` event for job.log (only that one: another may have been lost), handed
        to the tailer's waker and stepped."""
        assert self.tailer is not None
        self.tailer.waker.wake(str(self.path(job)))
        self.tailer.step()

    @rule(count=st.integers(1, 6))
    @precondition(lambda self: bool(self.pending))
    @step
    def commit(self, count: int) -> None:
        """The consumer commits the oldest chunks it received."""
        self._commit(count)

    @rule(
        kill9=st.booleans(),
        rewrite=st.none() | st.sampled_from(JOBS),
        count=st.integers(0, 6),
        restart=st.booleans(),
    )
    @precondition(lambda self: self.up)
    @step
    def stop(self, kill9: bool, rewrite: str | None, count: int, restart: bool) -> None:
        """SIGTERM: everything received is committed, the files closed. kill -9: what was
        received and not committed is gone. While the daemon is down a new run may rewrite a
        job's file in place (when it starts with a banner: `count` lines after a new one). It
        starts again at once, or later (`start`)."""
        if kill9:
            self.pending = []
        else:
            self._commit(len(self.pending))
        self._stop()
        if rewrite is not None:
            self._rewrite_in_place(rewrite, count)
        if restart:
            self._start()

    @rule()
    @precondition(lambda self: not self.up)
    @step
    def start(self) -> None:
        """The daemon starts again, from the committed offsets."""
        self._start()

    # the checker -------------------------------------------------------------------------
    def check(self, *, final: bool) -> None:
        """Per job, applied then pending lines: written, each once, in order, skipping only
        lines marked possibly lost; at the end, nothing else missing."""
        for job in JOBS:
            written = self.written[job]
            received = self.applied[job] + [
                text for chunk in self.pending if chunk.job == job for text in chunk.lines
            ]
            last = -1
            for text in received:
                found = self.order.get(text)
                assert found is not None and found[0] == job, (
                    f"{job}: {text[:60]!r} handed on but never written as one of its lines "
                    "(a partial line before its end?)"
                )
                at = found[1]
                assert at > last, (
                    f"{job}: {text[:60]!r} handed on again or out of order, after "
                    f"{written[last][:60]!r}"
                )
                lost = [t for t in written[last + 1 : at] if t not in self.may_lose]
                assert not lost, f"{job}: lost {lost} (handed on {text[:60]!r} after them)"
                last = at
            if final:
                lost = [t for t in written[last + 1 :] if t not in self.may_lose]
                assert not lost, f"{job}: never applied {lost}"

    @invariant()
    @step
    def lines_once_and_in_order(self) -> None:
        self.check(final=False)

    def teardown(self) -> None:
        """Drain: start if down, scan, commit everything; then nothing may be missing."""
        try:
            if not self.failed:
                if not self.up:
                    self._start()
                self._scan(0.0)
                self._commit(len(self.pending))
                self.check(final=True)
        finally:
            if self.tailer is not None:
                self.tailer.stop()
            shutil.rmtree(self.root, ignore_errors=True)


class TestTailerModel:
    """Random sequences of appends, partial lines, rename rotation, copytruncate, deletion,
    recreation, rewrites in place while down, commits, graceful restarts, kill -9 and time
    passing: each job's committed lines are exactly its writer's complete lines, in order, each
    once, but for those no tailer could have read (copytruncate's window and the like)."""

    def test_every_complete_line_is_applied_once_in_order(self) -> None:
        run_state_machine_as_test(
            TailerModel,
            settings=settings(
                max_examples=MAX_EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )


class Stepped:
    """A FileTailer on `logs/*.log` stepped by hand on a fake clock, collecting what it emits."""

    def __init__(self, logs: Path) -> None:
        self.now = 1000.0
        self.items: list[Chunk | JobEnded] = []
        self.tailer = FileTailer(
            [SourceConfig(path=f"{logs}/*.log", format="plain")],
            node="n",
            tuning_job="t",
            max_line_bytes=1 << 16,
            offsets={},
            emit=self.items.append,
            watch=False,
            clock=lambda: self.now,
            max_open=1,
        )

    def __enter__(self) -> Stepped:
        return self

    def __exit__(self, *exc: object) -> None:
        self.tailer.stop()  # closes its files; fine on a tailer never started

    def scan(self, advance: float = 0.0) -> None:
        self.now += advance
        self.tailer.scan()

    def lines(self) -> list[tuple[str, bytes]]:
        """(job, line) for every line handed on, in order (the `other` file's left out)."""
        return [
            (i.job, text)
            for i in self.items
            if isinstance(i, Chunk) and i.job != "other"
            for text in i.lines
        ]


def idle_closed(stepped: Stepped, job: Path, data: bytes) -> None:
    """`job` holds `data`, read; then another file is opened and, with one descriptor for
    both, `job`'s is given back (it was read to its end)."""
    append(job, data)
    stepped.scan()
    append(job.parent / "other.log", b"other seq=1\n")
    stepped.scan()
    fds = {Path(f.path).name: f.fd for f in stepped.tailer.files.values()}
    assert fds[job.name] is None


def recycled(old: Path, new: Path, data: bytes) -> None:
    """Delete `old` and create `new` holding `data`; skip unless it got `old`'s inode."""
    inode = old.stat().st_ino
    old.unlink()
    append(new, data)
    if new.stat().st_ino != inode:
        pytest.skip("the filesystem gave the new file another inode")


class TestWhatTheModelFound:
    """What the model found (fixed since), one case each, stepped by hand (no sleep)."""

    def test_a_renamed_idle_file_is_drained_before_its_successor(self, tmp_path: Path) -> None:
        """Its descriptor given back (read to its end), then written to, renamed away
        and written to under its new name, as a writer finishing its lines does before it
        reopens its log: those lines are drained before the new job.log, as with an open
        descriptor."""
        logs = tmp_path / "logs"
        logs.mkdir()
        job = logs / "job.log"
        with Stepped(logs) as stepped:
            idle_closed(stepped, job, b"seq=1\n")
            append(job, b"seq=2\n")
            job.rename(logs / "job.log.1")
            append(logs / "job.log.1", b"seq=3\n")
            append(job, b"seq=4\n")
            stepped.scan()
            stepped.scan(ROTATE_WAIT_SECONDS)
        assert stepped.lines() == [("job", b"seq=%d" % k) for k in range(1, 5)]

    def test_a_recycled_inode_at_another_jobs_path_is_a_new_file(self, tmp_path: Path) -> None:
        """a.log, idle (descriptor closed), deleted; b.log created before the next scan gets
        its inode (ext4 reuses them): b's lines are b's, read from its start."""
        logs = tmp_path / "logs"
        logs.mkdir()
        a, b = logs / "a.log", logs / "b.log"
        with Stepped(logs) as stepped:
            idle_closed(stepped, a, b"a seq=1\n")
            recycled(a, b, b"b seq=1\nb seq=2\n")
            stepped.scan()
        assert stepped.lines() == [("a", b"a seq=1"), ("b", b"b seq=1"), ("b", b"b seq=2")]

    def test_a_recycled_inode_with_the_same_banner_is_read_from_its_start(
        self, tmp_path: Path
    ) -> None:
        """job.log (a banner longer than the fingerprint, one line), idle, deleted; a new run's
        job.log gets its inode, the same banner and more lines: all of them are read."""
        logs = tmp_path / "logs"
        logs.mkdir()
        job = logs / "job.log"
        head = banner("job", 0) + b"\n"
        with Stepped(logs) as stepped:
            idle_closed(stepped, job, head + b"run1 seq=1\n")
            recycled(job, job, head + b"run2 seq=1\nrun2 seq=2\n")
            stepped.scan()
        assert [text for _, text in stepped.lines()] == [
            head[:-1],
            b"run1 seq=1",
            head[:-1],
            b"run2 seq=1",
            b"run2 seq=2",
        ]
