"""One wiring for every command that decides (`run`, `exec`, `demo`): consumers before
producers, no placeholder patched in later, and the parts kept in the order they started.

The order is the design (docs/design.md, "Architecture"): the store and the write buffer first,
then the stop dispatcher, then the consumer that feeds them, then whatever reads logs. Shutdown
walks it backwards: inputs stop, the consumer drains what was read, in-flight stops finish (their
outcomes handled), the writes are committed, the store closed; the HTTP server goes last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from sidecar.config import Config
from sidecar.consumer import Consumer, Inbox
from sidecar.pipeline import Pipeline, Publish
from sidecar.stoppers import StopDispatcher, Stopper
from sidecar.store import Store
from sidecar.telemetry import StopReporter, Telemetry
from sidecar.writes import WriteBuffer

log = structlog.get_logger("sidecar")


class Part(Protocol):
    """Something the daemon starts and, in reverse order, stops."""

    name: str

    def start(self) -> None: ...

    def stop(self, deadline: float) -> bool:
        """Stop by `deadline` (monotonic seconds); True when it did."""
        ...


class Parts:
    """The started parts, in order; `stop` stops them in reverse, each within the deadline."""

    def __init__(self) -> None:
        self.started: list[Part] = []

    def start(self, part: Part) -> None:
        part.start()
        self.started.append(part)

    def stop(self, deadline: float) -> bool:
        clean = True
        while self.started:
            part = self.started.pop()
            try:
                done = part.stop(deadline)
            except Exception:  # one part failing to stop must not keep the others running
                log.exception("stop_failed", part=part.name)
                done = False
            if not done:
                clean = False
                log.warning("part_not_stopped_in_time", part=part.name)
        return clean


@dataclass(slots=True)
class Callback:
    """A part that is only a stop step (closing the store, draining the last outcomes)."""

    name: str
    on_stop: Callable[[], object]

    def start(self) -> None:
        pass

    def stop(self, deadline: float) -> bool:
        del deadline
        self.on_stop()
        return True


@dataclass(slots=True)
class Decider:
    """The decision path and what it feeds, assembled."""

    telemetry: Telemetry
    writes: WriteBuffer
    dispatcher: StopDispatcher
    pipeline: Pipeline
    consumer: Consumer


def assemble(
    config: Config,
    *,
    store: Store,
    stopper: Stopper,
    telemetry: Telemetry,
    parts: Parts,
    backend: str,
    dry_run: bool,
    shared_store: bool,
    publish: Publish | None = None,
) -> Decider:
    """Build and start the decision path on `store`, adding each part to `parts`."""
    inbox = Inbox()  # the consumer's queue first: every feedback path below puts into it
    writes = WriteBuffer(
        store,
        telemetry,
        max_values=config.max_buffered_values,
        objective=config.objective,
        on_registered=inbox.put,
    )
    reporter = StopReporter(telemetry, backend=backend, forward=inbox.put)
    dispatcher = StopDispatcher(
        stopper, on_result=reporter.finished, on_failure=reporter.failed, marker=config.stop.marker
    )
    pipeline = Pipeline(
        config,
        store,
        telemetry,
        submit_stop=dispatcher.submit,
        write=writes.add,
        dry_run=dry_run,
        shared_store=shared_store,
        store_failing=lambda: writes.failing is not None,
        publish=publish,
    )
    consumer = Consumer(inbox, pipeline, writes)
    parts.start(Callback("store", store.close))
    parts.start(writes)
    parts.start(Callback("last-outcomes", consumer.drain))
    parts.start(dispatcher)
    parts.start(consumer)
    return Decider(telemetry, writes, dispatcher, pipeline, consumer)


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds
