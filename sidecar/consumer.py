"""The one decider: a bounded queue from the sources, drained in order by the only thread that
decides, its batches handed to the write buffer.

Items of one job are handled in the order they came. A chunk whose regex timeouts spend their
slice is set aside and its rest parsed after the items already waiting, so one job's pathological
lines delay its own decisions, not everyone's; the job's later items wait behind that rest. When
the write buffer is full (a long store outage) no more items are taken: the queue fills and the
sources block, and nothing read is dropped.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import structlog

from sidecar.pipeline import Continuation, Item, Pipeline, item_key
from sidecar.writes import WriteBuffer

log = structlog.get_logger("sidecar")

QUEUE_ITEMS = 256
Work = Item | Continuation


class Inbox:
    """The bounded queue between the producers (sources, the writer, the stop reporter) and the
    consumer, made before either: `put` waits while it is full, which is the back-pressure."""

    def __init__(self, max_items: int = QUEUE_ITEMS) -> None:
        self.queue: queue.Queue[Item | None] = queue.Queue(max_items)
        self.closed = threading.Event()

    def put(self, item: Item, *, abandon: Callable[[], bool] = lambda: False) -> bool:
        """Hand an item on, waiting while the queue is full; False if `abandon()` says give up
        or the consumer has stopped."""
        while True:
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                if abandon() or self.closed.is_set():
                    return False


class Consumer:
    """Drains the inbox through the pipeline; its thread is the only decider."""

    name = "consumer"

    def __init__(self, inbox: Inbox, pipeline: Pipeline, writes: WriteBuffer) -> None:
        self.inbox = inbox
        self.queue = inbox.queue
        self.pipeline = pipeline
        self.writes = writes
        self.failed_items = 0
        self._closed = inbox.closed
        self._deferred: deque[Continuation] = deque()
        self._held: dict[tuple[str, str], deque[Item]] = {}
        self._turn = False  # whose turn it is: a waiting item (False) or a set-aside rest (True)
        self._thread = threading.Thread(target=self._run, name="consumer", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def put(self, item: Item, *, abandon: Callable[[], bool] = lambda: False) -> bool:
        return self.inbox.put(item, abandon=abandon)

    def stop(self, deadline: float) -> bool:
        return self.close(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float | None) -> bool:
        """No more items: the consumer handles what is queued and ends, within `timeout` seconds
        (None: however long it takes). True when it has; else it is told to stop where it is
        (what was not written is read again after a restart: nothing is lost)."""
        if not self._thread.is_alive():
            self._closed.set()
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._thread.is_alive():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                self.queue.put(None, timeout=0.2 if left is None else min(0.2, left))
                break
            except queue.Full:
                continue  # a full queue while the store is down: it may never drain
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._thread.join(left)
        self._closed.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)  # wakes a thread blocked on the queue to see `closed`
        self._thread.join(1.0)
        return not self._thread.is_alive()

    def drain(self) -> None:
        """After the thread has ended: handle what is still queued (the outcomes of the last
        stops), on the caller's thread."""
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._dispatch(item)
                while self._deferred:
                    self._dispatch(self._deferred.popleft())

    # the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._closed.is_set():
            if self.writes.full:
                self.writes.wait_room(0.2)  # back-pressure: take nothing until there is room
                continue
            work = self._next()
            if work is None:
                break
            if work is not False and not isinstance(work, bool):
                self._dispatch(work)
        # closing: what was set aside is already read: finish it
        while self._deferred and not self._closed.is_set():
            self._dispatch(self._deferred.popleft())

    def _next(self) -> Work | bool | None:
        """The next thing to do: a waiting item and a set-aside rest by turns; None at the end
        of the input, False when there is nothing yet."""
        if self._deferred and (self._turn or self.queue.empty()):
            self._turn = False
            return self._deferred.popleft()
        self._turn = True
        try:
            if self._deferred:
                return self.queue.get_nowait()
            # blocks: close() always leaves an item (None) or a full queue to wake it, so an
            # idle daemon's decider does not wake up to find nothing
            return self.queue.get()
        except queue.Empty:
            return False

    def _dispatch(self, work: Work) -> None:
        key = item_key(work)
        if not isinstance(work, Continuation) and key is not None and key in self._held:
            self._held[key].append(work)  # behind the job's set-aside rest
            return
        rest = self._handle(work)
        if rest is not None:
            self._held.setdefault(rest.key, deque())
            self._deferred.append(rest)
            return
        if isinstance(work, Continuation) and key is not None:
            self._release(key)

    def _release(self, key: tuple[str, str]) -> None:
        """A job's set-aside rest is done: its items that waited behind it, in order."""
        waiting = self._held.pop(key, deque())
        while waiting:
            rest = self._handle(waiting.popleft())
            if rest is not None:
                self._held[key] = waiting
                self._deferred.append(rest)
                return

    def _handle(self, work: Work) -> Continuation | None:
        """One item through the pipeline; an exception there (a bug) is logged, counted and
        the item skipped: no item may stop the decider."""
        try:
            if isinstance(work, Continuation):
                return self.pipeline.resume(work)
            return self.pipeline.handle(work)
        except Exception:
            self.failed_items += 1
            self.pipeline.telemetry.parse_errors.labels("item_failed").inc()
            log.exception("item_failed", item=type(work).__name__, key=item_key(work))
            return None
