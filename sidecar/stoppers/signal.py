"""The signal backend: SIGTERM to the job's process group or tree, SIGKILL after the grace period.

What is signalled (docs/design.md, "Reliability and safety"): the target's process group only when
the target leads it (it was started with `setsid`, by `sidecar exec`, or is a container's main
process); otherwise the target and its descendants. Never the sidecar, its ancestors (the
launcher that started it), pid 1, the target's own ancestors (the launcher that started the
jobs) or a process of another job the sidecar knows: a stop that would touch one is refused, and
nothing is signalled. Processes are signalled through pidfds once their identity (pid and start
time) is checked, so a pid reused between the look and the signal is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Mapping

import regex
import structlog

from sidecar.stoppers import (
    PermanentStopError,
    StopError,
    StopRefusedError,
    StopRequest,
    StopResult,
)
from sidecar.stoppers.procs import (
    Process,
    ProcessTable,
    ancestors,
    cmdline,
    same_process,
)
from sidecar.templates import render_path, render_template

log = structlog.get_logger("sidecar.stop")

Context = Mapping[str, str]
Resolver = Callable[[Context, ProcessTable], list[int]]
POLL = 0.02
# a pid file is written after the process it names started (`cmd & echo $! > f`, or by the
# process itself); a process that started later than this after the file's last write is a
# different one that reused the pid
STALE_SLACK_SECONDS = 0.5


def _regex_for(pattern: str, context: Context) -> regex.Pattern[str]:
    """A process_match template with each placeholder filled by its regex-escaped value, so a job
    named `.*` or `a|b` matches only itself."""
    escaped = {k: regex.escape(v) for k, v in context.items()}
    return regex.compile(render_template(pattern, escaped))


def pid_file_resolver(template: str, *, match: str | None = None) -> Resolver:
    """Targets from a pid file template such as `/run/training/{job}.pid`; with `match` (the
    `process_match` template) the process must also still have a matching command line."""

    def resolve(context: Context, table: ProcessTable) -> list[int]:
        try:
            path = render_path(template, context)
        except ValueError as exc:
            raise PermanentStopError(f"stop.signal.pid_file: {exc}") from None
        try:  # plain os calls: a stop reads every other job's pid file too (to protect them)
            # O_NONBLOCK: a FIFO at the path must not hold up every stop until someone writes
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise PermanentStopError(f"pid file {path!r} is not a regular file")
                written = info.st_mtime
                raw = os.read(fd, 64).strip()
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise StopError(f"pid file {path!r} does not exist") from None
        except OSError as exc:
            raise StopError(f"pid file {path!r} cannot be read: {exc}") from None
        if not raw:  # created but not written yet (`echo $$ > f`): worth a retry
            raise StopError(f"pid file {path!r} is empty")
        if not raw.isdigit() or int(raw) < 1:
            raise PermanentStopError(f"pid file {path!r} does not hold a pid: {raw[:40]!r}")
        pid = int(raw)
        if pid == 1:
            raise PermanentStopError(f"pid file {path!r} holds pid 1 (init): refused")
        process = table.get(pid)
        if process is None:
            return []  # the job's process has exited
        late = table.started_at(process) - written
        if late > STALE_SLACK_SECONDS:
            raise StopError(
                f"pid file {path!r} is stale: pid {pid} is now a process that started {late:.1f} s "
                f"after the file was written ({_describe(pid)}), not the job's; not signalled"
            )
        if match is not None:
            line = cmdline(pid) or ""
            if not _regex_for(match, context).search(line, timeout=1.0):
                raise StopError(
                    f"pid {pid} from pid file {path!r} runs {line[:120]!r}, which no longer "
                    "matches stop.signal.process_match: not the job's process; not signalled"
                )
        return [pid]

    return resolve


def process_match_resolver(pattern: str) -> Resolver:
    """Targets whose /proc/PID/cmdline matches a regex template; never the sidecar or its parents.

    Placeholders are filled with regex-escaped values, so a job name is matched literally.
    """

    def resolve(context: Context, table: ProcessTable) -> list[int]:
        compiled = _regex_for(pattern, context)
        mine = ancestors(os.getpid())
        found = []
        for process in table.every():
            if process.pid in mine:
                continue
            line = cmdline(process.pid)
            if line and compiled.search(line, timeout=1.0):
                found.append(process.pid)
        return sorted(found)

    return resolve


def fixed_resolver(pid: int) -> Resolver:
    """One known process (the child of `sidecar exec`)."""
    return lambda context, table: [pid]


def _describe(pid: int) -> str:
    line = cmdline(pid)
    return f"pid {pid}: {line[:80]!r}" if line else f"pid {pid}"


class SignalStopper:
    """Stops a job by signalling its process group (launchers such as torchrun have many
    workers) when it leads one, else its process tree; never a protected process."""

    backend = "signal"

    def __init__(
        self,
        resolve: Resolver,
        *,
        grace_seconds: float,
        kill_wait: float = 5.0,
        scope: str = "auto",
    ) -> None:
        self.resolve = resolve
        self.scope = scope
        self.grace_seconds = grace_seconds
        self.kill_wait = kill_wait
        self._tick = threading.Event()  # never set: a sleep that is not a busy loop
        self._groups: dict[int, str] = {}  # process group -> the first job found in it
        self._warned_groups: set[int] = set()

    # liveness --------------------------------------------------------------------------------
    def probe(self, context: Context) -> bool | None:
        """Whether the job's process is alive (None: cannot tell, e.g. no pid file yet).

        The first time two jobs' processes are found in one process group that neither leads
        (a shell loop's `&` jobs), one warning says so, before any stop."""
        table = ProcessTable()
        try:
            found = self.resolve(context, table)
        except StopError:
            return None
        for pid in found:
            process = table.get(pid)
            if process is not None and process.pgid != pid:
                self._note_group(process, context.get("job", "?"))
        return bool(found)

    def _note_group(self, process: Process, job: str) -> None:
        first = self._groups.setdefault(process.pgid, job)
        if first == job or process.pgid in self._warned_groups:
            return
        self._warned_groups.add(process.pgid)
        effect = (
            "its stops will be refused (stop.signal.scope is group): use scope auto, or start "
            "each job with setsid"
            if self.scope == "group"
            else "each stop signals only its job's process and its descendants, never the group"
        )
        log.warning(
            "shared_process_group",
            jobs=[first, job],
            process_group=process.pgid,
            leader=_describe(process.pgid),
            effect=effect,
        )

    # stopping --------------------------------------------------------------------------------
    def stop(self, request: StopRequest) -> StopResult:
        table = ProcessTable()
        targets = [pid for pid in self.resolve(request.context, table) if table.get(pid)]
        if not targets:
            return StopResult.ALREADY_EXITED
        job = request.decision.job
        protected = self._protected(request, table, targets)
        for pid in targets:
            if pid in protected:
                raise StopRefusedError(
                    f"the target of job {job!r} is {_describe(pid)}, {protected[pid]}: refused, "
                    "nothing was signalled"
                )
        groups: set[int] = set()
        singles: dict[int, int] = {}  # pid -> start (its identity)
        for pid in targets:
            process = table.get(pid)
            if process is None:
                continue
            members, group = self._members(process, table, protected)
            hit = sorted(members & protected.keys())
            if hit:
                other = hit[0]
                raise StopRefusedError(
                    f"stopping job {job!r} ({_describe(pid)}) would also signal "
                    f"{_describe(other)}, {protected[other]}: refused, nothing was signalled"
                )
            if group:
                groups.add(process.pgid)
            else:
                singles.update({p: found.start for p in members if (found := table.get(p))})
        if not groups and not singles:
            return StopResult.ALREADY_EXITED
        self._send(groups, singles, signal.SIGTERM)
        if self._wait_gone(groups, singles, self.grace_seconds):
            return StopResult.STOPPED
        singles = self._grown(singles, protected)
        self._send(groups, singles, signal.SIGKILL)
        if self._wait_gone(groups, singles, self.kill_wait):
            return StopResult.STOPPED
        raise StopError(
            f"processes still alive after SIGKILL: groups {sorted(groups)}, processes "
            f"{sorted(p for p, start in singles.items() if same_process(p, start))}"
        )

    def _protected(
        self, request: StopRequest, table: ProcessTable, targets: list[int]
    ) -> dict[int, str]:
        """Every process this stop must not touch, with the reason."""
        own = os.getpid()
        why: dict[int, str] = {1: "pid 1 (init)"}
        for pid in ancestors(own):
            why[pid] = "an ancestor of the sidecar (the program that started it)"
        why[own] = "the sidecar itself"
        for pid in targets:
            for parent in ancestors(pid) - {pid}:
                why.setdefault(parent, f"the launcher of job {request.decision.job!r}")
        for other in request.others:
            try:
                pids = self.resolve(other, table)
            except StopError:
                continue  # that job's target is unknown or gone: nothing of it to protect
            for pid in pids:
                label = f"a process of job {other.get('job', '?')!r}"
                for member in {pid} | table.descendants(pid):
                    why.setdefault(member, label)
        return why

    def _members(
        self, process: Process, table: ProcessTable, protected: Mapping[int, str]
    ) -> tuple[set[int], bool]:
        """What stopping one target signals: (pids, whether as its process group)."""
        tree = {process.pid} | table.descendants(process.pid)
        if process.pgid == os.getpgrp():
            return tree, False  # never killpg the sidecar's own group
        leads = process.pgid == process.pid
        if self.scope == "group" or (self.scope == "auto" and leads):
            group = table.group(process.pgid)
            if self.scope == "auto" and group & protected.keys():
                return tree, False  # the group holds another job's process: the tree alone
            return group, True
        return tree, False

    @staticmethod
    def _grown(singles: dict[int, int], protected: Mapping[int, str]) -> dict[int, int]:
        """The processes still alive plus children they started since SIGTERM."""
        table = ProcessTable()
        grown = dict(singles)
        for pid, start in singles.items():
            found = table.get(pid)
            if found is not None and found.start == start:
                for child in table.descendants(pid):
                    if child not in protected and (process := table.get(child)):
                        grown.setdefault(child, process.start)
        return grown

    @staticmethod
    def _send(groups: set[int], singles: dict[int, int], sig: signal.Signals) -> None:
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
        for pid, start in singles.items():
            signal_process(pid, start, sig)

    def _wait_gone(self, groups: set[int], singles: dict[int, int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            table = ProcessTable()
            if not any(table.group(g) for g in groups) and not any(
                (p := table.get(pid)) is not None and p.start == start
                for pid, start in singles.items()
            ):
                return True
            if time.monotonic() >= deadline:
                return False
            self._tick.wait(POLL)


def signal_process(pid: int, start: int, sig: signal.Signals) -> bool:
    """Send `sig` to the process `pid` only if it is still the one that started at `start`.

    A pidfd pins the process: once its identity is checked through it, the signal cannot reach
    another process that reused the pid. False when the process is gone."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfds (old kernel): check, then signal by pid
        if not same_process(pid, start):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            return True
        return False
    try:
        if not same_process(pid, start):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
