"""Sources: what reads logs and hands their lines on, behind one contract.

Every source is a producer of `Chunk`s (and `JobEnded`s) for the consumer's inbox:

    start()                 begin reading (a thread of its own)
    stop(deadline) -> bool  stop reading by `deadline` (monotonic seconds); True when it has
    name, running           for logs and /readyz

`files` follows globs of log files (the tailer; `wake` turns inotify events into hints, `paths`
expands globs safely), `docker` follows containers through the Engine API, `pipe` reads `exec`'s
child, `offline` reads whole files for `replay` and `check` (no thread: an iterator).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sidecar.model import Chunk, JobEnded

Emit = Callable[[Chunk | JobEnded], object]
"""Where a source hands its chunks and job ends (the consumer's inbox)."""

READ_SIZE = 1 << 20  # bytes read at once from a file or a container's stream
POLL_SECONDS = 0.25  # how often a source that must poll looks again


class Source(Protocol):
    """A producer of chunks with the daemon's start/stop contract."""

    name: str

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, deadline: float) -> bool: ...
