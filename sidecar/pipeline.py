"""The one consumer: chunks of lines → samples → the rule → stop requests, store writes, telemetry.

Every decision is made here, on one thread, so there are no races between jobs. Stops go to the
dispatcher's threads and never block parsing. Each chunk becomes one batch: its values, status
changes and the file offset just past its last line, committed in one transaction. Batches queue
in `pending` and are written in order by `flush`: while the store is unreachable decisions go on
from memory, and since an offset is only ever committed with the values before it, a crash during
an outage re-reads what was not written (nothing lost), and a retried write is an upsert of the
same rows (nothing doubled).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import structlog

from sidecar.config import Config
from sidecar.decode import decode_line
from sidecar.engine import TuningJobEngine
from sidecar.errors import StoreError
from sidecar.model import (
    Chunk,
    Decision,
    FilePosition,
    JobEnded,
    JobStatus,
    ParseCounts,
    Sample,
    StopFinished,
)
from sidecar.parse import Extractor, JobParser
from sidecar.stoppers import StopOutcome, StopRequest, StopResult, template_context
from sidecar.store import Batch, FileOffset, JobUpdate, Store, StoredJob, ValueRow
from sidecar.telemetry import JobSnapshot, Telemetry

log = structlog.get_logger("sidecar")

SubmitStop = Callable[[StopRequest], object]
Feedback = Callable[[StopFinished], object]

# a decision at epoch e on a read that also held epochs past e + this: the job's output reached
# the log long after it was printed (block-buffered stdout)
BUFFERED_EPOCHS = 1

FLUSH_MAX_VALUES = 20_000  # values per transaction when writing a backlog


# `<job>~<n>`: the n-th attempt of a job whose log restarted from nothing after it had ended
ATTEMPT_SEPARATOR = "~"


@dataclass(slots=True)
class JobRuntime:
    """What the consumer keeps per live job besides the engine's state."""

    parser: JobParser
    log_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    name: str = ""  # the name its source gives (`{job}` in stop templates); the job's key may
    # carry an attempt number besides


