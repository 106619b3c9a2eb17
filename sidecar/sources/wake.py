"""Wake-ups for the tailer: file events are hints that only wake the reader; polling backs them up."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable

import structlog

log = structlog.get_logger("sidecar.sources.wake")

GLOB_CHARS = frozenset("*?[")


class Waker:
    """Collects hints (a path changed, rescan the globs) and wakes whoever waits for them."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._paths: set[str] = set()
        self._rescan = False

    def wake(self, path: str | None = None, *, rescan: bool = False) -> None:
        with self._lock:
            if path is not None:
                self._paths.add(path)
            self._rescan = self._rescan or rescan
        self._event.set()

    def wait(self, timeout: float) -> tuple[set[str], bool]:
        """Block until woken or `timeout`; return (changed paths, whether to rescan) and reset."""
        self._event.wait(timeout)
        with self._lock:
            self._event.clear()
            paths, rescan = self._paths, self._rescan
            self._paths, self._rescan = set(), False
        return paths, rescan


def watch_roots(patterns: Iterable[str]) -> dict[str, bool]:
    """For each glob, the directory to watch (its longest fixed prefix) and whether recursively."""
    roots: dict[str, bool] = {}
    for pattern in patterns:
        parts = os.path.abspath(pattern).split(os.sep)
        fixed: list[str] = []
        for part in parts:
            if GLOB_CHARS & set(part):
                break
            fixed.append(part)
        root = os.sep.join(fixed) or os.sep
        rest = parts[len(fixed) :]
        if len(rest) == 0:  # a plain file path: watch its directory
            root, recursive = os.path.dirname(root), False
        else:
            recursive = len(rest) > 1 or "**" in rest
        roots[root] = roots.get(root, False) or recursive
    return roots


def inotify_watches() -> int | None:
    """How many inotify watches this process holds (Linux /proc), None when that is unknown."""
    total, found = 0, False
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                total += sum(1 for line in info if line.startswith("inotify wd:"))
            found = True
        except OSError:
            continue
    return total if found else None


def directories(root: str, recursive: bool) -> int:
    """The directories a watch of `root` covers: itself, and with `recursive` all below it."""
    if not recursive:
        return 1
    # os.walk lists a symlink to a folder among the folders but does not enter it, and neither
    # does the inotify watch: links are not counted
    return 1 + sum(
        sum(1 for d in dirs if not os.path.islink(os.path.join(base, d)))
        for base, dirs, _files in os.walk(root)
    )


class Watcher:
    """watchdog (inotify) events → Waker hints. When inotify is unavailable or its limits are hit,
    `polling` is True and the tailer's periodic scan does the work alone."""

    def __init__(self, waker: Waker, patterns: Iterable[str]) -> None:
        self.waker = waker
        self.roots = watch_roots(patterns)
        self.polling = False
        self._observer: object | None = None
        self._scheduled: set[str] = set()

    def start(self) -> None:
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers.inotify import InotifyObserver
        except ImportError as exc:  # pragma: no cover - not Linux
            self._fallback(f"inotify unavailable: {exc}")
            return
        waker = self.waker

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                kind = event.event_type
                if kind in ("opened", "closed_no_write"):
                    return
                path = os.fsdecode(event.src_path)
                if kind in ("modified", "closed") and not event.is_directory:
                    waker.wake(path)
                else:  # created, moved, deleted: the set of files may have changed
                    waker.wake(path, rescan=True)

        self._handler = Handler()
        try:
            observer = InotifyObserver()
            observer.start()
        except OSError as exc:
            self._fallback(f"cannot start inotify: {exc}")
            return
        self._observer = observer
        self.schedule_missing()

    def schedule_missing(self) -> None:
        """Watch roots that exist now (a log directory may appear after start)."""
        observer = self._observer
        if observer is None or self.polling:
            return
        for root, recursive in self.roots.items():
            if root in self._scheduled or not os.path.isdir(root):
                continue
            try:
                observer.schedule(self._handler, root, recursive=recursive)  # type: ignore[attr-defined]
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EMFILE, errno.ENFILE):
                    self._fallback(
                        f"inotify limit reached ({exc.strerror}); see fs.inotify.max_user_watches"
                    )
                    return
                log.warning("watch_failed", root=root, error=str(exc))
                continue
            self._scheduled.add(root)
            if recursive:
                # watchdog skips the subfolders it cannot watch without a word, ENOSPC included:
                # count the watches the kernel holds against the folders there are
                held = inotify_watches()
                wanted = sum(directories(r, self.roots[r]) for r in self._scheduled)
                if held is not None and held < wanted:
                    self._fallback(
                        f"inotify limit reached ({held} of {wanted} folders watched); "
                        "see fs.inotify.max_user_watches"
                    )
                    return

    def _fallback(self, reason: str) -> None:
        self.polling = True
        log.warning("polling_fallback", reason=reason)
        self.stop()

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            observer.join(timeout=5)  # type: ignore[attr-defined]
