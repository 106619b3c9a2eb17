"""The write buffer in-process: batches committed in order on the writer's thread, retried with
backoff while the store is down, bounded (back-pressure), a batch the store refuses as data set
apart, jobs registered while the store was down given their real launch order.

The store is a real in-memory SQLite store behind `FlakyStoreFake`, a fake that can be told to be
down or to refuse a batch: an outage cannot be made on demand for SQLite otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from sidecar.config import Objective
from sidecar.errors import StoreDataError, StoreError
from sidecar.model import JobStatus, Offset
from sidecar.store import Batch, JobUpdate, ValueRow, open_store
from sidecar.store.sqlite import SqliteStore
from sidecar.telemetry import Telemetry
from sidecar.writes import Registered, WriteBuffer, merged
from tests.helpers import wait_for

OBJECTIVE = Objective(metric="loss")


class FlakyStoreFake:
    """A real SQLite store that can be made to fail: `down` (every call raises StoreError, as an
    unreachable server does) or `poison` (applying a batch holding that value raises
    StoreDataError, as a store refusing the data does). Counts the transactions applied."""

    def __init__(self) -> None:
        real = open_store("sqlite://:memory:")
        assert isinstance(real, SqliteStore)
        self.real = real
        self.url = real.url
        self.down = threading.Event()
        self.poison: float | None = None
        self.applied: list[Batch] = []
        self.attempts = 0

    def _check(self) -> None:
        if self.down.is_set():
            raise StoreError("store 'fake': connection refused")

    def apply(self, batch: Batch) -> None:
        self.attempts += 1
        self._check()
        if self.poison is not None and any(v.value == self.poison for v in batch.values):
            raise StoreDataError("store 'fake': value out of range")
        self.real.apply(batch)
        self.applied.append(batch)

    def register_job(self, tuning_job: str, job: str) -> int:
        self._check()
        return self.real.register_job(tuning_job, job)

    def ensure_tuning_job(self, name: str, objective: Objective) -> None:
        self._check()
        self.real.ensure_tuning_job(name, objective)

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def values(job: str, *epochs: int) -> list[ValueRow]:
    return [ValueRow("t", job, "loss", e, 1.0 / e) for e in epochs]


@pytest.fixture
def store() -> Iterator[FlakyStoreFake]:
    fake = FlakyStoreFake()
    fake.real.ensure_tuning_job("t", OBJECTIVE)
    for job in ("a", "b"):
        fake.real.register_job("t", job)
    yield fake
    fake.real.close()


def buffer(store: FlakyStoreFake, *, max_values: int = 1000, **kwargs: object) -> WriteBuffer:
    return WriteBuffer(
        store,  # type: ignore[arg-type]
        Telemetry(CollectorRegistry()),
        max_values=max_values,
        objective=OBJECTIVE,
        backoff=(0.01, 0.05),
        **kwargs,  # type: ignore[arg-type]
    )


def stored(store: FlakyStoreFake, job: str) -> list[tuple[int, float]]:
    found = store.real.load_job("t", job)
    return found.values.get("loss", []) if found else []


class TestMerged:
    def test_the_latest_row_per_key_wins_and_offsets_are_the_last(self) -> None:
        """What applying the batches one by one leaves: one row per key, the latest."""
        first = Batch(values=[ValueRow("t", "a", "loss", 1, 1.0)], offsets=[offset(10)])
        second = Batch(values=[ValueRow("t", "a", "loss", 1, 2.0)], offsets=[offset(20)])
        both = merged([first, second])
        assert [v.value for v in both.values] == [2.0]
        assert [o.offset for o in both.offsets] == [20]


def offset(at: int) -> Offset:
    return Offset("n", "1:1", "fp", "/logs/a.log", at)


class TestWriteBuffer:
    def test_batches_are_committed_in_order_on_the_writer_thread(
        self, store: FlakyStoreFake
    ) -> None:
        """Added batches reach the store in the order they came; `values` counts the backlog."""
        writes = buffer(store)
        writes.start()
        try:
            for epoch in range(1, 6):
                writes.add(Batch(values=values("a", epoch), offsets=[offset(epoch)]))
            assert writes.wait_idle(10)
            assert stored(store, "a") == [(e, 1.0 / e) for e in range(1, 6)]
            assert store.real.offsets("n")["1:1"].offset == 5
            assert writes.values == 0
        finally:
            writes.close(5)

    def test_while_the_store_is_down_batches_wait_and_are_written_after(
        self, store: FlakyStoreFake
    ) -> None:
        """An outage: every attempt fails and is retried with backoff, `failing` says why, the
        failures are counted; once the store is back every batch is written, once."""
        writes = buffer(store)
        store.down.set()
        writes.start()
        try:
            writes.add(Batch(values=values("a", 1, 2)))
            writes.add(Batch(values=values("a", 3)))
            wait_for(lambda: store.attempts >= 3, what="retries")
            assert writes.failing is not None and "connection refused" in writes.failing
            assert writes.values == 3
            failures = writes.telemetry.registry.get_sample_value(
                "early_stopping_store_write_failures_total"
            )
            assert failures is not None and failures >= 3
            store.down.clear()
            assert writes.wait_idle(10)
            assert stored(store, "a") == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
            assert writes.failing is None
        finally:
            writes.close(5)

    def test_full_at_max_values_and_room_again_once_written(self, store: FlakyStoreFake) -> None:
        """Past `max_buffered_values` the buffer is full (the consumer stops taking items);
        `wait_room` returns once the writer has caught up."""
        writes = buffer(store, max_values=3)
        store.down.set()
        writes.start()
        try:
            writes.add(Batch(values=values("a", 1, 2, 3)))
            assert writes.full
            assert not writes.wait_room(0.05)
            store.down.clear()
            assert writes.wait_room(10)
            assert not writes.full
        finally:
            writes.close(5)

    def test_a_batch_the_store_refuses_as_data_is_set_apart_not_retried(
        self, store: FlakyStoreFake
    ) -> None:
        """One batch holds a value the store refuses: it is logged and counted, never retried
        as if the store were down, and every other batch is still committed."""
        writes = buffer(store)
        store.poison = 0.5
        writes.add(Batch(values=values("a", 1)))
        writes.add(Batch(values=values("a", 2)))  # 1/2 == 0.5: refused
        writes.add(Batch(values=values("b", 3)))
        writes.flush()
        assert stored(store, "a") == [(1, 1.0)]
        assert stored(store, "b") == [(3, 1 / 3)]
        assert writes.values == 0
        rejected = writes.telemetry.registry.get_sample_value(
            "early_stopping_store_rejected_batches_total"
        )
        assert rejected == 1

    def test_a_bug_in_a_write_is_not_taken_for_an_outage(self, store: FlakyStoreFake) -> None:
        """An unexpected exception (not a StoreError) sets that batch apart too."""
        writes = buffer(store)
        original = store.real.apply

        def broken(batch: Batch) -> None:
            if any(v.epoch == 7 for v in batch.values):
                raise OverflowError("Python int too large to convert to SQLite INTEGER")
            original(batch)

        store.real.apply = broken  # type: ignore[method-assign]
        writes.add(Batch(values=values("a", 7)))
        writes.add(Batch(values=values("a", 8)))
        writes.flush()
        assert stored(store, "a") == [(8, 1 / 8)]

    def test_jobs_registered_while_down_get_their_order_when_the_store_is_back(
        self, store: FlakyStoreFake
    ) -> None:
        """A registration queued during an outage is made first when the store answers, and
        its real launch order is handed back."""
        got: list[Registered] = []
        writes = buffer(store, on_registered=got.append)
        store.down.set()
        writes.start()
        try:
            writes.add(Batch(registrations=[("t", "c")]))
            writes.add(
                Batch(
                    values=values("c", 1),
                    updates=[JobUpdate("t", "c", JobStatus.RUNNING)],
                )
            )
            wait_for(lambda: store.attempts >= 1 or writes.failing, what="a failed attempt")
            store.down.clear()
            assert writes.wait_idle(10)
        finally:
            writes.close(5)
        assert got == [Registered("t", "c", 3)]  # after a and b
        assert stored(store, "c") == [(1, 1.0)]

    def test_close_is_bounded_while_the_store_is_down(self, store: FlakyStoreFake) -> None:
        """Shutdown during an outage: `close` gives up at its timeout (False), it does not
        hang; what was not written is read again after a restart."""
        writes = buffer(store)
        store.down.set()
        writes.start()
        writes.add(Batch(values=values("a", 1)))
        assert writes.close(0.3) is False
        assert not writes._thread.is_alive()