class Pipeline:
    """Samples to decisions for every tuning job this sidecar sees."""

    def __init__(
        self,
        config: Config,
        store: Store,
        telemetry: Telemetry,
        *,
        submit_stop: SubmitStop,
        backend: str,
        dry_run: bool = False,
        shared_store: bool = False,
    ) -> None:
        self.config = config
        self.store = store
        self.telemetry = telemetry
        self.submit_stop = submit_stop
        self.backend = backend
        self.dry_run = dry_run
        self.shared_store = (
            shared_store  # other processes write this tuning job: refresh before deciding
        )
        self.extractor = Extractor(
            config.all_definitions(), config.epoch_config(), timeout=config.regex_timeout_seconds
        )
        self.engines: dict[str, TuningJobEngine] = {}
        self.runtimes: dict[tuple[str, str], JobRuntime] = {}
        self.local_jobs: set[tuple[str, str]] = set()
        # (tuning job, name from the source) -> the job key its lines go to now: the name, or
        # `name~n` once the same name has run again after ending
        self.current: dict[tuple[str, str], str] = {}
        self.cursors: dict[str, int] = {}  # per tuning job: the store's write cursor seen last
        self.pending: deque[Batch] = deque()  # batches not yet committed, oldest first
        self.pending_values = 0
        self.refresh_failing = False
        self.feedback: Feedback | None = None  # where stop outcomes go (the consumer's queue)
        self.lock = threading.Lock()  # held while handling an item; scrapes take it for a snapshot

    # state ---------------------------------------------------------------------------------
    def engine(self, tuning_job: str) -> TuningJobEngine:
        engine = self.engines.get(tuning_job)
        if engine is None:
            self.store.ensure_tuning_job(tuning_job, self.config.objective)
            engine = TuningJobEngine(
                tuning_job, self.config.objective, self.config.early_stopping, dry_run=self.dry_run
            )
            self._restore(engine)  # may fail: then the engine is not kept and is built again
            self.engines[tuning_job] = engine
        return engine

    def _restore(self, engine: TuningJobEngine) -> None:
        """Bring in what the store has that this process did not write: the whole history at
        start (a restart), then only what other processes changed since (shared stores)."""
        metric = self.config.objective.metric
        since = self.cursors.get(engine.name, 0)
        self.cursors[engine.name], changed = self.store.changes(engine.name, metric, since)
        self._merge(engine, changed)

    def _refresh(self, engine: TuningJobEngine) -> None:
        """Before a decision on a shared store: others' latest values. When the store cannot be
        reached the decision is made on the history known so far rather than not at all."""
        try:
            self._restore(engine)
        except StoreError as exc:
            if not self.refresh_failing:
                log.warning("history_refresh_failed", tuning_job=engine.name, error=str(exc))
            self.refresh_failing = True
        else:
            self.refresh_failing = False

    def _merge(self, engine: TuningJobEngine, changed: list[StoredJob]) -> None:
        metric = self.config.objective.metric
        for stored in changed:
            if (engine.name, stored.name) in self.local_jobs:
                continue
            engine.restore(
                stored.name,
                stored.order,
                stored.status,
                stored.values.get(metric, []),
                stored.decision,
            )

    def job_key(
        self, tuning_job: str, name: str, *, fresh: bool, resume: dict[str, object] | None = None
    ) -> str:
        """The job a source's lines for `name` belong to.

        A log that starts from nothing (`fresh`: a new file or one truncated, a new container,
        a new `exec`) for a job that has ended is a rerun under the same name: a new attempt,
        `name~2`, `name~3`, ..., launched now, with a history of its own. Reruns are counted and
        each one logged. After a restart the attempt a file fed is in its stored state."""
        stored_key = (resume or {}).get("job")
        if isinstance(stored_key, str) and stored_key:
            self.current[(tuning_job, name)] = stored_key
            return stored_key
        key = self.current.get((tuning_job, name), name)
        if not fresh:
            return key
        engine = self.engine(tuning_job)
        state = engine.jobs.get(key)
        if state is None or state.status is JobStatus.RUNNING:
            return key
        attempt = 2
        while f"{name}{ATTEMPT_SEPARATOR}{attempt}" in engine.jobs:
            attempt += 1
        rerun = f"{name}{ATTEMPT_SEPARATOR}{attempt}"
        self.current[(tuning_job, name)] = rerun
        self.telemetry.job_reruns.labels(tuning_job).inc()
        log.warning(
            "job_rerun",
            tuning_job=tuning_job,
            job=name,
            attempt=rerun,
            earlier_status=state.status.value,
            hint=f"job {name!r} of tuning job {tuning_job!r} had ended ({state.status.value}) "
            f"and its log started again from nothing: recorded as a new job {rerun!r}, compared "
            "with every earlier one; give each sweep its own tuning_job to keep them apart",
        )
        return rerun

    def register(
        self,
        tuning_job: str,
        job: str,
        *,
        log_path: str = "",
        resume: dict[str, object] | None = None,
        name: str | None = None,
    ) -> JobRuntime:
        """The job's runtime; registers it (its launch order) at its first line. `name` is what
        its source calls it when `job` is an attempt's key (`name~2`)."""
        key = (tuning_job, job)
        runtime = self.runtimes.get(key)
        if runtime is not None:
            return runtime
        engine = self.engine(tuning_job)
        # store reads first: if one fails nothing has changed, and the item is simply retried
        order = self.store.register_job(tuning_job, job)
        stored = self.store.load_job(tuning_job, job)
        state = engine.register(job, order)
        counts: dict[str, int] = {}
        if stored is not None:  # a restart: ordinal epochs carry on from what is stored
            counts = {m: max(e for e, _ in series) for m, series in stored.values.items() if series}
            state.status = stored.status
        last_epoch = (resume or {}).get("last_epoch")
        held = (resume or {}).get("held")
        runtime = JobRuntime(
            self.extractor.new_job(
                counts=counts,
                last_epoch=last_epoch if isinstance(last_epoch, int) else None,
                held=held if isinstance(held, list) else (),
            ),
            log_path=log_path,
            name=name or job,
        )
        self.runtimes[key] = runtime
        self.local_jobs.add(key)
        log.info(
            "job_registered",
            tuning_job=tuning_job,
            job=job,
            order=order,
            status=state.status.value,
            log_path=log_path or None,
        )
        return runtime

    # items ---------------------------------------------------------------------------------
    def handle(self, item: Chunk | JobEnded | StopFinished) -> None:
        with self.lock:
            if isinstance(item, JobEnded):
                self._end(item)
            elif isinstance(item, StopFinished):
                self._stop_finished(item)
            else:
                self._chunk(item)

    def _chunk(self, chunk: Chunk) -> None:
        position = chunk.position
        held = position is not None and bool(position.resume.get("held"))
        resume = position.resume if position else None
        name = chunk.job
        current = self.current.get((chunk.tuning_job, name), name)
        if not chunk.lines and not held and (chunk.tuning_job, current) not in self.runtimes:
            # no line yet to register the job at: just move the offset
            if position is not None:
                self._write(Batch(offsets=[self._offset(position, None, current, name)]))
            return
        job = self.job_key(
            chunk.tuning_job,
            name,
            fresh=bool(chunk.lines) and position is not None and position.fresh,
            resume=resume,
        )
        runtime = self.register(
            chunk.tuning_job, job, log_path=chunk.log_path, resume=resume, name=name
        )
        if chunk.log_path:
            runtime.log_path = chunk.log_path
        if chunk.labels:
            runtime.labels = chunk.labels
        engine = self.engines[chunk.tuning_job]
        state = engine.jobs[job]
        batch = Batch()
        if (
            chunk.lines
            and state.status in (JobStatus.COMPLETED, JobStatus.FAILED)
            and state.decision is None
        ):
            state.status = JobStatus.RUNNING  # an idle job that speaks again is running again
            batch.updates.append(JobUpdate(chunk.tuning_job, job, JobStatus.RUNNING))
        counts = ParseCounts()
        parser = runtime.parser
        decided = state.decision is not None
        for raw in self.extractor.candidates(chunk.lines):
            samples = parser.feed(decode_line(raw), counts)
            if samples:
                self._samples(engine, job, runtime, samples, batch, read_at=chunk.read_at)
        if not decided and state.decision is not None:
            self._warn_if_buffered(state.decision, batch)
        if position is not None:
            batch.offsets.append(self._offset(position, parser, job, name))
        self._write(batch)
        self._count(chunk, counts)

    # writes --------------------------------------------------------------------------------
    def _write(self, batch: Batch) -> None:
        if batch:
            self.pending.append(batch)
            self.pending_values += len(batch.values)
            self.telemetry.buffered_values.set(self.pending_values)

    def buffer_full(self) -> bool:
        """Past the bound the consumer takes no more items, so the sources stop reading."""
        return self.pending_values >= self.config.max_buffered_values

    def flush(self) -> None:
        """Commit the pending batches in order, several per transaction when there is a
        backlog. Raises StoreError, keeping every batch not committed, when the store fails."""
        with self.lock:
            while self.pending:
                merged = Batch()
                taken = 0
                for batch in self.pending:
                    if taken and len(merged.values) + len(batch.values) > FLUSH_MAX_VALUES:
                        break
                    merged.values.extend(batch.values)
                    merged.updates.extend(batch.updates)
                    merged.offsets.extend(batch.offsets)
                    taken += 1
                try:
                    self.store.apply(_deduplicated(merged))
                except StoreError:
                    self.telemetry.store_write_failures.inc()
                    raise
                for _ in range(taken):
                    self.pending.popleft()
                self.pending_values -= len(merged.values)
                self.telemetry.buffered_values.set(self.pending_values)

    def _samples(
        self,
        engine: TuningJobEngine,
        job: str,
        runtime: JobRuntime,
        samples: list[Sample],
        batch: Batch,
        *,
        read_at: float,
    ) -> None:
        """One line's samples: stored, and decided on when the objective is among them."""
        state = engine.jobs[job]
        if state.decision is not None:
            samples = [s for s in samples if not engine.frozen(job, s)]
        batch.values.extend(ValueRow(engine.name, job, s.metric, s.epoch, s.value) for s in samples)
        for s in samples:
            self.telemetry.metric_values.labels(s.metric).inc()
        if not any(s.metric == self.config.objective.metric for s in samples):
            engine.observe(job, samples)
            return
        if self.shared_store and state.decision is None and engine.enabled:
            self._refresh(engine)
        decision = engine.observe(job, samples)
        self.telemetry.decision_latency.observe(time.monotonic() - read_at)
        if decision is not None:
            self._stop(decision, runtime)
            batch.updates.append(JobUpdate(engine.name, job, JobStatus.STOPPED, decision))

    @staticmethod
    def _offset(
        position: FilePosition, parser: JobParser | None, job: str, name: str
    ) -> FileOffset:
        state = dict(position.state)
        if job != name:
            state["job"] = job  # the attempt this file feeds, for a restart
        if parser is not None and parser.last_epoch is not None:
            state["last_epoch"] = parser.last_epoch
        if parser is not None and (held := parser.held()):
            state["held"] = held
        return FileOffset(
            position.node,
            position.file_key,
            position.fingerprint,
            position.path,
            position.offset,
            json.dumps(state, sort_keys=True),
        )

    def _count(self, chunk: Chunk, counts: ParseCounts) -> None:
        t = self.telemetry
        if chunk.lines:
            t.log_lines.inc(len(chunk.lines))
        for reason, n in counts.errors.items():
            t.parse_errors.labels(reason).inc(n)
        for metric, n in counts.timeouts.items():
            t.regex_timeouts.labels(metric).inc(n)

    def _warn_if_buffered(self, decision: Decision, batch: Batch) -> None:
        """One warning when the read that stopped a job already held epochs well past the stop:
        its output reaches the log in blocks, long after it is printed."""
        metric = self.config.objective.metric
        logged = max(
            (
                v.epoch
                for v in batch.values
                if v.job == decision.job
                and v.tuning_job == decision.tuning_job
                and v.metric == metric
            ),
            default=0,
        )
        if logged > decision.epoch + BUFFERED_EPOCHS:
            log.warning(
                "output_buffered",
                tuning_job=decision.tuning_job,
                job=decision.job,
                stop_epoch=decision.epoch,
                epochs_in_log=logged,
                hint="the job's output reached its log in blocks, long after it was printed, "
                "so it was stopped late: run Python trainers with `python -u` or "
                "PYTHONUNBUFFERED=1, or print(..., flush=True)",
            )

    def _context(self, tuning_job: str, job: str, runtime: JobRuntime) -> dict[str, str]:
        """Stop templates' values: `{job}` is the name the source gives (an attempt's too)."""
        extra = dict(runtime.labels)
        if runtime.name and runtime.name != job:
            extra["attempt"] = job.rpartition(ATTEMPT_SEPARATOR)[2]
        return template_context(
            job=runtime.name or job,
            tuning_job=tuning_job,
            log_path=runtime.log_path,
            extra=extra,
        )

    def _stop(self, decision: Decision, runtime: JobRuntime) -> None:
        self.telemetry.jobs_stopped.labels(decision.tuning_job).inc()
        context = self._context(decision.tuning_job, decision.job, runtime)
        # every other job this sidecar reads: the stop must not touch their processes (an
        # earlier attempt under the same name has the same target: it is this job's, not another's)
        others = tuple(
            self._context(tj, job, other)
            for (tj, job), other in self.runtimes.items()
            if (tj, job) != (decision.tuning_job, decision.job)
            and (tj, other.name) != (decision.tuning_job, runtime.name)
        )
        self.submit_stop(StopRequest(decision, context, others=others))

    def _stop_finished(self, finished: StopFinished) -> None:
        engine = self.engines.get(finished.tuning_job)
        if engine is None or finished.job not in engine.jobs:
            return
        changed = engine.stop_outcome(finished.job, finished.outcome)
        state = engine.jobs[finished.job]
        # the outcome is stored with the decision whether or not the status changed
        self._write(
            Batch(
                updates=[JobUpdate(finished.tuning_job, finished.job, state.status, state.decision)]
            )
        )
        if changed:
            log.info(
                "job_status_corrected",
                tuning_job=finished.tuning_job,
                job=finished.job,
                status=state.status.value,
                outcome=finished.outcome,
            )

    def _end(self, ended: JobEnded) -> None:
        engine = self.engines.get(ended.tuning_job)
        job = self.current.get((ended.tuning_job, ended.job), ended.job)
        if job != ended.job:
            ended = JobEnded(ended.tuning_job, job, ended.status, ended.reason)
        if engine is None or ended.job not in engine.jobs:
            return
        batch = Batch()
        runtime = self.runtimes.get((ended.tuning_job, ended.job))
        if runtime is not None:  # the log ended: values a redrawn bar still held settle now
            counts = ParseCounts()
            samples = runtime.parser.finish(counts)
            if samples:
                self._samples(engine, ended.job, runtime, samples, batch, read_at=time.monotonic())
        before = engine.jobs[ended.job].status
        status = engine.end(ended.job, ended.status)
        if status is not before:
            batch.updates.append(
                JobUpdate(ended.tuning_job, ended.job, status, engine.jobs[ended.job].decision)
            )
        self._write(batch)
        if status is not before:
            log.info(
                "job_ended",
                tuning_job=ended.tuning_job,
                job=ended.job,
                status=status.value,
                reason=ended.reason,
            )

    # telemetry -----------------------------------------------------------------------------
    def snapshot(self) -> Iterator[JobSnapshot]:
        """Jobs as the collector shows them (taken under the lock, at scrape time)."""
        metric = self.config.objective.metric
        with self.lock:
            jobs = [
                JobSnapshot(name, state.name, state.status, state.latest.get(metric))
                for name, engine in self.engines.items()
                for state in engine.jobs.values()
            ]
        return iter(jobs)

    def stop_finished(self, outcome: StopOutcome) -> None:
        """Called by a stopper thread: one structured event per stop decision, with its outcome,
        and the outcome handed back to the consumer (the job's status follows what happened)."""
        d = outcome.request.decision
        if outcome.result is StopResult.STOPPED:
            self.telemetry.stop_duration.observe(outcome.seconds)
        fields: dict[str, object] = {}
        if outcome.error is not None:
            fields["error"] = outcome.error
        event = log.info if outcome.result is not None else log.error
        event(
            "stop_decision",
            tuning_job=d.tuning_job,
            job=d.job,
            epoch=d.epoch,
            value=d.value,
            median=d.median,
            compared_jobs=d.compared_jobs,
            rule=d.rule,
            backend=self.backend,
            dry_run=d.dry_run,
            outcome=outcome.outcome,
            seconds=round(outcome.seconds, 4),
            **fields,
        )
        if self.feedback is not None:
            self.feedback(StopFinished(d.tuning_job, d.job, outcome.outcome))

    def stop_failed(self, request: StopRequest, error: Exception) -> None:
        """Called per failed stop attempt: counted; the dispatcher retries."""
        self.telemetry.stop_failures.labels(self.backend).inc()
        log.warning(
            "stop_attempt_failed", job=request.decision.job, backend=self.backend, error=str(error)
        )


def _deduplicated(batch: Batch) -> Batch:
    """One row per key, the latest winning: what applying the batches one by one would leave,
    and what a single multi-row upsert accepts."""
    values = {(v.tuning_job, v.job, v.metric, v.epoch): v for v in batch.values}
    offsets = {(o.node, o.file_key): o for o in batch.offsets}
    return Batch(list(values.values()), batch.updates, list(offsets.values()))
