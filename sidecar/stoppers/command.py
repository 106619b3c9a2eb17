"""The command backend: run an argv template, never through a shell."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile

from sidecar.stoppers import PermanentStopError, StopError, StopRequest, StopResult
from sidecar.templates import render_template

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
        """The argv for a request: each placeholder fills one argument, argv[0] stays fixed.

        An argument that a placeholder would make start with `-` (a log file named
        `--all.log`) is refused: the program would read it as an option (`kubectl delete pod
        --all`). After a `--` argument the program reads no more options, so it is allowed."""
        # a job name with `;`, spaces or quotes stays one literal argument, and the program is
        # the config's: nothing from a log line chooses what runs
        argv = [self.argv[0]]
        options_end = False
        for i, template in enumerate(self.argv[1:], start=1):
            value = render_template(template, request.context)
            if not options_end and value.startswith("-") and not template.startswith("-"):
                raise PermanentStopError(
                    f"stop.command.argv[{i}] ({template!r}) would be {value!r}, which the "
                    "program would read as an option: refused; put '--' before positional "
                    "arguments where the program allows it"
                )
            options_end = options_end or template == "--"
            argv.append(value)
        return argv

    def probe(self, context: dict[str, str]) -> bool | None:
        """A command cannot tell whether the job still runs."""
        del context
        return None

    def stop(self, request: StopRequest) -> StopResult:
        argv = self.render(request)  # PermanentStopError when a value would be an option
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
