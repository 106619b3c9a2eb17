"""Prometheus metrics: an explicit registry, and a collector over an engine snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sidecar.model import JobStatus, StopFinished
from sidecar.stoppers import StopOutcome, StopRequest, StopResult

log = structlog.get_logger("sidecar")

BACKENDS = ("signal", "docker", "kubernetes", "command", "none")


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """What the collector shows of one job."""

    tuning_job: str
    job: str
    status: JobStatus
    objective: float | None


Snapshot = Callable[[], Iterable[JobSnapshot]]


class EngineCollector(Collector):
    """Job counts per status, and the latest objective of live jobs, read at scrape time."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "early_stopping_jobs",
            "Training jobs by tuning job and status.",
            labels=["tuning_job", "status"],
        )
        objective = GaugeMetricFamily(
            "early_stopping_objective",
            "Latest objective value of each running job (dropped when the job ends).",
            labels=["tuning_job", "job"],
        )
        counts: dict[str, dict[JobStatus, int]] = {}
        for job in self.snapshot():
            per = counts.setdefault(job.tuning_job, dict.fromkeys(JobStatus, 0))
            per[job.status] += 1
            if job.status is JobStatus.RUNNING and job.objective is not None:
                objective.add_metric([job.tuning_job, job.job], job.objective)
        for tuning_job, per in sorted(counts.items()):
            for status, n in per.items():
                jobs.add_metric([tuning_job, status.value], n)
        yield jobs
        yield objective


OTHER = "other"  # the label value that metric names past `max_metric_series` share


class Telemetry:
    """Every series of docs/design.md "Telemetry" on one registry (never the global one)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, max_metric_series: int = 1000
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.max_metric_series = max_metric_series
        self._metric_labels: set[str] = set()
        r = self.registry
        self.jobs_stopped = Counter(
            "early_stopping_jobs_stopped", "Jobs stopped by the rule.", ["tuning_job"], registry=r
        )
        self.log_lines = Counter("early_stopping_log_lines", "Log lines read.", registry=r)
        self.metric_values = Counter(
            "early_stopping_metric_values", "Metric values extracted.", ["metric"], registry=r
        )
        self.parse_errors = Counter(
            "early_stopping_parse_errors",
            "Lines or matches skipped, by reason.",
            ["reason"],
            registry=r,
        )
        self.regex_timeouts = Counter(
            "early_stopping_regex_timeouts",
            "Regex matches that ran past the timeout.",
            ["metric"],
            registry=r,
        )
        self.stop_failures = Counter(
            "early_stopping_stop_failures",
            "Failed stop attempts (each is retried).",
            ["backend"],
            registry=r,
        )
        self.decision_latency = Histogram(
            "early_stopping_decision_latency_seconds",
            "From reading a line to the rule's decision on its value.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.stop_duration = Histogram(
            "early_stopping_stop_duration_seconds",
            "From a decision to stop to its target being gone.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
            registry=r,
        )
        self.shadow_stops = Counter(
            "early_stopping_shadow_stops",
            "Jobs a shadow rule (early_stopping.shadow) would have stopped; never acted on.",
            ["tuning_job", "rule"],
            registry=r,
        )
        self.tuning_job_complete = Gauge(
            "early_stopping_tuning_job_complete",
            "1 once the tuning job is complete (early_stopping.completion), by reason.",
            ["tuning_job", "reason"],
            registry=r,
        )
        self.buffered_values = Gauge(
            "early_stopping_store_buffered_values",
            "Metric values read but not yet written to the store (it is unreachable or slow).",
            registry=r,
        )
        self.store_write_failures = Counter(
            "early_stopping_store_write_failures",
            "Store transactions that failed (each is retried; nothing is dropped).",
            registry=r,
        )
        self.store_rejected_batches = Counter(
            "early_stopping_store_rejected_batches",
            "Batches the store refused as data (never retried; logged as store_write_rejected).",
            registry=r,
        )
        self.folded_series = Counter(
            "early_stopping_metric_series_folded",
            "Metric names past max_metric_series, counted under the label value `other`.",
            registry=r,
        )
        self.open_files = Gauge(
            "early_stopping_open_files",
            "Log files held open now (idle ones are closed and reopened when they change).",
            registry=r,
        )
        self.open_failures = Counter(
            "early_stopping_open_failures",
            "Attempts to open a matched log file that failed (EMFILE, EACCES, ...).",
            registry=r,
        )
        self.files_skipped = Counter(
            "early_stopping_files_skipped",
            "Matched paths not followed, by reason (job_regex_timeout, no_job, directory_loop, "
            "scan_limit).",
            ["reason"],
            registry=r,
        )
        self.job_reruns = Counter(
            "early_stopping_job_reruns",
            "Jobs whose log started again from nothing after they had ended (each a new attempt).",
            ["tuning_job"],
            registry=r,
        )
        for backend in BACKENDS:
            self.stop_failures.labels(backend)

    def metric_label(self, metric: str) -> str:
        """A metric name as a label value: at most `max_metric_series` distinct names get a
        series of their own (names come from log content); the rest share `other`."""
        if metric in self._metric_labels:
            return metric
        if len(self._metric_labels) < self.max_metric_series:
            self._metric_labels.add(metric)
            return metric
        self.folded_series.inc()
        return OTHER

    def watch(self, snapshot: Snapshot) -> None:
        """Export job counts and objectives from `snapshot` at every scrape."""
        self.registry.register(EngineCollector(snapshot))


class StopReporter:
    """How each stop ended, told once: the `stop_decision` event with its evidence and outcome,
    the stop-duration histogram, failed attempts counted; and the outcome handed on (`forward`,
    the consumer's queue) so the job's status follows what happened."""

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        backend: str,
        forward: Callable[[StopFinished], object] | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.backend = backend
        self.forward = forward

    def finished(self, outcome: StopOutcome) -> None:
        """Called by a stopper thread, once per stop request."""
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
        if self.forward is not None:
            self.forward(StopFinished(d.tuning_job, d.job, outcome.outcome))

    def failed(self, request: StopRequest, error: Exception) -> None:
        """Called per failed stop attempt: counted; the dispatcher retries."""
        self.telemetry.stop_failures.labels(self.backend).inc()
        log.warning(
            "stop_attempt_failed", job=request.decision.job, backend=self.backend, error=str(error)
        )
