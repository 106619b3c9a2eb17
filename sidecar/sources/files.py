"""Files to chunks of lines, exactly once: globs, rotation, truncation, deletion, resume by offset.

The tailer is a producer: it reads each file to EOF whenever woken (a file event or the periodic
reconcile), decodes its format into logical lines and hands them on with the offset and decoder
state to commit alongside their values. It never commits anything itself: what the consumer has
committed is where a restart resumes.

Bounded whatever the files do: globs are expanded without following a directory twice
(sidecar/sources/paths.py); at most `max_open` files are open at once — past that, the files read to
their end longest ago give their descriptor back and are reopened when they change, checked to
be the same file (inode, first bytes, and the bytes before the offset: an inode number can be
reused), so thousands of files work under a 1024-descriptor limit; a user regex on a path runs
under the regex timeout; an error in one file is that file's, and no exception ends the thread.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import os
import resource
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import regex
import structlog

from sidecar.config import SourceConfig
from sidecar.formats import Decoder, Format, detect_format, make_decoder
from sidecar.model import Chunk, JobEnded, JobStatus, Offset
from sidecar.sources import POLL_SECONDS, READ_SIZE, Emit
from sidecar.sources.paths import expand
from sidecar.sources.wake import Waker, Watcher
from sidecar.templates import render_template

if TYPE_CHECKING:
    from sidecar.telemetry import Telemetry

log = structlog.get_logger("sidecar.sources.files")

FINGERPRINT_BYTES = 1024
RECONCILE_SECONDS = 1.0
# while the watcher works and the reconciles find nothing it missed, the glob-and-stat of every
# file backs off to this (doubling from RECONCILE_SECONDS); what it finds resets it. The idle and
# exit checks keep their one-second tick: only the per-file work backs off.
RECONCILE_MAX_SECONDS = 16.0
ROTATE_WAIT_SECONDS = 5.0
FD_RESERVE = 128  # descriptors left for sockets, the store, watches, stops
ERROR_BACKOFF = (1.0, 30.0)  # seconds the thread waits after an unexpected error, doubling
# when the job's process is known (a pid file, process_match): its exit ends the job. A job whose
# files grow is alive; one idle this long is asked about, at growing intervals up to the max
EXIT_SETTLE_SECONDS = 2.0
PROBE_MAX_INTERVAL = 10.0
# a process never seen alive (a stale pid file?) ends the job only once its files are this quiet
EXIT_QUIET_SECONDS = 10.0

# (job, one of its log paths, its template labels) -> is its process alive (None: cannot tell)
Probe = Callable[["JobName", str, dict[str, str]], bool | None]


def fingerprint(fd: int, size: int) -> str:
    """`<n>:<sha256 of the first n bytes>`, n = min(size, 1 KiB): tells a reused inode apart."""
    n = min(size, FINGERPRINT_BYTES)
    return f"{n}:{hashlib.sha256(os.pread(fd, n, 0)).hexdigest()[:32]}"


def same_file(fd: int, size: int, stored: str) -> bool:
    """Whether an open file still starts with the bytes a stored fingerprint was taken of."""
    n_text, _, _ = stored.partition(":")
    if not n_text.isdigit() or size < int(n_text):
        return False
    return fingerprint(fd, int(n_text)) == stored


def tail_fingerprint(fd: int, offset: int) -> str:
    """The hash of the (up to) 1 KiB just before `offset`: with the head's fingerprint, what
    tells a file rewritten in place (same inode, same banner, as long again) from the one whose
    offset was stored."""
    start = max(0, offset - FINGERPRINT_BYTES)
    return hashlib.sha256(os.pread(fd, offset - start, start)).hexdigest()[:32]


def open_limit() -> int:
    """How many log files may be open at once: the descriptor limit less a reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, int(soft) - FD_RESERVE)


@dataclass(frozen=True, slots=True)
class JobName:
    """The tuning job and job a file belongs to."""

    tuning_job: str
    job: str


