"""Offline simulation: logs are jobs launched one after another; what would the rule have done?"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.config import Config, EarlyStoppingType
from sidecar.engine import TuningJobEngine
from sidecar.errors import UsageError
from sidecar.formats import Format
from sidecar.model import Decision, JobStatus, ParseCounts, Sample
from sidecar.parse import Extractor, JobParser
from sidecar.report import job_doc, objective_doc
from sidecar.rule import JobHistory, Rule, Verdict
from sidecar.rules import make_rule
from sidecar.sources.offline import FileStats, samples_by_line
from sidecar.status import shadow_docs
from sidecar.store import Batch, JobUpdate, ShadowDecision, Store, ValueRow

# values written to the store at once while replaying: memory stays bounded whatever the log's size
REPLAY_BATCH_VALUES = 50_000


@dataclass(slots=True)
class JobTrace:
    """One job's objective as `replay --plot` draws it."""

    job: str
    order: int
    status: str
    values: dict[int, float] = field(default_factory=dict)  # every value in the log, by epoch
    medians: dict[int, float] = field(default_factory=dict)  # the median each was compared with
    stop: Decision | None = None  # where the rule stopped it (early stopping Off: would have)
    stopped: bool = False  # it really was stopped (early stopping Auto)
    why: str | None = None  # why the rule did not stop it (None when it did)


class RecordingRule:
    """A rule that remembers the verdict of every decision it makes (for the plot's medians)."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.name = rule.name
        self.verdicts: list[tuple[int, Verdict]] = []

    def changed(self, history: JobHistory) -> None:
        """Passed on: a rule that keeps caches over the histories must hear of every change."""
        changed = getattr(self.rule, "changed", None)
        if changed is not None:
            changed(history)

    def decide(
        self,
        *,
        epoch: int,
        value: float,
        earlier: Iterable[JobHistory],
        job: JobHistory | None = None,
        others: Iterable[JobHistory] = (),
    ) -> Verdict:
        verdict = self.rule.decide(
            epoch=epoch, value=value, earlier=earlier, job=job, others=others
        )
        self.verdicts.append((epoch, verdict))
        return verdict


@dataclass(slots=True)
class ReplayResult:
    """The `replay --json` document plus what the table shows besides it."""

    document: dict[str, Any]
    epochs_in_log: dict[str, int] = field(default_factory=dict)
    why_not_stopped: dict[str, str] = field(default_factory=dict)  # job -> the reason
    counts: ParseCounts = field(default_factory=ParseCounts)
    traces: list[JobTrace] = field(default_factory=list)  # with `trace=True`

    def epochs_saved(self) -> dict[str, int]:
        """For each job, the logged epochs past the one it was stopped at."""
        return {
            job["job"]: max(0, self.epochs_in_log.get(job["job"], 0) - job["epochs"])
            for job in self.document["jobs"]
            if job["status"] == JobStatus.STOPPED.value
        }


def job_name_for(path: Path) -> str:
    """A log's job name: its file name without the extension(s) of a log (`job-001.log`)."""
    return path.stem


def _lines_then_finish(
    lines: Iterator[list[Sample]], parser: JobParser, counts: ParseCounts
) -> Iterator[list[Sample]]:
    """Each line's samples, then what settles at the end of the log (redrawn bars)."""
    yield from lines
    rest = parser.finish(counts)
    if rest:
        yield rest


