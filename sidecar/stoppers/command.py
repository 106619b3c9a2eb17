"""The command backend: run an argv template, never through a shell."""

from __future__ import annotations

import subprocess

from sidecar.config import render_template
from sidecar.stoppers import PermanentStopError, StopError, StopRequest, StopResult


class CommandStopper:
    """Runs `argv` with placeholders filled in each argument; a non-zero exit is a failure."""

    backend = "command"

    def __init__(self, argv: list[str], *, timeout: float) -> None:
        self.argv = argv
        self.timeout = timeout

    def stop(self, request: StopRequest) -> StopResult:
        # each placeholder fills one argument: a job name with `;` or spaces stays one argument,
        # and the program (argv[0]) is fixed by the config
        argv = [self.argv[0], *(render_template(a, request.context) for a in self.argv[1:])]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=self.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise PermanentStopError(f"stop command not found: {argv[0]!r}") from None
        except PermissionError as exc:
            raise PermanentStopError(f"stop command not executable: {argv[0]!r}: {exc}") from None
        except subprocess.TimeoutExpired:
            raise StopError(f"stop command timed out after {self.timeout:g} s: {argv[0]}") from None
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip()[-300:]
            raise StopError(f"stop command exited {done.returncode}: {tail}")
        return StopResult.STOPPED
