"""The signal backend: SIGTERM to the target's process group (or tree), SIGKILL after the grace period."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

import regex
import structlog

from sidecar.config import render_template
from sidecar.stoppers import PermanentStopError, StopError, StopRequest, StopResult
from sidecar.stoppers.procs import alive, ancestors, cmdline, descendants, group_members, pids

log = structlog.get_logger("sidecar.stop")

Resolver = Callable[[StopRequest], list[int]]
POLL = 0.02


def pid_file_resolver(template: str) -> Resolver:
    """Targets from a pid file template such as `/run/training/{job}.pid`."""

    def resolve(request: StopRequest) -> list[int]:
        path = render_template(template, request.context)
        try:
            with open(path, "rb") as handle:
                raw = handle.read(64).strip()
        except FileNotFoundError:
            raise StopError(f"pid file {path!r} does not exist") from None
        except OSError as exc:
            raise StopError(f"pid file {path!r} cannot be read: {exc}") from None
        if not raw:  # created but not written yet (`echo $$ > f`): worth a retry
            raise StopError(f"pid file {path!r} is empty")
        if not raw.isdigit() or int(raw) <= 1:
            raise PermanentStopError(f"pid file {path!r} does not hold a pid: {raw[:40]!r}")
        return [int(raw)]

    return resolve


def process_match_resolver(pattern: str) -> Resolver:
    """Targets whose /proc/PID/cmdline matches a regex template; never the sidecar or its parents.

    Placeholders are filled with regex-escaped values, so a job name is matched literally.
    """

    def resolve(request: StopRequest) -> list[int]:
        escaped = {k: regex.escape(v) for k, v in request.context.items()}
        compiled = regex.compile(render_template(pattern, escaped))
        mine = ancestors(os.getpid())
        found = []
        for pid in pids():
            if pid in mine:
                continue
            line = cmdline(pid)
            if line and compiled.search(line, timeout=1.0):
                found.append(pid)
        return found

    return resolve


def fixed_resolver(pid: int) -> Resolver:
    """One known process (the child of `sidecar exec`)."""
    return lambda request: [pid]


class SignalStopper:
    """Stops a job by signalling process groups (launchers such as torchrun have many workers)."""

    backend = "signal"

    def __init__(
        self,
        resolve: Resolver,
        *,
        grace_seconds: float,
        kill_wait: float = 5.0,
        scope: str = "group",
    ) -> None:
        self.resolve = resolve
        self.scope = scope
        self.grace_seconds = grace_seconds
        self.kill_wait = kill_wait
        self._tick = threading.Event()  # never set: a sleep that is not a busy loop

    def stop(self, request: StopRequest) -> StopResult:
        targets = [pid for pid in self.resolve(request) if alive(pid)]
        if not targets:
            return StopResult.ALREADY_GONE
        own_group = os.getpgrp()
        groups: set[int] = set()
        singles: set[int] = set()
        for pid in targets:
            try:
                pgid = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if pgid == own_group or self.scope == "tree":
                # never our own group, which would stop the sidecar with the job
                singles.add(pid)
            else:
                groups.add(pgid)
        if not groups and not singles:
            return StopResult.ALREADY_GONE
        singles = self._with_descendants(singles)
        self._send(groups, singles, signal.SIGTERM)
        if self._wait_gone(groups, singles, self.grace_seconds):
            return StopResult.STOPPED
        singles = self._with_descendants(singles)
        self._send(groups, singles, signal.SIGKILL)
        if self._wait_gone(groups, singles, self.kill_wait):
            return StopResult.STOPPED
        raise StopError(
            f"processes still alive after SIGKILL: groups {sorted(groups)}, "
            f"processes {sorted(p for p in singles if alive(p))}"
        )

    @staticmethod
    def _with_descendants(singles: set[int]) -> set[int]:
        """The processes and their live descendants, never the sidecar or its ancestors."""
        tree = set(singles)
        for pid in singles:
            if alive(pid):
                tree |= descendants(pid)
        return tree - ancestors(os.getpid())

    @staticmethod
    def _send(groups: set[int], singles: set[int], sig: signal.Signals) -> None:
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
            except PermissionError as exc:
                raise PermanentStopError(
                    f"no permission to signal process group {pgid} (needs the KILL capability "
                    f"or the same user): {exc}"
                ) from None
        for pid in singles:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _wait_gone(self, groups: set[int], singles: set[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if not any(group_members(g) for g in groups) and not any(alive(p) for p in singles):
                return True
            if time.monotonic() >= deadline:
                return False
            self._tick.wait(POLL)
