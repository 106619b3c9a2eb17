"""The write buffer: the one place the daemon writes to its store, in order, on a thread of its own.

Decisions never wait on the store. The consumer hands each item's batch (its values, status changes
and the file offsets just past their lines) to the buffer and goes on; the writer commits batches
in the order they came, several per transaction when there is a backlog. While the store is down
the batches wait, retried with backoff; past `max_buffered_values` the consumer stops taking items
and the sources block (back-pressure): nothing read is ever dropped. An offset is only ever
committed with the values before it, so a crash during an outage re-reads what was not written
(nothing lost), and a retried write is an upsert of the same rows (nothing doubled).

A batch the store refuses as data (`StoreDataError`, or a bug raising something else) would fail
again however often it is retried: it is set apart, logged and counted, and the rest go on.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from sidecar.config import Objective
from sidecar.errors import StoreDataError, StoreError
from sidecar.store import Batch, ShadowDecision, Store
from sidecar.telemetry import Telemetry

log = structlog.get_logger("sidecar.writes")

FLUSH_MAX_VALUES = 20_000  # values per transaction when writing a backlog
BACKOFF = (0.1, 2.0)  # seconds: the first retry, and the longest wait between two


@dataclass(frozen=True, slots=True)
class Registered:
    """A job registered while the store was down, now given its real launch order."""

    tuning_job: str
    job: str
    order: int


OnRegistered = Callable[[Registered], object]


def merged(batches: Sequence[Batch]) -> Batch:
    """Several batches as one, one row per key, the latest winning: what applying them one by
    one would leave, and what a single multi-row upsert accepts."""
    values = {}
    offsets = {}
    updates = []
    registrations = []
    shadows: dict[tuple[str, str, str], ShadowDecision] = {}
    for batch in batches:
        for d in batch.shadows:
            shadows.setdefault((d.tuning_job, d.job, d.rule), d)  # a shadow decides once
        for v in batch.values:
            values[(v.tuning_job, v.job, v.metric, v.epoch)] = v
        for o in batch.offsets:
            offsets[(o.node, o.file_key)] = o
        updates.extend(batch.updates)
        registrations.extend(batch.registrations)
    return Batch(
        list(values.values()),
        updates,
        list(offsets.values()),
        registrations,
        list(shadows.values()),
    )


class WriteBuffer:
    """Batches not yet committed, oldest first, and the thread that commits them."""

    name = "writes"

    def __init__(
        self,
        store: Store,
        telemetry: Telemetry,
        *,
        max_values: int,
        objective: Objective,
        on_registered: OnRegistered | None = None,
        backoff: tuple[float, float] = BACKOFF,
    ) -> None:
        self.store = store
        self.objective = objective
        self.telemetry = telemetry
        self.max_values = max_values
        self.on_registered = on_registered
        self.backoff = backoff
        self.failing: str | None = None  # the last error while the store is down
        self._pending: deque[Batch] = deque()
        self._values = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    # the consumer's side ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def add(self, batch: Batch) -> None:
        """Queue a batch behind the others (never blocks: see `full`)."""
        if not batch:
            return
        with self._cond:
            self._pending.append(batch)
            self._values += len(batch.values)
            self.telemetry.buffered_values.set(self._values)
            self._cond.notify_all()

    @property
    def values(self) -> int:
        """Values waiting to be committed."""
        return self._values

    @property
    def full(self) -> bool:
        """Past the bound the consumer takes no more items, so the sources stop reading."""
        return self._values >= self.max_values

    @property
    def idle(self) -> bool:
        """Nothing waits to be written."""
        return not self._pending

    def wait_room(self, timeout: float) -> bool:
        """Wait until the buffer is not full (or `timeout`); True when it is not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.full and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return not self.full

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything queued is committed (or `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self, deadline: float) -> bool:
        return self.close(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float) -> bool:
        """Write what waits for up to `timeout` seconds, then stop the writer. True when every
        batch was committed; what was not is read again after a restart (its offsets were not
        committed), so nothing is lost either way."""
        written = self.wait_idle(timeout) if self._thread.is_alive() else self.idle
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(2.0)
        if not written:
            log.warning("writes_unfinished_at_shutdown", buffered_values=self._values)
        return written

    def flush(self) -> None:
        """Commit everything now, on the caller's thread (for a caller that has no writer
        thread: replay, tests). Raises StoreError when the store is down."""
        while self._pending:
            group = self._take()
            self._commit(group)
            self._done(group)

    # the writer's side -----------------------------------------------------------------------
    def _take(self) -> list[Batch]:
        group: list[Batch] = []
        size = 0
        for batch in self._pending:
            if group and size + len(batch.values) > FLUSH_MAX_VALUES:
                break
            group.append(batch)
            size += len(batch.values)
        return group

    def _done(self, group: list[Batch]) -> None:
        with self._cond:
            for batch in group:
                self._pending.popleft()
                self._values -= len(batch.values)
            self.telemetry.buffered_values.set(self._values)
            self._cond.notify_all()

    def _run(self) -> None:
        delay = self.backoff[0]
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                group = self._take()
            try:
                self._commit(group)
            except StoreError as exc:  # the store is down: wait, then the same batches again
                self.telemetry.store_write_failures.inc()
                if self.failing is None:
                    log.error("store_write_failed", error=str(exc), buffered_values=self._values)
                else:
                    log.debug("store_write_failed", error=str(exc), retry_in=delay)
                self.failing = str(exc)
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            self._done(group)
            if self.failing is not None:
                log.info("store_recovered", buffered_values=self._values)
            self.failing = None
            delay = self.backoff[0]

    def _commit(self, group: list[Batch]) -> None:
        """Commit a group in one transaction; set apart the batches the store refuses as data."""
        batch = merged(group)
        self._register(batch)
        try:
            self.store.apply(batch)
            return
        except StoreDataError:
            pass
        except StoreError:
            raise
        except Exception as exc:  # a bug must not look like an outage: find the batch it is in
            log.error("store_write_bug", error=f"{type(exc).__name__}: {exc}")
        for one in group:  # one transaction each: every batch the store accepts is kept
            try:
                self.store.apply(merged([one]))
            except StoreDataError as exc:
                self._reject(one, str(exc))
            except StoreError:
                raise
            except Exception as exc:
                self._reject(one, f"{type(exc).__name__}: {exc}")

    def _register(self, batch: Batch) -> None:
        """Jobs first seen while the store was down get their real launch order first."""
        for tuning_job in dict.fromkeys(tj for tj, _ in batch.registrations):
            self.store.ensure_tuning_job(tuning_job, self.objective)
        for tuning_job, job in batch.registrations:
            order = self.store.register_job(tuning_job, job)
            if self.on_registered is not None:
                self.on_registered(Registered(tuning_job, job, order))

    def _reject(self, batch: Batch, error: str) -> None:
        self.telemetry.store_rejected_batches.inc()
        jobs = sorted({f"{v.tuning_job}/{v.job}" for v in batch.values})
        log.error(
            "store_write_rejected",
            error=error,
            values=len(batch.values),
            updates=len(batch.updates),
            offsets=[o.path for o in batch.offsets],
            jobs=jobs[:10],
        )