def job_for_path(
    path: str, source: SourceConfig, default_tuning_job: str, *, timeout: float = 1.0
) -> tuple[JobName, dict[str, str]] | None:
    """A file's job from its path — `job_regex` groups, else the `job` template ({stem} {name}
    {parent}) — and the regex's other groups, which stop templates may use (`{namespace}`).
    None when `job_regex` does not match; TimeoutError when it runs past `timeout`."""
    if source.job_regex is not None:
        match = regex.search(source.job_regex, path, timeout=timeout)
        if match is None or not match.group("job"):
            return None
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        name = JobName(groups.get("tuning_job") or default_tuning_job, match.group("job"))
        return name, groups
    p = Path(path)
    values = {"stem": p.stem, "name": p.name, "parent": p.parent.name}
    return JobName(default_tuning_job, render_template(source.job, values)), {}


@dataclass(slots=True)
class TailedFile:
    """One file being followed (its descriptor closed while it is idle)."""

    key: str
    path: str
    name: JobName
    fd: int | None
    fmt: Format
    decoder: Decoder | None  # None until the format of an `auto` file can be detected
    position: int  # bytes read so far (the decoder may hold an incomplete line of them)
    fingerprint: str
    labels: dict[str, str] = field(default_factory=dict)
    resume: dict[str, Any] = field(default_factory=dict)
    orphaned_at: float | None = None
    last_growth: float = 0.0
    sent_offset: int = -1
    # (size, mtime_ns, ctime_ns) when last read to EOF: the reconcile skips a file still so
    seen: tuple[int, int, int] | None = None
    fresh: bool = False  # read from its start, not resumed: its first lines start a run
    rewritten: bool = False  # its stored offset no longer fits its content: another run's log
    tail: str = ""  # while its descriptor is closed: the bytes before `position`, fingerprinted
    failing: bool = False  # reading it raised: logged once, tried again at the reconcile


@dataclass(slots=True)
class ProbeState:
    """When to ask next whether a job's process is alive, and whether it ever was."""

    due: float
    interval: float = 1.0
    seen_alive: bool = False


