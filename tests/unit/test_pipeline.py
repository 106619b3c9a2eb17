"""The decision path on a real SQLite store: redrawn-bar values held across chunk ends, a
restart and the end of a job's log, and writes queued behind decisions in the write buffer
(flushed here on the test's thread: the writer's own thread is tested in tests/unit/test_writes.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sidecar.config import load_config
from sidecar.model import Chunk, JobEnded, JobStatus, Offset
from sidecar.pipeline import Pipeline
from sidecar.store import open_store
from sidecar.telemetry import Telemetry
from sidecar.writes import WriteBuffer
from tests.conftest import SAMPLE_LOGS

LIGHTNING = SAMPLE_LOGS / "lightning"
LOG = LIGHTNING / "01-sgd-lr0.10.log"


class Decisions(Pipeline):
    """A pipeline with its write buffer at hand: `flush` commits what it queued."""

    writes: WriteBuffer

    def flush(self) -> None:
        self.writes.flush()


def with_buffer(
    config: object, store_url: str, *, max_values: int = 100_000, **kwargs: object
) -> Decisions:
    from sidecar.config import Config

    assert isinstance(config, Config)
    store = open_store(store_url)
    telemetry = Telemetry()
    writes = WriteBuffer(store, telemetry, max_values=max_values, objective=config.objective)
    pipeline = Decisions(
        config,
        store,
        telemetry,
        submit_stop=lambda request: None,
        write=writes.add,
        **kwargs,  # type: ignore[arg-type]
    )
    pipeline.writes = writes
    return pipeline


def pipeline_for(store_url: str, *, max_values: int = 100_000) -> Decisions:
    config = load_config((LIGHTNING / "config.yaml").read_text(), env={})
    return with_buffer(config, store_url, max_values=max_values, dry_run=True)


def position(offset: int) -> Offset:
    return Offset(node="n", file_key="1:1", fingerprint="f", path=str(LOG), offset=offset)


def held_cuts(lines: list[bytes]) -> list[int]:
    """Line counts after which the parser holds a value."""
    from sidecar.lines import decode_line
    from sidecar.model import ParseCounts

    parser = pipeline_for("sqlite://:memory:").extractor.job_parser()
    cuts = []
    for n, raw in enumerate(lines, start=1):
        parser.feed(decode_line(raw.rstrip(b"\n")), ParseCounts())
        if parser.held():
            cuts.append(n)
    return cuts


def truth(metric: str) -> list[tuple[int, float]]:
    doc = json.loads((LIGHTNING / f"{LOG.stem}.truth.json").read_text())
    return [(int(e), float(v)) for e, v in doc["series"][metric]]


def stored(pipeline: Pipeline, metric: str) -> list[tuple[int, float]]:
    job = pipeline.store.load_job("sample-lightning", LOG.stem)
    assert job is not None
    return job.values.get(metric, [])


def close_to(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return [e for e, _ in a] == [e for e, _ in b] and all(
        math.isclose(x, y, rel_tol=0, abs_tol=5e-4) for (_, x), (_, y) in zip(a, b, strict=True)
    )


class TestRedrawnBars:
    def test_the_last_epochs_held_value_is_stored_when_the_log_ends(self, tmp_path: Path) -> None:
        """Lightning's tqdm bar: the last epoch's val_loss settles only at the end of the log,
        which for the daemon is the job's end."""
        pipeline = pipeline_for(f"sqlite://{tmp_path / 'h.db'}")
        lines = LOG.read_bytes().splitlines(keepends=True)
        pipeline.handle(
            Chunk("sample-lightning", LOG.stem, lines, 0.0, position(len(b"".join(lines))))
        )
        pipeline.flush()
        assert len(stored(pipeline, "val_loss")) == len(truth("val_loss")) - 1
        pipeline.handle(JobEnded("sample-lightning", LOG.stem, JobStatus.COMPLETED, "file deleted"))
        pipeline.flush()
        assert close_to(stored(pipeline, "val_loss"), truth("val_loss"))

    @pytest.mark.parametrize("which", ["first", "last"])
    def test_a_value_held_at_a_restart_is_not_lost(self, tmp_path: Path, which: str) -> None:
        """The offset is committed past lines whose value is still held: the held value is saved
        with it and restored, so the series after a restart equals the uninterrupted one. The
        restart comes right after the first line that leaves a value held (and the last)."""
        lines = LOG.read_bytes().splitlines(keepends=True)
        held_after = held_cuts(lines)
        assert held_after, "the tqdm bar holds values across lines"
        n = held_after[0] if which == "first" else held_after[-1]
        url = f"sqlite://{tmp_path / 'h.db'}"
        first = pipeline_for(url)
        first.handle(
            Chunk("sample-lightning", LOG.stem, lines[:n], 0.0, position(len(b"".join(lines[:n]))))
        )
        first.flush()
        saved = first.store.offsets("n")["1:1"]
        first.store.close()

        second = pipeline_for(url)
        resume = dict(saved.state)
        rest = lines[n:]
        second.handle(
            Chunk(
                "sample-lightning",
                LOG.stem,
                rest,
                0.0,
                position(len(b"".join(lines))),
                resume=resume,
            )
        )
        second.handle(JobEnded("sample-lightning", LOG.stem, JobStatus.COMPLETED, "file deleted"))
        second.flush()
        assert close_to(stored(second, "val_loss"), truth("val_loss"))


