"""Glob expansion that cannot run away: `**` visits each directory once, a scan has a bound.

`glob.glob(recursive=True)` follows a symlink loop (`ln -s . logs/l1`) into every path it spells,
so one loop under a `**` makes a scan endless. Here a directory reached again (same device and
inode, through a link or not) is skipped and counted, and a scan stops after `limit` directory
entries, saying so. Otherwise the semantics are glob's: `*`, `?` and `[...]` within a name,
hidden names matched only by a pattern that starts with `.`, symlinks followed, sorted results.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field

MAX_ENTRIES = 200_000  # directory entries one expansion may look at
_MAGIC = re.compile(r"[*?[]")


@dataclass(slots=True)
class Expansion:
    """What one glob matched, and what the scan skipped."""

    paths: list[str] = field(default_factory=list)
    loops: int = 0  # directories not entered again (a symlink loop, two links to one folder)
    truncated: bool = False  # stopped at the entry limit: some matches may be missing


def has_magic(text: str) -> bool:
    return _MAGIC.search(text) is not None


def expand(pattern: str, *, limit: int = MAX_ENTRIES) -> Expansion:
    """Paths matching `pattern` (`**` spans directories), sorted for a stable launch order."""
    out = Expansion()
    if not has_magic(pattern):
        if os.path.lexists(pattern):
            out.paths.append(pattern)
        return out
    absolute = os.path.isabs(pattern)
    parts = [p for p in pattern.split(os.sep) if p]
    fixed: list[str] = []
    while parts and not has_magic(parts[0]):
        fixed.append(parts.pop(0))
    base = (os.sep if absolute else "") + os.sep.join(fixed)
    found: set[str] = set()
    budget = [limit]
    visited: set[tuple[int, int]] = set()
    if base and not os.path.isdir(base):
        return out

    def entries(directory: str) -> list[os.DirEntry[str]]:
        if budget[0] <= 0:
            out.truncated = True
            return []
        try:
            with os.scandir(directory or ".") as it:
                listed = []
                for entry in it:
                    budget[0] -= 1
                    if budget[0] < 0:
                        out.truncated = True
                        break
                    listed.append(entry)
                return listed
        except OSError:
            return []

    def first_visit(directory: str) -> bool:
        try:
            st = os.stat(directory or ".")
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in visited:
            out.loops += 1
            return False
        visited.add(key)
        return True

    def join(directory: str, name: str) -> str:
        return os.path.join(directory, name) if directory else name

    def walk(directory: str, i: int) -> None:
        if i == len(parts):
            found.add(directory)
            return
        part = parts[i]
        last = i == len(parts) - 1
        if part == "**":
            walk(directory, i + 1)  # `**` matches no directory at all, too
            for entry in entries(directory):
                if entry.name.startswith("."):
                    continue
                child = join(directory, entry.name)
                if last:  # a final `**` matches everything below, files too
                    found.add(child)
                if _is_dir(entry) and first_visit(child):
                    walk(child, i)
            return
        if not has_magic(part):
            child = join(directory, part)
            if last:
                if os.path.lexists(child):
                    found.add(child)
            elif os.path.isdir(child):
                walk(child, i + 1)
            return
        hidden_ok = part.startswith(".")
        for entry in entries(directory):
            if entry.name.startswith(".") and not hidden_ok:
                continue
            if not fnmatch.fnmatchcase(entry.name, part):
                continue
            child = join(directory, entry.name)
            if last:
                found.add(child)
            elif _is_dir(entry):
                walk(child, i + 1)

    if "**" in parts:
        first_visit(base)
    walk(base, 0)
    out.paths = sorted(found)
    return out


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks, as glob does
    except OSError:
        return False
