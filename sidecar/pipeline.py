"""The decision path: chunks of lines → samples → the rule → stop requests and batches to write.

Only the consumer thread calls it, so there are no races between jobs. What it decides never
waits on the store: batches go to the write buffer (sidecar/writes.py), stops to the dispatcher's
threads. The engine state it changes is read by scrapes (and the API) under `lock`, which is held
only for in-memory work, never across store IO: a slow store cannot stall a scrape. While the
store is down a new job is registered from memory (a provisional launch order, replaced by the
store's when it is back) and shared history is refreshed with a short timeout and backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from sidecar.config import Config
from sidecar.engine import TuningJobEngine
from sidecar.errors import StoreError
from sidecar.model import (
    Chunk,
    Decision,
    JobEnded,
    JobStatus,
    Offset,
    ParseCounts,
    Sample,
    StopFinished,
)
from sidecar.parse import Extractor, JobParser
from sidecar.report import rule_doc
from sidecar.stoppers import StopRequest
from sidecar.store import Batch, JobUpdate, ShadowDecision, Store, StoredJob, ValueRow
from sidecar.telemetry import JobSnapshot, Telemetry
from sidecar.templates import template_context
from sidecar.writes import Registered

log = structlog.get_logger("sidecar")

SubmitStop = Callable[[StopRequest], object]
Write = Callable[[Batch], object]


@dataclass(slots=True)
class Pushed:
    """Values a caller pushed over HTTP for a job (docs/api.md): recorded as if read from its
    log; the answer, `{"stop", "decision"}`, is set on `reply`."""

    tuning_job: str
    job: str
    samples: list[Sample]
    reply: Future[dict[str, Any]]


Item = Chunk | JobEnded | StopFinished | Registered | Pushed
Publish = Callable[[str, dict[str, Any]], None]

# a decision at epoch e on a read that also held epochs past e + this: the job's output reached
# the log long after it was printed (block-buffered stdout)
BUFFERED_EPOCHS = 1
# `<job>~<n>`: the n-th attempt of a job whose log restarted from nothing after it had ended
ATTEMPT_SEPARATOR = "~"
# the regex-timeout time one slice of a chunk may spend before the rest waits behind other
# jobs' items (head-of-line blocking: 50 lines at 0.1 s each must not delay every other stop)
SLICE_TIMEOUT_SECONDS = 0.25
REFRESH_BACKOFF = (1.0, 30.0)  # seconds between shared-history refreshes after one failed


@dataclass(slots=True)
class JobRuntime:
    """What the consumer keeps per live job besides the engine's state."""

    parser: JobParser
    log_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    name: str = ""  # the name its source gives (`{job}` in stop templates); the job's key may
    # carry an attempt number besides


@dataclass(slots=True)
class Continuation:
    """The rest of a chunk whose lines spent their slice of regex timeouts: parsed once the
    other jobs' waiting items have been, its batch (values with the offset) written at its end."""

    chunk: Chunk
    job: str
    lines: Sequence[bytes]  # the chunk's lines still to parse
    batch: Batch
    counts: ParseCounts
    decided: bool  # the job had a decision before this chunk

    @property
    def key(self) -> tuple[str, str]:
        return self.chunk.tuning_job, self.chunk.job


def item_key(item: object) -> tuple[str, str] | None:
    """The (tuning job, source name) an item's order matters for, if any."""
    if isinstance(item, Chunk | JobEnded):
        return item.tuning_job, item.job
    if isinstance(item, Continuation):
        return item.key
    return None


