"""A child's pipe as a source: every byte passed through to ours unchanged, its lines handed on."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from sidecar.lines import LineSplitter
from sidecar.model import Chunk

PIPE_READ_SIZE = 64 * 1024  # what one read of a pipe returns at most anyway


def write_all(fd: int, data: bytes) -> bool:
    """Write every byte (pipes take partial writes); False once the reader has gone away."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BrokenPipeError:
            return False
        except InterruptedError:
            continue
        view = view[written:]
    return True


class StreamPump:
    """Copies one of the child's pipes to ours byte for byte and hands its lines on; ends at the
    pipe's end (the child and everything holding the pipe have exited)."""

    def __init__(
        self,
        source: int,
        sink: int,
        put: Callable[[Chunk], object],
        *,
        tuning_job: str,
        job: str,
        max_line_bytes: int,
    ) -> None:
        self.name = f"pump-{sink}"
        self.source, self.sink = source, sink
        self.put = put
        self.tuning_job, self.job = tuning_job, job
        self.splitter = LineSplitter(max_line_bytes)
        self.last_byte = b"\n"  # of what was passed through: did the child end its last line?
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, deadline: float) -> bool:
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        passing = True
        while True:
            try:
                data = os.read(self.source, PIPE_READ_SIZE)
            except InterruptedError:
                continue
            if not data:
                break
            read_at = time.monotonic()
            if passing:
                passing = write_all(self.sink, data)
                self.last_byte = data[-1:]
            lines = self.splitter.feed(data)
            if lines:
                self.put(Chunk(self.tuning_job, self.job, lines, read_at))
        tail = self.splitter.finish()
        if tail:
            self.put(Chunk(self.tuning_job, self.job, tail, time.monotonic()))
        os.close(self.source)