class FileTailer:
    """Follows the files of `sources`; one thread, woken by a Waker, reconciling every second."""

    name = "files"

    def __init__(
        self,
        sources: Sequence[SourceConfig],
        *,
        node: str,
        tuning_job: str,
        max_line_bytes: int,
        offsets: Mapping[str, Offset],
        emit: Emit,
        idle_timeout: float = 0.0,
        waker: Waker | None = None,
        watch: bool = True,
        clock: Callable[[], float] = time.monotonic,
        probe: Probe | None = None,
        regex_timeout: float = 1.0,
        telemetry: Telemetry | None = None,
        max_open: int | None = None,
    ) -> None:
        self.sources = list(sources)
        self.node = node
        self.tuning_job = tuning_job
        self.max_line_bytes = max_line_bytes
        self.offsets = dict(offsets)
        self.emit = emit
        self.idle_timeout = idle_timeout
        self.waker = waker or Waker()
        self.clock = clock
        self.regex_timeout = regex_timeout
        self.telemetry = telemetry
        self.max_open = max_open if max_open is not None else open_limit()
        self.files: dict[str, TailedFile] = {}
        patterns = [s.path for s in self.sources if s.path is not None]
        self.watcher = Watcher(self.waker, patterns) if watch else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended: dict[JobName, float] = {}  # job -> when its last file went away
        self._idle_reported: set[JobName] = set()
        # no job can go idle before this: the idle check walks every file only when one may
        # (files only grow later, but forgetting a job's newest file moves its growth earlier,
        # and a job ended idle that is read again can end idle again: those reset it)
        self._idle_due = 0.0
        self.probe = probe
        self._probes: dict[JobName, ProbeState] = {}
        self._exit_reported: set[JobName] = set()
        self._skipped: set[str] = set()  # paths a job_regex could not name (logged once each)
        self._open_failed: dict[str, str] = {}  # path -> why it could not be opened, this scan
        self.unreadable: str | None = None  # why some matched files cannot be followed now
        self.running = False
        self.activity = 0  # files opened, forgotten, chunks sent: did a reconcile find anything?

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.watcher is not None:
            self.watcher.start()
        self._guarded(self.scan)  # files already there are read first, in a stable order
        self._thread = threading.Thread(target=self._loop, name="tailer", daemon=True)
        self.running = True
        self._thread.start()

    def stop(self, deadline: float | None = None) -> bool:
        """Stop reading by `deadline` (monotonic seconds; None: however long it takes); what
        was read is already handed on. True when the thread has ended."""
        self._stop.set()
        self.waker.wake()
        if self._thread is not None:
            self._thread.join(None if deadline is None else max(0.1, deadline - time.monotonic()))
            if self._thread.is_alive():
                return False
        if self.watcher is not None:
            self.watcher.stop()
        for tailed in self.files.values():
            self._close(tailed)
        self.files.clear()
        self.running = False
        return True

    def _guarded(self, step: Callable[..., None], *args: Any) -> bool:
        """Run one step; an unexpected error is logged and reported (not ready), never fatal."""
        try:
            step(*args)
        except Exception:
            log.exception("tailer_error")
            self.running = False
            return False
        return True

    def _loop(self) -> None:
        next_tick = self.clock() + RECONCILE_SECONDS
        scan_every = RECONCILE_SECONDS
        next_scan = next_tick
        delay = ERROR_BACKOFF[0]
        while not self._stop.is_set():
            polling = self.watcher is None or self.watcher.polling
            timeout = POLL_SECONDS if polling else max(0.0, next_tick - self.clock())
            paths, rescan = self.waker.wait(timeout)
            if self._stop.is_set():
                break
            now = self.clock()
            tick = polling or now >= next_tick
            if tick:
                next_tick = now + RECONCILE_SECONDS
            full = polling or (tick and now >= next_scan)
            before = self.activity
            if self._guarded(self._step, now, tick, rescan, paths, full):
                self.running = True
                delay = ERROR_BACKOFF[0]
            else:  # restarted after a pause: /readyz says not ready meanwhile
                self._stop.wait(delay)
                delay = min(delay * 2, ERROR_BACKOFF[1])
            if full:
                found = self.activity != before or rescan or bool(paths)
                scan_every = (
                    RECONCILE_SECONDS if found else min(scan_every * 2, RECONCILE_MAX_SECONDS)
                )
                next_scan = now + scan_every

    def step(self, *, reconcile: bool = False) -> None:
        """Handle the wake-ups that are waiting, without waiting for any: what the thread does
        each time it is woken (tests step the tailer with this, an injected clock and waker)."""
        paths, rescan = self.waker.wait(0)
        self._step(self.clock(), reconcile, rescan, paths)

    def _step(
        self, now: float, reconcile: bool, rescan: bool, paths: set[str], full: bool = True
    ) -> None:
        """One wake-up: the reconcile (every second; its scan of every file only when `full`,
        see RECONCILE_MAX_SECONDS), a rescan (files came or went), or just the files an event
        named."""
        if reconcile:
            if full:
                if self.watcher is not None:
                    self.watcher.schedule_missing()
                self.scan()
            elif rescan:
                self.scan()
            else:
                self._read_named(paths)
            self._check_idle(now)
            self._check_exits(now)
        elif rescan:
            self.scan()
        else:
            self._read_named(paths)

    def _read_named(self, paths: set[str]) -> None:
        if paths:
            named = [t for t in self.files.values() if t.path in paths]
            # a rotated file is drained before its successor, whichever file the event named
            # (an event for the rotated file may have been lost)
            jobs = {t.name for t in named}
            for tailed in [t for t in self.files.values() if t.orphaned_at is not None]:
                if tailed.name in jobs and tailed not in named:
                    self.read(tailed)
            for tailed in named:
                self.read(tailed)

    # scanning ------------------------------------------------------------------------------
    def _count(self, what: str, reason: str | None = None, n: int = 1) -> None:
        t = self.telemetry
        if t is None or not n:
            return
        if what == "skipped":
            t.files_skipped.labels(reason or "other").inc(n)
        elif what == "open_failed":
            t.open_failures.inc(n)

    def scan(self) -> None:
        """Match the globs; drain files that went away, then open new ones, then read all."""
        found: dict[str, tuple[str, SourceConfig]] = {}
        stats: dict[str, os.stat_result] = {}
        for source in self.sources:
            if source.path is None:
                continue
            expansion = expand(source.path)
            self._count("skipped", "directory_loop", expansion.loops)
            if expansion.truncated:
                self._count("skipped", "scan_limit")
                log.warning("scan_truncated", glob=source.path)
            for path in expansion.paths:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                key = f"{st.st_dev}:{st.st_ino}"
                if key not in found:
                    found[key] = (path, source)
                    stats[key] = st
        now = self.clock()
        # a rotated or deleted file is drained to EOF before its successor is read
        for key, tailed in list(self.files.items()):
            if key in found and tailed.fd is None and found[key][0] != tailed.path:
                # its descriptor given back, its inode number now at another path: what is
                # there is another file on a reused inode (deleted, recreated by another job)
                self._forget(tailed, now, deleted=True)
                continue
            if key in found:
                tailed.orphaned_at = None
                tailed.path = found[key][0]
                continue
            if tailed.fd is None:
                self._find_moved(tailed)  # renamed while its descriptor was given back?
            if tailed.fd is not None:
                self.read(tailed)
            if tailed.orphaned_at is None:
                tailed.orphaned_at = now
            if tailed.fd is not None:
                deleted = os.fstat(tailed.fd).st_nlink == 0
            else:  # not found again: deleted, or moved out of its folder
                deleted = not os.path.lexists(tailed.path)
            if deleted or now - tailed.orphaned_at >= ROTATE_WAIT_SECONDS:
                self._forget(tailed, now, deleted=deleted)
        self._open_failed = {}
        for key, (path, source) in found.items():
            if key not in self.files:
                self._open(key, path, source, now)
        for tailed in list(self.files.values()):
            known = stats.get(tailed.key)
            if known is not None and tailed.seen == (
                known.st_size,
                known.st_mtime_ns,
                known.st_ctime_ns,
            ):
                continue  # unchanged since it was read to EOF
            if tailed.fd is None and not self._same_as_before(tailed):
                # the inode number now belongs to another file: the old one is gone
                self._forget(tailed, now, deleted=True)
                if tailed.key in found:
                    self._open(tailed.key, found[tailed.key][0], found[tailed.key][1], now)
                continue
            self.read(tailed)
        for name, since in list(self._ended.items()):
            if any(f.name == name for f in self.files.values()):
                del self._ended[name]
            elif now - since >= ROTATE_WAIT_SECONDS:
                del self._ended[name]
                self.emit(JobEnded(name.tuning_job, name.job, JobStatus.COMPLETED, "file deleted"))
        self._report_open_files()

    def _report_open_files(self) -> None:
        open_now = sum(1 for f in self.files.values() if f.fd is not None)
        if self.telemetry is not None:
            self.telemetry.open_files.set(open_now)
        if self._open_failed:
            reasons = sorted(set(self._open_failed.values()))
            self.unreadable = (
                f"{len(self._open_failed)} matched file(s) cannot be opened ({', '.join(reasons)})"
            )
        else:
            self.unreadable = None

    def _name(self, path: str, source: SourceConfig) -> tuple[JobName, dict[str, str]] | None:
        """A file's job, or None (skipped, counted, logged once) when `job_regex` cannot say."""
        try:
            found = job_for_path(path, source, self.tuning_job, timeout=self.regex_timeout)
        except TimeoutError:
            reason = "job_regex_timeout"
            found = None
        else:
            reason = "no_job"
        if found is None and path not in self._skipped:
            self._skipped.add(path)
            self._count("skipped", reason)
            log.warning(
                "file_skipped",
                path=path,
                reason=reason,
                hint="sources[].job_regex ran past regex_timeout_seconds on this path"
                if reason == "job_regex_timeout"
                else "sources[].job_regex does not match this path (no `job` group)",
            )
        return found

    def _open_fd(self, path: str) -> int | None:
        """A descriptor for `path`, within the budget (idle files give theirs back first)."""
        self._make_room()
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            if path not in self._open_failed:
                self._count("open_failed")
                if not any(p == path for p in self._open_failed):
                    log.warning("open_failed", path=path, error=exc.strerror, errno=reason)
            self._open_failed[path] = reason
            return None

    def _make_room(self) -> None:
        """Close the longest-idle files read to their end while the budget is used up."""
        open_files = [f for f in self.files.values() if f.fd is not None]
        if len(open_files) < self.max_open:
            return
        # never a rotated file being drained: once renamed away it may not be found again
        idle = sorted(
            (f for f in open_files if f.seen is not None and f.orphaned_at is None),
            key=lambda f: f.last_growth,
        )
        for tailed in idle[: len(open_files) - self.max_open + 1]:
            self._close(tailed)

    def _close(self, tailed: TailedFile) -> None:
        if tailed.fd is not None:
            with contextlib.suppress(OSError):
                tailed.tail = tail_fingerprint(tailed.fd, tailed.position)
            os.close(tailed.fd)
            tailed.fd = None

    def _same_as_before(self, tailed: TailedFile, *, moved: bool = False) -> bool:
        """Reopen a file whose descriptor was given back, if what is at its path is still it:
        the same inode, the same first bytes and the same bytes before the offset (ext4 hands a
        freed inode number to the next new file at once). False when it is another file. A file
        nothing was read from has nothing to tell it by: found again under the globs it counts
        as another (it is read afresh, nothing is lost). `moved` (its inode found under a rotated
        name beside its path): itself only if its first bytes are those read (a renamed file
        that was also truncated cannot be told from another on a reused inode)."""
        if tailed.position == 0:
            return False
        try:
            fd = os.open(tailed.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True  # gone from its path: the scan's rotation and deletion rules apply
        except OSError:
            counted = self._open_fd(tailed.path)  # counted and reported there
            if counted is None:
                return True  # cannot tell now: a scan tries again
            fd = counted
        st = os.fstat(fd)
        same = (
            f"{st.st_dev}:{st.st_ino}" == tailed.key
            and same_file(fd, st.st_size, tailed.fingerprint)
            and (
                moved  # renamed: the first bytes tell it; read() goes on from where it was
                or st.st_size < tailed.position  # truncated: read() starts it again
                or tail_fingerprint(fd, tailed.position) == tailed.tail
            )
        )
        if same and tailed.fd is None:
            tailed.fd = fd
        else:
            os.close(fd)
        return same

    def _find_moved(self, tailed: TailedFile) -> None:
        """A file renamed while its descriptor was given back (logrotate: `job.log` to
        `job.log.1` beside it): found by its inode in its folder and drained."""
        folder = os.path.dirname(tailed.path) or "."
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        globs = [src.path for src in self.sources if src.path is not None]
        for entry in entries:
            if any(fnmatch.fnmatchcase(entry.path, g.replace("**/", "*")) for g in globs):
                continue  # a name the globs match is a file of its own (an inode reused)
            try:
                st = entry.stat()
            except OSError:
                continue
            if f"{st.st_dev}:{st.st_ino}" == tailed.key and entry.is_file():
                old_path, tailed.path = tailed.path, entry.path
                if not self._same_as_before(tailed, moved=True):
                    tailed.path = old_path
                return

    def _open(self, key: str, path: str, source: SourceConfig, now: float) -> None:
        self.activity += 1
        found = self._name(path, source)
        if found is None:
            return
        name, labels = found
        fd = self._open_fd(path)
        if fd is None:
            return
        st = os.fstat(fd)
        if f"{st.st_dev}:{st.st_ino}" != key:  # replaced between the scan and the open
            os.close(fd)
            return
        size = st.st_size
        stored = self.offsets.pop(key, None)
        position, resume, fresh, rewritten = 0, {}, True, False
        # a fingerprint of no bytes (an empty file's) identifies nothing: its state is not resumed
        if (
            stored is not None
            and stored.offset <= size
            and not stored.fingerprint.startswith("0:")
            and same_file(fd, size, stored.fingerprint)
        ):
            state = dict(stored.state)
            tail = state.get("tail")
            if tail is None or tail == tail_fingerprint(fd, stored.offset):
                position, fresh, resume = stored.offset, False, state
            else:  # same inode and first bytes, other content: rewritten while we were down
                rewritten = True
                log.info("file_rewritten", path=path, job=name.job, offset=stored.offset)
        tailed = TailedFile(
            key=key,
            path=path,
            name=name,
            fd=fd,
            fmt=source.format,
            decoder=None,
            position=position,
            fingerprint=fingerprint(fd, size),
            labels=labels,
            resume=resume,
            last_growth=now,
            fresh=fresh,
            rewritten=rewritten,
        )
        if resume.get("format"):
            tailed.fmt = resume["format"]
        self._make_decoder(tailed)
        self.files[key] = tailed
        self._ended.pop(name, None)
        if resume.get("held") and tailed.decoder is not None:
            # values a redrawn bar held at the restart: hand them on even if no line follows,
            # so the job's end settles them
            self._send(tailed, [], time.monotonic())
        log.debug("file_opened", path=path, job=name.job, offset=position)
        # read at once, in the scan's (stable) order: a file read to its end can give its
        # descriptor back when the budget is used up, so any number of files gets read
        self.read(tailed)

    def _reopen(self, tailed: TailedFile) -> bool:
        """Open a file whose descriptor was given back, if it is still the same file; otherwise
        the next scan finds what is there now."""
        return self._same_as_before(tailed) and tailed.fd is not None

    def _make_decoder(self, tailed: TailedFile) -> None:
        fmt = tailed.fmt
        if fmt == "auto":
            assert tailed.fd is not None
            head = os.pread(tailed.fd, 64 * 1024, 0)
            if b"\n" not in head and len(head) < 64 * 1024:
                return  # not one complete line yet: decide when there is
            fmt = detect_format(head)
            tailed.fmt = fmt
        tailed.decoder = make_decoder(
            fmt, self.max_line_bytes, offset=tailed.position, state=tailed.resume
        )

    def _forget(self, tailed: TailedFile, now: float, *, deleted: bool) -> None:
        self.activity += 1
        self._idle_due = 0.0
        self._close(tailed)
        del self.files[tailed.key]
        if deleted and not any(f.name == tailed.name for f in self.files.values()):
            self._ended[tailed.name] = now

    # reading -------------------------------------------------------------------------------
    def read(self, tailed: TailedFile) -> None:
        """Read one file to EOF and hand on its complete lines; an error in it is its own
        (logged once, counted, tried again at the next reconcile)."""
        try:
            self._read(tailed)
        except OSError as exc:
            if not tailed.failing:
                log.warning("read_failed", path=tailed.path, error=str(exc))
            tailed.failing = True
        else:
            tailed.failing = False

    def _read(self, tailed: TailedFile) -> None:
        """A size below what was read means copytruncate. So does a changed fingerprint: a file
        truncated and regrown past the old size between two reads shows no shrink, only other
        first bytes; checking costs one pread of at most 1 KiB per read."""
        if tailed.fd is None and not self._reopen(tailed):
            return
        assert tailed.fd is not None
        st = os.fstat(tailed.fd)
        if st.st_size < tailed.position or (
            tailed.position and not same_file(tailed.fd, st.st_size, tailed.fingerprint)
        ):
            self._restart(tailed, st.st_size)
        if tailed.decoder is None:
            self._make_decoder(tailed)
            if tailed.decoder is None:
                return
        decoder = tailed.decoder
        seen = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        while not self._stop.is_set():
            data = os.pread(tailed.fd, READ_SIZE, tailed.position)
            if not data:
                tailed.seen = seen
                break
            read_at = time.monotonic()
            tailed.position += len(data)
            tailed.last_growth = self.clock()
            if not tailed.fingerprint.startswith(f"{FINGERPRINT_BYTES}:"):
                tailed.fingerprint = fingerprint(tailed.fd, tailed.position)
            self._send(tailed, decoder.feed_raw(data), read_at)
            if len(data) < READ_SIZE:
                tailed.seen = seen
                break

    def _send(self, tailed: TailedFile, lines: list[bytes], read_at: float) -> None:
        decoder = tailed.decoder
        assert decoder is not None and tailed.fd is not None
        if not lines and decoder.offset == tailed.sent_offset:
            return
        state: dict[str, Any] = {"format": tailed.fmt, **decoder.state()}
        if decoder.offset:
            state["tail"] = tail_fingerprint(tailed.fd, decoder.offset)
        offset = Offset(
            node=self.node,
            file_key=tailed.key,
            fingerprint=tailed.fingerprint,
            path=tailed.path,
            offset=decoder.offset,
            state=state,
        )
        chunk = Chunk(
            tuning_job=tailed.name.tuning_job,
            job=tailed.name.job,
            lines=lines,
            read_at=read_at,
            offset=offset,
            log_path=tailed.path,
            labels=tailed.labels,
            resume=tailed.resume,
            cut_lines=decoder.truncated,
            bad_records=decoder.errors,
            fresh=tailed.fresh,
            rewritten=tailed.rewritten,
        )
        if lines:
            tailed.fresh = tailed.rewritten = False
        tailed.resume = {}
        tailed.sent_offset = decoder.offset
        self.activity += 1
        if tailed.name in self._idle_reported:
            self._idle_reported.discard(tailed.name)
            self._idle_due = 0.0  # it may go idle again before the next due time
        if lines and tailed.name in self._exit_reported:  # it speaks again: a process anew
            self._exit_reported.discard(tailed.name)
            self._probes.pop(tailed.name, None)
        self.emit(chunk)

    def _restart(self, tailed: TailedFile, size: int) -> None:
        """copytruncate, or a file rewritten in place: read it again from the start."""
        assert tailed.fd is not None
        log.info(
            "file_truncated", path=tailed.path, job=tailed.name.job, was=tailed.position, size=size
        )
        tailed.position = 0
        tailed.seen = None
        tailed.resume = {}
        tailed.fresh = True
        tailed.fingerprint = fingerprint(tailed.fd, size)
        tailed.decoder = None
        self._make_decoder(tailed)
        if tailed.decoder is not None:
            self._send(tailed, [], time.monotonic())

    def _check_idle(self, now: float) -> None:
        if self.idle_timeout <= 0 or now < self._idle_due:
            return
        latest: dict[JobName, float] = {}
        for tailed in self.files.values():
            latest[tailed.name] = max(latest.get(tailed.name, 0.0), tailed.last_growth)
        due = now + self.idle_timeout
        for name, last in latest.items():
            if name in self._idle_reported:
                continue
            if now - last >= self.idle_timeout:
                self._idle_reported.add(name)
                self.emit(JobEnded(name.tuning_job, name.job, JobStatus.COMPLETED, "idle"))
            else:
                due = min(due, last + self.idle_timeout)
        self._idle_due = due

    def _check_exits(self, now: float) -> None:
        """End the jobs whose process has exited (after reading their files to the end)."""
        if self.probe is None:
            return
        by_job: dict[JobName, list[TailedFile]] = {}
        for tailed in self.files.values():
            by_job.setdefault(tailed.name, []).append(tailed)
        for name in list(self._probes):
            if name not in by_job:
                del self._probes[name]
        for name, files in by_job.items():
            if name in self._exit_reported:
                continue
            state = self._probes.setdefault(name, ProbeState(due=now))
            if now < state.due:
                continue
            quiet = now - max(f.last_growth for f in files)
            if state.seen_alive and quiet < EXIT_SETTLE_SECONDS:
                state.due = now + 1.0  # its log grows: alive, nothing to ask
                continue
            alive = self.probe(name, files[0].path, dict(files[0].labels))
            if alive:
                state.seen_alive = True
                state.interval = min(state.interval * 2, PROBE_MAX_INTERVAL)
                state.due = now + state.interval
            elif alive is False and (state.seen_alive or quiet >= EXIT_QUIET_SECONDS):
                for tailed in files:
                    self.read(tailed)  # every line it wrote goes before its end
                self._exit_reported.add(name)
                self.emit(
                    JobEnded(name.tuning_job, name.job, JobStatus.COMPLETED, "process exited")
                )
            else:
                state.due = now + 1.0