class Pipeline:
    """Samples to decisions for every tuning job this sidecar sees."""

    def __init__(
        self,
        config: Config,
        store: Store,
        telemetry: Telemetry,
        *,
        submit_stop: SubmitStop,
        write: Write,
        dry_run: bool = False,
        shared_store: bool = False,
        store_failing: Callable[[], bool] = lambda: False,
        publish: Publish | None = None,
    ) -> None:
        self.config = config
        # live events for the API's stream (docs/api.md): value, decision, job, completion
        self.publish: Publish = publish or (lambda kind, data: None)
        self.store = store
        self.telemetry = telemetry
        self.submit_stop = submit_stop
        self.write = write
        self.dry_run = dry_run
        # other processes write this tuning job: refresh from the store before deciding
        self.shared_store = shared_store
        self.store_failing = store_failing
        self.extractor = Extractor(
            config.all_definitions(),
            config.epoch_config(),
            timeout=config.regex_timeout_seconds,
            max_metrics=config.max_metrics_per_job,
            keep=frozenset({config.objective.metric}),
        )
        self.slice_timeouts = max(1, round(SLICE_TIMEOUT_SECONDS / config.regex_timeout_seconds))
        self.engines: dict[str, TuningJobEngine] = {}
        self.runtimes: dict[tuple[str, str], JobRuntime] = {}
        self.local_jobs: set[tuple[str, str]] = set()
        # (tuning job, name from the source) -> the job key its lines go to now: the name, or
        # `name~n` once the same name has run again after ending
        self.current: dict[tuple[str, str], str] = {}
        self.cursors: dict[str, int] = {}  # per tuning job: the store's write cursor seen last
        self.lock = threading.Lock()  # engine state changes; scrapes take it for a snapshot
        self._refresh_after = 0.0
        self._refresh_delay = REFRESH_BACKOFF[0]
        self._file_counts: dict[str, tuple[int, int]] = {}  # file key -> (cut lines, bad records)

    # state ---------------------------------------------------------------------------------
    def engine(self, tuning_job: str) -> TuningJobEngine:
        """The tuning job's engine, made (and its history loaded) the first time it is seen."""
        engine = self.engines.get(tuning_job)
        if engine is not None:
            return engine
        engine = TuningJobEngine(
            tuning_job, self.config.objective, self.config.early_stopping, dry_run=self.dry_run
        )
        if not self.store_failing():
            try:
                self.store.ensure_tuning_job(tuning_job, self.config.objective)
                self._restore(engine)
            except StoreError as exc:  # decide from memory; the writer creates it later
                log.warning("tuning_job_from_memory", tuning_job=tuning_job, error=str(exc))
        with self.lock:
            self.engines[tuning_job] = engine
        return engine

    def _restore(self, engine: TuningJobEngine) -> None:
        """Bring in what the store has that this process did not write: the whole history at
        start (a restart), then only what other processes changed since (shared stores)."""
        metric = self.config.objective.metric
        since = self.cursors.get(engine.name, 0)
        # the local jobs' own writes are known here: only other processes' are news
        cursor, changed = self.store.changes(engine.name, metric, since, others_only=True)
        batch = Batch()
        with self.lock:
            self.cursors[engine.name] = cursor
            self._merge(engine, changed)
            self._completion(engine, batch)  # the history may say the tuning job is complete
        self.write(batch)

    def _refresh(self, engine: TuningJobEngine) -> None:
        """Before deciding on a shared store: others' latest values. A store that does not
        answer is asked again only after a backoff; meanwhile decisions use what is known."""
        now = time.monotonic()
        if self.store_failing() or now < self._refresh_after:
            return
        try:
            self._restore(engine)
        except StoreError as exc:
            if self._refresh_delay == REFRESH_BACKOFF[0]:
                log.warning("history_refresh_failed", tuning_job=engine.name, error=str(exc))
            self._refresh_after = now + self._refresh_delay
            self._refresh_delay = min(self._refresh_delay * 2, REFRESH_BACKOFF[1])
        else:
            self._refresh_delay = REFRESH_BACKOFF[0]

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
        self,
        tuning_job: str,
        name: str,
        *,
        fresh: bool,
        resume: dict[str, object] | None = None,
        rewritten: bool = False,
    ) -> str:
        """The job a source's lines for `name` belong to.

        A log that starts from nothing (`fresh`: a new file or one truncated, a new container,
        a new `exec`) for a job that has ended is a rerun under the same name: a new attempt,
        `name~2`, `name~3`, ..., launched now, with a history of its own. So is a log found
        `rewritten` in place while the sidecar was down, whatever its job's last status: its
        series must not mix two runs. Reruns are counted and each one logged. After a restart
        the attempt a file fed is in its stored state."""
        stored_key = (resume or {}).get("job")
        if isinstance(stored_key, str) and stored_key:
            self.current[(tuning_job, name)] = stored_key
            return stored_key
        key = self.current.get((tuning_job, name), name)
        if not fresh:
            return key
        engine = self.engine(tuning_job)
        state = engine.jobs.get(key)
        if state is None or (state.status is JobStatus.RUNNING and not rewritten):
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
        its source calls it when `job` is an attempt's key (`name~2`).

        The store gives the launch order; while it cannot, the job gets the next order in
        memory and the write buffer registers it when the store is back (`registered`)."""
        key = (tuning_job, job)
        runtime = self.runtimes.get(key)
        if runtime is not None:
            return runtime
        engine = self.engine(tuning_job)
        order: int | None = None
        stored: StoredJob | None = None
        if not self.store_failing():
            try:
                order = self.store.register_job(tuning_job, job)
                stored = self.store.load_job(tuning_job, job)
            except StoreError as exc:
                log.warning("job_registered_from_memory", job=job, error=str(exc))
                order = None
        provisional = order is None
        counts: dict[str, int] = {}
        with self.lock:
            known = engine.jobs.get(job)
            if order is None:
                order = known.order if known is not None else engine.next_order()
            state = engine.register(job, order)
            if stored is not None:  # a restart: ordinal epochs carry on from what is stored
                counts = {
                    m: max(e for e, _ in series) for m, series in stored.values.items() if series
                }
                state.status = stored.status
            elif known is not None and known.history.values:
                counts = {self.config.objective.metric: max(known.history.values)}
            last_epoch = (resume or {}).get("last_epoch")
            held = (resume or {}).get("held")
            runtime = JobRuntime(
                self.extractor.job_parser(
                    counts=counts,
                    last_epoch=last_epoch if isinstance(last_epoch, int) else None,
                    held=held if isinstance(held, list) else (),
                ),
                log_path=log_path,
                name=name or job,
            )
            self.runtimes[key] = runtime
            self.local_jobs.add(key)
        if provisional:
            self.write(Batch(registrations=[(tuning_job, job)]))
        self.publish(
            "job",
            {"tuning_job": tuning_job, "job": job, "order": order, "status": state.status.value},
        )
        log.info(
            "job_registered",
            tuning_job=tuning_job,
            job=job,
            order=order,
            status=state.status.value,
            log_path=log_path or None,
            **({"provisional_order": True} if provisional else {}),
        )
        return runtime

    def registered(self, done: Registered) -> None:
        """The store's launch order for a job registered while it was down."""
        engine = self.engines.get(done.tuning_job)
        if engine is not None:
            with self.lock:
                engine.reorder(done.job, done.order)

    # items ---------------------------------------------------------------------------------
    def handle(self, item: Item) -> Continuation | None:
        """Handle one item; a chunk whose regex timeouts used up its slice returns the rest."""
        if isinstance(item, Chunk):
            return self._chunk(item)
        if isinstance(item, Pushed):
            self._pushed(item)
        elif isinstance(item, Registered):
            self.registered(item)
        elif isinstance(item, StopFinished):
            self._stop_finished(item)
        else:
            self._end(item)
        return None

    def _chunk(self, chunk: Chunk) -> Continuation | None:
        held = bool(chunk.resume.get("held"))
        resume = dict(chunk.resume)
        name = chunk.job
        current = self.current.get((chunk.tuning_job, name), name)
        if not chunk.lines and not held and (chunk.tuning_job, current) not in self.runtimes:
            # no line yet to register the job at: just move the offset
            if chunk.offset is not None:
                self.write(Batch(offsets=[self._offset(chunk.offset, None, current, name)]))
            return None
        job = self.job_key(
            chunk.tuning_job,
            name,
            fresh=bool(chunk.lines) and chunk.offset is not None and chunk.fresh,
            resume=resume,
            rewritten=bool(chunk.lines) and chunk.rewritten,
        )
        runtime = self.register(
            chunk.tuning_job, job, log_path=chunk.log_path, resume=resume, name=name
        )
        engine = self.engines[chunk.tuning_job]
        state = engine.jobs[job]
        candidates = self.extractor.any_candidate(chunk.lines)
        if candidates and self.shared_store and state.decision is None and engine.enabled:
            self._refresh(engine)  # once per chunk, outside the lock
        with self.lock:
            if chunk.log_path:
                runtime.log_path = chunk.log_path
            if chunk.labels:
                runtime.labels = chunk.labels
            batch = Batch()
            if (
                chunk.lines
                and state.status in (JobStatus.COMPLETED, JobStatus.FAILED)
                and state.decision is None
            ):
                state.status = JobStatus.RUNNING  # an idle job that speaks again is running
                batch.updates.append(JobUpdate(chunk.tuning_job, job, JobStatus.RUNNING))
        rest = Continuation(
            chunk, job, chunk.lines, batch, ParseCounts(), decided=state.decision is not None
        )
        return self.resume(rest)

    def _pushed(self, pushed: Pushed) -> None:
        """Pushed values: the job registered at its first value, the values stored and decided
        on exactly as a log line's would be."""
        try:
            name = pushed.job
            current = self.current.get((pushed.tuning_job, name), name)
            known = (pushed.tuning_job, current) in self.runtimes
            job = current if known else self.job_key(pushed.tuning_job, name, fresh=True)
            runtime = self.register(pushed.tuning_job, job, name=name)
            engine = self.engines[pushed.tuning_job]
            if self.shared_store and engine.enabled:
                self._refresh(engine)
            batch = Batch()
            with self.lock:
                state = engine.jobs[job]
                before = state.decision
                counts = ParseCounts()
                kept = []
                for sample in pushed.samples:
                    found = runtime.parser.record(sample.metric, sample.value, sample.epoch, counts)
                    if found is not None:
                        kept.append(found)
                if kept:
                    self._samples(engine, job, runtime, kept, batch, read_at=time.monotonic())
                decision = state.decision if state.decision is not before else None
            self.write(batch)
        except BaseException as exc:  # the caller is waiting: always answer
            pushed.reply.set_exception(ValueError(str(exc)))
            raise
        pushed.reply.set_result(
            {"stop": decision is not None, "decision": decision.evidence() if decision else None}
        )

    def resume(self, rest: Continuation) -> Continuation | None:
        """Parse a chunk's lines until they are done (None) or their slice of regex timeouts is
        spent (the rest is returned, to be resumed after other items)."""
        chunk, job = rest.chunk, rest.job
        runtime = self.runtimes[(chunk.tuning_job, job)]
        engine = self.engines[chunk.tuning_job]
        counts = rest.counts
        parser = runtime.parser
        budget = sum(counts.timeouts.values()) + self.slice_timeouts
        with self.lock:
            found, parsed = parser.feed_lines(rest.lines, counts, timeouts=budget)
            for _line, samples in found:
                self._samples(engine, job, runtime, samples, rest.batch, read_at=chunk.read_at)
            if parsed < len(rest.lines):
                rest.lines = rest.lines[parsed:]
                return rest
            state = engine.jobs[job]
            if not rest.decided and state.decision is not None:
                self._warn_if_buffered(state.decision, rest.batch)
            if chunk.offset is not None:
                rest.batch.offsets.append(
                    self._offset(chunk.offset, parser, job, runtime.name or job)
                )
        self.write(rest.batch)
        self._count(chunk, counts, rest.batch)
        return None

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
        objective = self.config.objective.metric
        kept = (
            samples
            if self.config.store_metrics == "all"
            else [s for s in samples if s.metric == objective]
        )
        batch.values.extend(ValueRow(engine.name, job, s.metric, s.epoch, s.value) for s in kept)
        if not any(s.metric == objective for s in samples):
            engine.observe(job, samples)
            return
        decision = engine.observe(job, samples)
        self.telemetry.decision_latency.observe(time.monotonic() - read_at)
        thresholds = state.thresholds
        for s in samples:
            if s.metric == objective:
                self.publish(
                    "value",
                    {
                        "tuning_job": engine.name,
                        "job": job,
                        "epoch": s.epoch,
                        "value": s.value,
                        "threshold": thresholds.get(s.epoch),
                    },
                )
        if decision is not None:
            self._stop(decision, runtime)
            batch.updates.append(JobUpdate(engine.name, job, JobStatus.STOPPED, decision))
            self.publish("decision", {"tuning_job": engine.name, "job": job, **decision.evidence()})
        if engine.shadows:
            self._shadow_stops(engine, batch)
        self._completion(engine, batch)

    def _shadow_stops(self, engine: TuningJobEngine, batch: Batch) -> None:
        """What the shadow rules decided: logged, counted and stored, never acted on."""
        settings = {label: shadow.settings for label, shadow in engine.shadows}
        for label, decision in engine.take_shadow_decisions():
            self.telemetry.shadow_stops.labels(engine.name, label).inc()
            log.info(
                "shadow_stop_decision",
                tuning_job=engine.name,
                job=decision.job,
                rule=label,
                settings=rule_doc(settings[label]),
                **decision.evidence(),
            )
            batch.shadows.append(ShadowDecision(engine.name, decision.job, label, decision))

    def _completion(self, engine: TuningJobEngine, batch: Batch) -> None:
        """The tuning job has just completed: say so once, and with `stop_running` stop its
        other running jobs (the one that reached the target goes on to its end)."""
        done = engine.take_completion()
        if done is None:
            return
        self.telemetry.tuning_job_complete.labels(engine.name, done.reason).set(1)
        self.publish("completion", {"tuning_job": engine.name, **done.doc()})
        log.info(
            "tuning_job_complete",
            tuning_job=engine.name,
            reason=done.reason,
            job=done.job,
            at=done.at,
            stop_running=engine.completion.criteria.stop_running,
        )
        if not engine.completion.criteria.stop_running:
            return
        for name in list(engine.jobs):
            runtime = self.runtimes.get((engine.name, name))
            if name == done.job or runtime is None:
                continue
            decision = engine.stop_for_completion(name)
            if decision is not None:
                self._stop(decision, runtime)
                batch.updates.append(JobUpdate(engine.name, name, JobStatus.STOPPED, decision))

    @staticmethod
    def _offset(offset: Offset, parser: JobParser | None, job: str, name: str) -> Offset:
        """The source's offset with what the parser must resume from added to its state."""
        state = dict(offset.state)
        if job != name:
            state["job"] = job  # the attempt this file feeds, for a restart
        if parser is not None and parser.last_epoch is not None:
            state["last_epoch"] = parser.last_epoch
        if parser is not None and (held := parser.held()):
            state["held"] = held
        return replace(offset, state=state)

    def _count(self, chunk: Chunk, counts: ParseCounts, batch: Batch) -> None:
        """A chunk's telemetry, once per chunk (not once per value)."""
        t = self.telemetry
        if chunk.lines:
            t.log_lines.inc(len(chunk.lines))
        for reason, n in counts.errors.items():
            t.parse_errors.labels(reason).inc(n)
        for metric, n in counts.timeouts.items():
            t.regex_timeouts.labels(t.metric_label(metric)).inc(n)
        per_metric: dict[str, int] = {}
        for v in batch.values:
            per_metric[v.metric] = per_metric.get(v.metric, 0) + 1
        for metric, n in per_metric.items():
            t.metric_values.labels(t.metric_label(metric)).inc(n)
        if chunk.offset is not None:  # the decoder's running counts: lines cut, records malformed
            key = chunk.offset.file_key
            before = self._file_counts.get(key, (0, 0))
            now = (chunk.cut_lines, chunk.bad_records)
            for reason, old, new in (
                ("line_too_long", before[0], now[0]),
                ("bad_record", before[1], now[1]),
            ):
                added = new - old if new >= old else new  # a new decoder counts from 0
                if added:
                    t.parse_errors.labels(reason).inc(added)
            self._file_counts[key] = now

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
        with self.lock:
            changed = engine.stop_outcome(finished.job, finished.outcome)
            state = engine.jobs[finished.job]
            update = JobUpdate(finished.tuning_job, finished.job, state.status, state.decision)
        # the outcome is stored with the decision whether or not the status changed
        self.write(Batch(updates=[update]))
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
        if engine is None or job not in engine.jobs:
            return
        batch = Batch()
        runtime = self.runtimes.get((ended.tuning_job, job))
        with self.lock:
            if runtime is not None:  # the log ended: values a redrawn bar still held settle now
                counts = ParseCounts()
                samples = runtime.parser.finish(counts)
                if samples:
                    self._samples(engine, job, runtime, samples, batch, read_at=time.monotonic())
            before = engine.jobs[job].status
            status = engine.end(job, ended.status)
            if status is not before:
                batch.updates.append(
                    JobUpdate(ended.tuning_job, job, status, engine.jobs[job].decision)
                )
            self._completion(engine, batch)
        self.write(batch)
        if status is not before:
            self.publish(
                "job",
                {"tuning_job": ended.tuning_job, "job": job, "status": status.value},
            )
            log.info(
                "job_ended",
                tuning_job=ended.tuning_job,
                job=job,
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