class TestQueuedWrites:
    def test_nothing_is_written_before_flush_and_everything_after(self, tmp_path: Path) -> None:
        """Handling decides and queues; `flush` commits the queue in order, values with offsets."""
        pipeline = pipeline_for(f"sqlite://{tmp_path / 'h.db'}")
        lines = LOG.read_bytes().splitlines(keepends=True)
        pipeline.handle(Chunk("sample-lightning", LOG.stem, lines, 0.0, position(12345)))
        assert pipeline.writes.values > 0
        assert pipeline.store.offsets("n") == {}
        pipeline.flush()
        assert pipeline.writes.values == 0
        assert pipeline.store.offsets("n")["1:1"].offset == 12345
        assert stored(pipeline, "val_loss")

    def test_the_buffer_is_full_at_max_buffered_values(self, tmp_path: Path) -> None:
        pipeline = pipeline_for(f"sqlite://{tmp_path / 'h.db'}", max_values=3)
        lines = LOG.read_bytes().splitlines(keepends=True)
        pipeline.handle(Chunk("sample-lightning", LOG.stem, lines, 0.0, position(1)))
        assert pipeline.writes.full
        pipeline.flush()
        assert not pipeline.writes.full


class TestStoppedJobsStayAsDecided:
    CONFIG = """
tuning_job: t
objective: {metric: loss, type: Minimize}
metric_definitions: [{Name: loss, Regex: 'loss=([0-9.]+)'}]
epoch: {regex: 'epoch=(\\d+)'}
early_stopping: {min_jobs: 2, start_epoch: 2}
"""

    def feed(self, pipeline: Decisions, job: str, text: str) -> None:
        lines = [line.encode() + b"\n" for line in text.split(";")]
        pipeline.handle(Chunk("t", job, lines, 0.0))
        pipeline.handle(JobEnded("t", job, JobStatus.COMPLETED, "done"))
        pipeline.flush()

    def test_values_resent_after_the_stop_change_nothing(self) -> None:
        """A stopped job that prints earlier epochs again (a restarted container, a retry) keeps
        the history its decision was made on: the later job is judged as `replay` judges it."""
        config = load_config(self.CONFIG, env={})
        pipeline = with_buffer(config, "sqlite://:memory:")
        self.feed(pipeline, "a", "epoch=1 loss=1.0;epoch=2 loss=0.8")
        self.feed(pipeline, "b", "epoch=1 loss=0.9;epoch=2 loss=0.7")
        self.feed(
            pipeline, "c", "epoch=1 loss=1.2;epoch=2 loss=1.1;epoch=1 loss=0.1;epoch=2 loss=0.1"
        )
        self.feed(pipeline, "d", "epoch=1 loss=0.5;epoch=2 loss=0.4")
        self.feed(pipeline, "p", "epoch=1 loss=0.7;epoch=2 loss=0.7")
        jobs = {j.name: j for j in pipeline.store.load_jobs("t")}
        assert jobs["c"].decision is not None and jobs["c"].decision.epoch == 2
        assert jobs["c"].values["loss"] == [(1, 1.2), (2, 1.1)]
        assert jobs["p"].decision is None  # median of a, b, c, d at epoch 2: 0.85
        assert pipeline.engines["t"].jobs["c"].history.values == {1: 1.2, 2: 1.1}
