"""Process facts from /proc: liveness (zombies count as gone), process groups, command lines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int, proc: Path = PROC) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], pgrp is [2])."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def alive(pid: int, proc: Path = PROC) -> bool:
    """The process exists and is not a zombie."""
    fields = _stat_fields(pid, proc)
    return fields is not None and fields[0] not in ("Z", "X")


def pids(proc: Path = PROC) -> Iterator[int]:
    """Every pid visible in this PID namespace."""
    try:
        entries = os.listdir(proc)
    except OSError:
        return
    for name in entries:
        if name.isdigit():
            yield int(name)


def group_members(pgid: int, proc: Path = PROC) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for pid in pids(proc):
        fields = _stat_fields(pid, proc)
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(pid)
    return members


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
        fields = _stat_fields(current, proc)
        if fields is None:
            break
        current = int(fields[1])
        seen.add(current)
    return seen


def descendants(pid: int, proc: Path = PROC) -> set[int]:
    """Live children, grandchildren, ... of a process (by parent links; not the pid itself)."""
    children: dict[int, list[int]] = {}
    for child in pids(proc):
        fields = _stat_fields(child, proc)
        if fields is not None and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(child)
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found