def replay(
    config: Config,
    logs: Sequence[Path],
    store: Store,
    *,
    fmt: Format = "auto",
    trace: bool = False,
) -> ReplayResult:
    """Run the rule over `logs` in order, each job finishing before the next starts.

    A stopped job's log is not applied past the line that stopped it (the job would have ended
    there); it is still read to the end to count the epochs that stopping saved.

    With `trace`, `traces` holds each job's objective values, the median the rule compared each
    with, and its stop. The medians come from a second engine fed the same samples, always with
    early stopping on (dry-run when the config says Off, so the stops are where it would have).
    """
    names = [job_name_for(p) for p in logs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(
            f"several logs have the same job name (file stem): {', '.join(duplicates)}"
        )
    tuning_job = config.tuning_job
    store.ensure_tuning_job(tuning_job, config.objective)
    engine = TuningJobEngine(tuning_job, config.objective, config.early_stopping)
    recorder = RecordingRule(make_rule(config.early_stopping, config.objective.type))
    shadow = TuningJobEngine(
        tuning_job,
        config.objective,
        config.early_stopping.model_copy(update={"type": EarlyStoppingType.AUTO}),
        dry_run=not engine.enabled,
        rule=recorder,
    )
    metric = config.objective.metric
    every_metric = config.store_metrics == "all"
    for stored in store.load_jobs(tuning_job, metrics={metric}):
        if stored.name in names:
            raise UsageError(
                f"job {stored.name!r} is already in store {store.url!r} for tuning job {tuning_job!r}"
            )
        for target in (engine, shadow) if trace else (engine,):
            target.restore(
                stored.name,
                stored.order,
                stored.status,
                stored.values.get(metric, []),
                stored.decision,
            )
    extractor = Extractor(
        config.all_definitions(), config.epoch_config(), timeout=config.regex_timeout_seconds
    )
    result = ReplayResult(document={})
    jobs: list[dict[str, Any]] = []
    completion: dict[str, Any] | None = None  # where the tuning job would have completed
    for path, job in zip(logs, names, strict=True):
        order = store.register_job(tuning_job, job)
        engine.register(job, order)
        job_trace = JobTrace(job, order, "")
        if trace:
            shadow.register(job, order)
        parser = extractor.job_parser()
        stats = FileStats(counts=result.counts)
        values: list[ValueRow] = []
        job_shadows: dict[str, Decision] = {}
        decision = None
        logged_epochs = 0
        lines = samples_by_line(
            path, extractor, parser, max_line_bytes=config.max_line_bytes, stats=stats, fmt=fmt
        )
        for samples in _lines_then_finish(lines, parser, stats.counts):
            for s in samples:
                if s.metric == metric:
                    logged_epochs = max(logged_epochs, s.epoch)
                    job_trace.values[s.epoch] = s.value
            if decision is not None:
                continue
            values.extend(
                ValueRow(tuning_job, job, s.metric, s.epoch, s.value)
                for s in samples
                if every_metric or s.metric == metric
            )
            if len(values) >= REPLAY_BATCH_VALUES:
                store.apply(Batch(values=values))  # bounded memory: a long log streams to the store
                values = []
            decision = engine.observe(job, samples)
            for label, shadow_decision in engine.take_shadow_decisions():
                job_shadows[label] = shadow_decision
            if trace:
                shadow.observe(job, samples)
                for epoch, verdict in recorder.verdicts:
                    # only what the rule compared: not before start_epoch, not with too few jobs
                    if verdict.compared and verdict.median is not None:
                        job_trace.medians[epoch] = verdict.median
                recorder.verdicts.clear()
        result.counts.error("line_too_long", stats.truncated)
        status = engine.end(job, JobStatus.COMPLETED)
        why = engine.why_not_stopped(job)
        if why is not None:
            result.why_not_stopped[job] = why
        if trace:
            shadow.end(job, JobStatus.COMPLETED)
            job_trace.status = status.value
            job_trace.stop = shadow.jobs[job].decision
            job_trace.stopped = decision is not None
            job_trace.why = shadow.why_not_stopped(job)
            result.traces.append(job_trace)
        store.apply(
            Batch(
                values=values,
                updates=[JobUpdate(tuning_job, job, status, decision)],
                shadows=[ShadowDecision(tuning_job, job, k, d) for k, d in job_shadows.items()],
            )
        )
        done = engine.take_completion()
        if done is not None and completion is None:
            completion = {**done.doc(), "after": len(jobs) + 1}
        result.epochs_in_log[job] = logged_epochs
        doc = job_doc(
            job=job,
            order=order,
            status=status,
            epochs=engine.epochs(job),
            decision=decision,
        )
        if engine.shadows:
            doc["shadow_decisions"] = shadow_docs(job_shadows)
        jobs.append(doc)
    result.document = {
        "tuning_job": tuning_job,
        "objective": objective_doc(config.objective),
        "jobs": jobs,
    }
    if engine.completion.active:
        result.document["completion"] = completion
    return result
