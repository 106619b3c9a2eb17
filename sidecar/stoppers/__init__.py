"""Stoppers: one protocol, a backend per runtime, and the dispatcher that retries them off-thread.

Stopper.stop(request) -> StopResult    raises StopError (retried with backoff) or
                                       PermanentStopError (not retried: wrong RBAC, bad config)
                                       └── StopRefusedError (it would touch a protected process)
Stopper.probe(context) -> bool | None  is the job's process alive (None: cannot tell)
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import structlog

from sidecar.model import Decision
from sidecar.templates import render_path

log = structlog.get_logger("sidecar.stop")


class StopResult(StrEnum):
    """How a stop ended (the `outcome` of its `stop_decision` event, with `refused` and
    `failed` for the stops that did not end)."""

    STOPPED = "stopped"  # the target was signalled and is gone
    ALREADY_EXITED = "already_exited"  # the target had already exited: nothing was signalled
    DRY_RUN = "dry_run"  # nothing was signalled on purpose


class StopError(Exception):
    """A stop attempt failed; it is retried with backoff."""


class PermanentStopError(StopError):
    """A stop cannot succeed by retrying (missing permission, invalid target)."""


class StopRefusedError(PermanentStopError):
    """The stop would signal a process it must not: the sidecar, its ancestors, pid 1, a
    launcher, or another job's process. Nothing was signalled."""


@dataclass(frozen=True, slots=True)
class StopRequest:
    """A decision plus what templates need to find its target."""

    decision: Decision
    context: dict[str, str]
    decided_at: float = field(default_factory=time.monotonic)
    # the template contexts of the other jobs this sidecar follows: their processes are protected
    others: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StopOutcome:
    """How one request ended: its result, or (result None) the last error."""

    request: StopRequest
    result: StopResult | None
    seconds: float
    error: str | None = None
    refused: bool = False

    @property
    def outcome(self) -> str:
        """`stopped`, `already_exited`, `dry_run`, `refused` or `failed`."""
        if self.result is not None:
            return self.result.value
        return "refused" if self.refused else "failed"


class Stopper(Protocol):
    """A way to stop a training job."""

    backend: str

    def stop(self, request: StopRequest) -> StopResult:
        """Stop the request's target; return when it is gone (or raise StopError)."""
        ...

    def probe(self, context: dict[str, str]) -> bool | None:
        """Whether the job's process (container) is alive; None when it cannot tell."""
        ...


class NoneStopper:
    """`backend: none` and `--dry-run`: every decision is made, nothing is signalled."""

    backend = "none"

    def stop(self, request: StopRequest) -> StopResult:
        del request
        return StopResult.DRY_RUN

    def probe(self, context: dict[str, str]) -> bool | None:
        del context
        return None


def write_marker(template: str, request: StopRequest) -> Path:
    """Write the decision evidence as JSON to the marker file, atomically; ValueError when a
    placeholder would lead the path out of its folder."""
    path = Path(render_path(template, request.context))
    decision = request.decision
    doc: dict[str, Any] = {
        "tuning_job": decision.tuning_job,
        "job": decision.job,
        "rule": decision.rule,
    }
    doc.update(decision.evidence())
    doc["early_stopped"] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle)
        handle.write("\n")
    os.replace(tmp, path)
    return path


OnResult = Callable[[StopOutcome], None]
OnFailure = Callable[[StopRequest, Exception], None]


class StopDispatcher:
    """Runs stops on worker threads so a slow stop never blocks parsing; retries with backoff.

    `submit` never blocks: a full queue is a counted failure. `on_result(outcome)` is called once
    per request (its result None when every attempt failed or the stop was refused);
    `on_failure` once per failed attempt.
    """

    def __init__(
        self,
        stopper: Stopper,
        *,
        on_result: OnResult,
        on_failure: OnFailure,
        marker: str | None = None,
        workers: int = 4,
        max_queue: int = 1024,
        attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
    ) -> None:
        self.stopper = stopper
        self.on_result = on_result
        self.on_failure = on_failure
        self.marker = marker
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._queue: queue.Queue[StopRequest | None] = queue.Queue(max_queue)
        self._closing = threading.Event()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._threads = [
            threading.Thread(target=self._work, name=f"stopper-{i}", daemon=True)
            for i in range(workers)
        ]
        self._started = False

    name = "stops"

    def start(self) -> None:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def stop(self, deadline: float) -> bool:
        return self.close(max(0.0, deadline - time.monotonic()))

    def submit(self, request: StopRequest) -> bool:
        """Queue a stop; False (and a counted failure) when the queue is full or closed. A stop
        refused so still has its outcome (`failed`): the job is not reported stopped."""
        self.start()
        if self._closing.is_set():
            error = StopError("sidecar is shutting down")
            self.on_failure(request, error)
            self.on_result(
                StopOutcome(request, None, time.monotonic() - request.decided_at, error=str(error))
            )
            return False
        with self._lock:
            self._in_flight += 1
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            with self._lock:
                self._in_flight -= 1
            error = StopError("stop queue is full")
            self.on_failure(request, error)
            self.on_result(
                StopOutcome(request, None, time.monotonic() - request.decided_at, error=str(error))
            )
            return False
        return True

    def _work(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                return
            try:
                self._run(request)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._idle.notify_all()

    def _run(self, request: StopRequest) -> None:
        if self.marker:
            try:
                write_marker(self.marker, request)
            except (OSError, ValueError) as exc:
                log.warning("stop_marker_failed", job=request.decision.job, error=str(exc))
        delay = self.backoff
        error: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                result = self.stopper.stop(request)
            except PermanentStopError as exc:
                self.on_failure(request, exc)
                error = exc
                break
            except Exception as exc:  # every failure is counted and retried; the daemon stays up
                self.on_failure(request, exc)
                error = exc
                if attempt == self.attempts or self._closing.wait(delay):
                    break
                delay = min(delay * 2, self.max_backoff)
                continue
            self.on_result(StopOutcome(request, result, time.monotonic() - request.decided_at))
            return
        self.on_result(
            StopOutcome(
                request,
                None,
                time.monotonic() - request.decided_at,
                error=str(error) if error is not None else None,
                refused=isinstance(error, StopRefusedError),
            )
        )

    def close(self, timeout: float) -> bool:
        """Finish in-flight stops for up to `timeout` seconds; True when all finished."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            done = self._in_flight == 0
        self._closing.set()
        if self._started:
            for _ in self._threads:
                with contextlib.suppress(queue.Full):  # busy workers end at their next request
                    self._queue.put_nowait(None)
        return done
