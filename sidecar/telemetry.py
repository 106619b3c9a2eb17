"""Prometheus metrics (an explicit registry, a collector over an engine snapshot) and the HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sidecar.model import JobStatus

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


class Telemetry:
    """Every §7 series on one registry (never the global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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
        self.job_reruns = Counter(
            "early_stopping_job_reruns",
            "Jobs whose log started again from nothing after they had ended (each a new attempt).",
            ["tuning_job"],
            registry=r,
        )
        for backend in BACKENDS:
            self.stop_failures.labels(backend)

    def watch(self, snapshot: Snapshot) -> None:
        """Export job counts and objectives from `snapshot` at every scrape."""
        self.registry.register(EngineCollector(snapshot))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: scrapes every few seconds would drown the decision events."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class HttpServer:
    """`/metrics`, `/healthz` (alive) and `/readyz` (store reachable, inputs running).

    The port is bound when the server is made (so a port in use fails before anything else
    starts); requests are answered once `serve` is called."""

    def __init__(self, host: str, port: int) -> None:
        self._server = make_server(
            host, port, self._not_yet, _ThreadingServer, handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread: threading.Thread | None = None

    @staticmethod
    def _not_yet(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"starting\n"]

    def serve(self, registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]]) -> None:
        """Answer requests from now on, on a thread of the server's own."""
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            if path == "/healthz":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ok\n"]
            if path == "/readyz":
                ok, why = ready()
                start_response(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
                )
                return [(why or "ready").encode() + b"\n"]
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: /metrics /healthz /readyz\n"]

        self._server.set_app(app)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
        self._server.server_close()
