"""The command backend: run an argv template, never through a shell."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile

from sidecar.config import render_template
from sidecar.stoppers import PermanentStopError, StopError, StopRequest, StopResult

STDERR_TAIL = 300


class CommandStopper:
    """Runs `argv` with placeholders filled in each argument; a non-zero exit is a failure.

    The command runs in a session (process group) of its own, so a timeout kills everything it
    started, not only its first process. Its stderr goes to a temporary file rather than a pipe:
    a helper it leaves running in the background cannot hold the stop open.
    """

    backend = "command"

    def __init__(self, argv: list[str], *, timeout: float) -> None:
        self.argv = argv
        self.timeout = timeout

    def render(self, request: StopRequest) -> list[str]:
        """The argv for a request: each placeholder fills one argument, argv[0] stays fixed."""
        # a job name with `;`, spaces or quotes stays one literal argument, and the program is
        # the config's: nothing from a log line chooses what runs
        return [self.argv[0], *(render_template(a, request.context) for a in self.argv[1:])]

    def probe(self, context: dict[str, str]) -> bool | None:
        """A command cannot tell whether the job still runs."""
        del context
        return None

    def stop(self, request: StopRequest) -> StopResult:
        argv = self.render(request)
        with tempfile.TemporaryFile() as stderr:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                )
            except FileNotFoundError:
                raise PermanentStopError(f"stop command not found: {argv[0]!r}") from None
            except PermissionError as exc:
                raise PermanentStopError(
                    f"stop command not executable: {argv[0]!r}: {exc}"
                ) from None
            try:
                code = proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise StopError(
                    f"stop command timed out after {self.timeout:g} s and was killed: {argv[0]}"
                ) from None
            if code != 0:
                stderr.seek(max(0, os.fstat(stderr.fileno()).st_size - STDERR_TAIL))
                tail = stderr.read().decode("utf-8", "replace").strip()
                raise StopError(f"stop command exited {code}: {tail}")
        return StopResult.STOPPED
