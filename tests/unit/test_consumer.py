"""The decider's queue: items of one job in order, a chunk whose regex timeouts spend their slice
set aside behind the other jobs' items, back-pressure while the write buffer is full, and an item
whose handling raises skipped and counted, never the end of the decider.

A real pipeline, real regex timeouts (a catastrophic pattern on real lines), a real SQLite store
behind the write buffer; batches are recorded as the pipeline hands them on.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.config import Config, load_config
from sidecar.consumer import Consumer, Inbox
from sidecar.model import Chunk, Offset
from sidecar.pipeline import Pipeline
from sidecar.store import Batch, open_store
from sidecar.telemetry import Telemetry
from sidecar.writes import WriteBuffer
from tests.helpers import wait_for

# `(a|a)+y=` on a run of a's not followed by `y=` backtracks exponentially: every such line runs
# into the regex timeout (the line holds a `y=` further on, so the literal gate lets it through)
SLOW_LINE = b"a" * 40 + b"! y=1"
CONFIG = """
tuning_job: t
objective: {metric: loss}
metric_definitions:
  - {Name: loss, Regex: 'loss=([0-9.]+)'}
  - {Name: slow, Regex: '(a|a)+y=([0-9.]+)'}
early_stopping: {type: Off}
regex_timeout_seconds: 0.02
"""


def position(job: str, offset: int) -> Offset:
    return Offset("n", f"1:{job}", "fp", f"/logs/{job}.log", offset)


class Recorder:
    """The batches the pipeline hands on, in order, before they reach the write buffer."""

    def __init__(self, writes: WriteBuffer) -> None:
        self.writes = writes
        self.order: list[str] = []

    def __call__(self, batch: Batch) -> None:
        for offset in batch.offsets:
            self.order.append(offset.path.rsplit("/", 1)[-1].removesuffix(".log"))
        self.writes.add(batch)


@pytest.fixture
def config() -> Config:
    return load_config(CONFIG, env={})


@pytest.fixture
def parts(config: Config) -> Iterator[tuple[Consumer, Recorder, WriteBuffer]]:
    store = open_store("sqlite://:memory:")
    telemetry = Telemetry()
    writes = WriteBuffer(store, telemetry, max_values=100_000, objective=config.objective)
    recorder = Recorder(writes)
    pipeline = Pipeline(config, store, telemetry, submit_stop=lambda request: None, write=recorder)
    pipeline.engine("t")
    consumer = Consumer(Inbox(), pipeline, writes)
    yield consumer, recorder, writes
    consumer.close(10)
    writes.close(10)
    store.close()


class TestHeadOfLineBlocking:
    def test_another_jobs_chunk_is_decided_between_a_slow_chunks_slices(
        self, parts: tuple[Consumer, Recorder, WriteBuffer]
    ) -> None:
        """50 lines that each hit the regex timeout in job `slow`, then job `fast`'s chunk:
        `fast` is handled before `slow`'s chunk is finished (it used to wait 50 timeouts), and
        `slow`'s later chunk still comes after its first one."""
        consumer, recorder, writes = parts
        slow = [SLOW_LINE] * 50 + [b"loss=0.5"]
        consumer.put(Chunk("t", "slow", slow, 0.0, position("slow", 100)))
        consumer.put(Chunk("t", "fast", [b"loss=0.4"], 0.0, position("fast", 9)))
        consumer.put(Chunk("t", "slow", [b"loss=0.3"], 0.0, position("slow", 200)))
        consumer.start()
        wait_for(lambda: len(recorder.order) == 3, 60, what="three chunks handled")
        assert recorder.order == ["fast", "slow", "slow"]
        writes.flush()  # the writer thread is not started in these tests
        stored = consumer.pipeline.store.load_job("t", "slow")
        assert stored is not None and stored.values["loss"] == [(1, 0.5), (2, 0.3)]
        timeouts = consumer.pipeline.telemetry.registry.get_sample_value(
            "early_stopping_regex_timeouts_total", {"metric": "slow"}
        )
        assert timeouts == 50


class TestBackPressure:
    def test_no_item_is_taken_while_the_write_buffer_is_full(
        self, parts: tuple[Consumer, Recorder, WriteBuffer]
    ) -> None:
        """A full buffer (the store down) stops the decider taking items: they stay queued."""
        consumer, recorder, writes = parts
        writes.max_values = 1
        consumer.put(Chunk("t", "a", [b"loss=0.5", b"loss=0.4"], 0.0, position("a", 10)))
        consumer.put(Chunk("t", "b", [b"loss=0.3"], 0.0, position("b", 10)))
        consumer.start()  # the writer is not started: nothing leaves the buffer
        wait_for(lambda: recorder.order == ["a"], 30, what="the first chunk handled")
        assert consumer.queue.qsize() == 1  # b waits in the queue, not handled
        assert writes.full


class TestFailures:
    def test_an_item_that_raises_is_counted_and_the_decider_goes_on(
        self, parts: tuple[Consumer, Recorder, WriteBuffer]
    ) -> None:
        """A bug met by one item is logged and counted (`item_failed`); the next is handled."""
        consumer, recorder, _ = parts
        original = consumer.pipeline.handle
        calls = {"n": 0}

        def broken(item: object) -> object:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("a bug")
            return original(item)  # type: ignore[arg-type]

        consumer.pipeline.handle = broken  # type: ignore[method-assign]
        consumer.put(Chunk("t", "a", [b"loss=0.5"], 0.0, position("a", 9)))
        consumer.put(Chunk("t", "b", [b"loss=0.4"], 0.0, position("b", 9)))
        consumer.start()
        wait_for(lambda: recorder.order == ["b"], 30, what="the next item handled")
        assert consumer.failed_items == 1
        assert consumer.alive


class TestClosing:
    def test_an_idle_decider_ends_when_closed(
        self, parts: tuple[Consumer, Recorder, WriteBuffer]
    ) -> None:
        """The decider blocks on an empty queue (no polling while idle); closing wakes it."""
        consumer, _, _ = parts
        consumer.start()
        assert consumer.close(10)
        assert not consumer.alive

    def test_a_decider_told_to_stop_at_once_is_woken_to_see_it(
        self, parts: tuple[Consumer, Recorder, WriteBuffer]
    ) -> None:
        """No time left to queue the end marker: `closed` is set and the blocked thread woken."""
        consumer, _, _ = parts
        consumer.start()
        consumer.close(0)
        wait_for(lambda: not consumer.alive, 30, what="the decider ended")
