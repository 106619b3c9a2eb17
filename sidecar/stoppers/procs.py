"""Process facts from /proc: one snapshot of the process table, identities, trees and groups."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class Process:
    """One process as /proc/PID/stat shows it; `start` (clock ticks after boot) with the pid is
    its identity: a pid can be reused, a (pid, start) pair cannot."""

    pid: int
    ppid: int
    pgid: int
    state: str
    start: int

    @property
    def live(self) -> bool:
        """Not a zombie (an exited process nobody has reaped yet counts as gone)."""
        return self.state not in ("Z", "X")


def read_process(pid: int, proc: Path = PROC) -> Process | None:
    """The process with this pid now, or None when there is none."""
    # plain os calls: a stop reads every process before its first signal, and pathlib's
    # path objects and text decoding were most of that time
    try:
        fd = os.open(f"{proc}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)  # one line of a few hundred bytes (the name is at most 64)
    except OSError:
        return None
    finally:
        os.close(fd)
    # the command name is in parentheses and may itself hold spaces and parentheses
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return Process(pid, int(fields[1]), int(fields[2]), fields[0].decode(), int(fields[19]))
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def pids(proc: Path = PROC) -> Iterator[int]:
    """Every pid visible in this PID namespace."""
    try:
        entries = os.listdir(proc)
    except OSError:
        return
    for name in entries:
        if name.isdigit():
            yield int(name)


class ProcessTable:
    """Processes as /proc shows them, each read once: a stop's questions about parents,
    children, groups and identities are answered from one consistent view. Single pids are
    read on demand; the whole table only when a question needs every process."""

    def __init__(self, proc: Path = PROC) -> None:
        self.proc = proc
        self._by_pid: dict[int, Process | None] = {}
        self._complete = False
        self._children: dict[int, list[int]] | None = None
        self._boot: float | None = None

    def started_at(self, process: Process) -> float:
        """When a process started, in seconds since the epoch (to about 10 ms: /proc/uptime's
        resolution and the clock tick); the boot time is read once per table, since a stop
        resolves every job's pid file."""
        if self._boot is None:
            self._boot = boot_time(self.proc)
        return self._boot + process.start / CLOCK_TICKS

    def get(self, pid: int) -> Process | None:
        """The live (non-zombie) process with this pid, or None."""
        if pid not in self._by_pid and not self._complete:
            self._by_pid[pid] = read_process(pid, self.proc)
        found = self._by_pid.get(pid)
        return found if found is not None and found.live else None

    def every(self) -> list[Process]:
        """Every live process."""
        if not self._complete:
            for pid in pids(self.proc):
                if pid not in self._by_pid:
                    self._by_pid[pid] = read_process(pid, self.proc)
            self._complete = True
        return [p for p in self._by_pid.values() if p is not None and p.live]

    def children(self) -> dict[int, list[int]]:
        if self._children is None:
            self._children = {}
            for p in self.every():
                self._children.setdefault(p.ppid, []).append(p.pid)
        return self._children

    def descendants(self, pid: int) -> set[int]:
        """Live children, grandchildren, ... of `pid` (by parent links; not `pid` itself)."""
        children = self.children()
        found: set[int] = set()
        stack = [pid]
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return found

    def group(self, pgid: int) -> set[int]:
        """Live members of a process group."""
        return {p.pid for p in self.every() if p.pgid == pgid}


def alive(pid: int, proc: Path = PROC) -> bool:
    """The process exists and is not a zombie."""
    found = read_process(pid, proc)
    return found is not None and found.live


def same_process(pid: int, start: int, proc: Path = PROC) -> bool:
    """The process `pid` is still the one that started at `start`, and is not a zombie."""
    found = read_process(pid, proc)
    return found is not None and found.live and found.start == start


def group_members(pgid: int, proc: Path = PROC) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    return sorted(ProcessTable(proc).group(pgid))


def cmdline(pid: int, proc: Path = PROC) -> str | None:
    """A process's command line with NULs as spaces, or None when it cannot be read."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def ancestors(pid: int, proc: Path = PROC) -> set[int]:
    """The pid and its parents up to init."""
    seen = {pid}
    current = pid
    while current > 1:
        found = read_process(current, proc)
        if found is None or found.ppid in seen:
            break
        current = found.ppid
        seen.add(current)
    return seen


def descendants(pid: int, proc: Path = PROC) -> set[int]:
    """Live children, grandchildren, ... of a process (by parent links; not the pid itself)."""
    return ProcessTable(proc).descendants(pid)


def boot_time(proc: Path = PROC) -> float:
    """When the machine booted, in seconds since the epoch (to about 10 ms: /proc/uptime's
    resolution)."""
    try:
        uptime = float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        uptime = time.monotonic()
    return time.time() - uptime
