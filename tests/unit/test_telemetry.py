"""Telemetry: every series of docs/design.md "Telemetry" on an explicit registry, the engine collector, the HTTP endpoints,
`promtool check metrics`, and a real `sidecar run` daemon scraped over HTTP.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.http.health import add_health_routes
from sidecar.http.server import HttpServer, Router, bind
from sidecar.model import JobStatus
from sidecar.telemetry import EngineCollector, JobSnapshot, Telemetry
from tests.conftest import skip_or_fail
from tests.helpers import wait_for

DEADLINE = 30.0

SECTION_7_FAMILIES = {
    # name as exposed (counters with _total) -> label names
    "early_stopping_jobs_stopped_total": {"tuning_job"},
    "early_stopping_jobs": {"tuning_job", "status"},
    "early_stopping_log_lines_total": set(),
    "early_stopping_metric_values_total": {"metric"},
    "early_stopping_parse_errors_total": {"reason"},
    "early_stopping_regex_timeouts_total": {"metric"},
    "early_stopping_stop_failures_total": {"backend"},
    "early_stopping_objective": {"tuning_job", "job"},
    "early_stopping_decision_latency_seconds_count": set(),
    "early_stopping_stop_duration_seconds_count": set(),
}


def populate(telemetry: Telemetry) -> None:
    """Touch every series with label values, as a running daemon would."""
    telemetry.jobs_stopped.labels("tj").inc()
    telemetry.log_lines.inc(5)
    telemetry.metric_values.labels("val_loss").inc(3)
    telemetry.parse_errors.labels("not_a_number").inc()
    telemetry.regex_timeouts.labels("val_loss").inc()
    telemetry.stop_failures.labels("signal").inc(2)
    telemetry.decision_latency.observe(0.003)
    telemetry.stop_duration.observe(1.5)
    telemetry.watch(
        lambda: [
            JobSnapshot("tj", "job-a", JobStatus.RUNNING, 0.25),
            JobSnapshot("tj", "job-b", JobStatus.STOPPED, 0.9),
            JobSnapshot("tj", 'job "quoted" \\ odd\nname', JobStatus.RUNNING, -1.5),
        ]
    )


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition text, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def promtool_check(text: str) -> None:
    """`promtool check metrics` must accept the exposition text (skip/fail when absent)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail("promtool not installed")
        return
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"promtool: {result.stdout}{result.stderr}\n---\n{text}"


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestTelemetry:
    def test_every_section_7_series_has_its_exact_name(self) -> None:
        """After incrementing/observing, each documented family is exposed under its documented name."""
        telemetry = Telemetry(CollectorRegistry())
        populate(telemetry)
        value = telemetry.registry.get_sample_value

        assert value("early_stopping_jobs_stopped_total", {"tuning_job": "tj"}) == 1
        assert value("early_stopping_log_lines_total") == 5
        assert value("early_stopping_metric_values_total", {"metric": "val_loss"}) == 3
        assert value("early_stopping_parse_errors_total", {"reason": "not_a_number"}) == 1
        assert value("early_stopping_regex_timeouts_total", {"metric": "val_loss"}) == 1
        assert value("early_stopping_stop_failures_total", {"backend": "signal"}) == 2
        assert value("early_stopping_jobs", {"tuning_job": "tj", "status": "Running"}) == 2
        assert value("early_stopping_objective", {"tuning_job": "tj", "job": "job-a"}) == 0.25
        assert value("early_stopping_decision_latency_seconds_count") == 1
        assert value("early_stopping_decision_latency_seconds_sum") == pytest.approx(0.003)
        assert value("early_stopping_decision_latency_seconds_bucket", {"le": "+Inf"}) == 1
        assert value("early_stopping_stop_duration_seconds_count") == 1
        assert value("early_stopping_stop_duration_seconds_sum") == 1.5
        assert value("early_stopping_stop_duration_seconds_bucket", {"le": "1.0"}) == 0
        assert value("early_stopping_stop_duration_seconds_bucket", {"le": "2.5"}) == 1

    def test_label_names_are_as_documented(self) -> None:
        """Each family carries exactly the documented label names (histograms: none besides `le`)."""
        telemetry = Telemetry(CollectorRegistry())
        populate(telemetry)
        found: dict[str, set[str]] = {}
        for family in telemetry.registry.collect():
            for s in family.samples:
                found.setdefault(s.name, set()).update(s.labels)
        for name, labels in SECTION_7_FAMILIES.items():
            assert name in found, f"{name} is not exposed"
            assert found[name] == labels, name

    def test_families_have_the_documented_types(self) -> None:
        """Counters are counters, job counts and objectives are gauges, latencies histograms."""
        telemetry = Telemetry(CollectorRegistry())
        populate(telemetry)
        types = {f.name: f.type for f in telemetry.registry.collect()}
        assert types == {
            "early_stopping_jobs_stopped": "counter",
            "early_stopping_tuning_job_complete": "gauge",
            "early_stopping_shadow_stops": "counter",
            "early_stopping_log_lines": "counter",
            "early_stopping_metric_values": "counter",
            "early_stopping_parse_errors": "counter",
            "early_stopping_regex_timeouts": "counter",
            "early_stopping_stop_failures": "counter",
            "early_stopping_decision_latency_seconds": "histogram",
            "early_stopping_stop_duration_seconds": "histogram",
            "early_stopping_jobs": "gauge",
            "early_stopping_objective": "gauge",
            # beyond the rule's own: the store's write backlog, faults, bounds
            "early_stopping_store_buffered_values": "gauge",
            "early_stopping_store_write_failures": "counter",
            "early_stopping_job_reruns": "counter",
            "early_stopping_store_rejected_batches": "counter",
            "early_stopping_metric_series_folded": "counter",
            "early_stopping_open_files": "gauge",
            "early_stopping_open_failures": "counter",
            "early_stopping_files_skipped": "counter",
        }

    def test_stop_failures_start_at_zero_for_every_backend(self) -> None:
        """A failure counter that has never moved is still exported (rate() needs a zero)."""
        telemetry = Telemetry(CollectorRegistry())
        for backend in ("signal", "docker", "kubernetes", "command", "none"):
            value = telemetry.registry.get_sample_value(
                "early_stopping_stop_failures_total", {"backend": backend}
            )
            assert value == 0

    def test_two_instances_never_share_a_registry(self) -> None:
        """No global registry: two Telemetry objects (two daemons in one process) coexist."""
        first, second = Telemetry(), Telemetry()
        first.log_lines.inc()
        assert first.registry is not second.registry
        assert second.registry.get_sample_value("early_stopping_log_lines_total") == 0


class TestEngineCollector:
    def test_job_counts_cover_all_four_statuses_with_zeros(self) -> None:
        """Every status is exported per tuning job, including those with no jobs."""
        telemetry = Telemetry(CollectorRegistry())
        telemetry.watch(
            lambda: [
                JobSnapshot("tj", "a", JobStatus.RUNNING, 1.0),
                JobSnapshot("tj", "b", JobStatus.RUNNING, 2.0),
                JobSnapshot("tj", "c", JobStatus.STOPPED, 3.0),
                JobSnapshot("other", "x", JobStatus.COMPLETED, 4.0),
            ]
        )
        value = telemetry.registry.get_sample_value
        counts = {
            (tj, status.value): value(
                "early_stopping_jobs", {"tuning_job": tj, "status": status.value}
            )
            for tj in ("tj", "other")
            for status in JobStatus
        }
        assert counts == {
            ("tj", "Running"): 2,
            ("tj", "Completed"): 0,
            ("tj", "Stopped"): 1,
            ("tj", "Failed"): 0,
            ("other", "Running"): 0,
            ("other", "Completed"): 1,
            ("other", "Stopped"): 0,
            ("other", "Failed"): 0,
        }

    def test_objective_only_for_running_jobs(self) -> None:
        """Completed, Stopped and Failed jobs have no objective series; a running job without a
        value yet has none either."""
        telemetry = Telemetry(CollectorRegistry())
        telemetry.watch(
            lambda: [
                JobSnapshot("tj", "running", JobStatus.RUNNING, 0.5),
                JobSnapshot("tj", "fresh", JobStatus.RUNNING, None),
                JobSnapshot("tj", "done", JobStatus.COMPLETED, 0.4),
                JobSnapshot("tj", "stopped", JobStatus.STOPPED, 0.9),
                JobSnapshot("tj", "failed", JobStatus.FAILED, 0.7),
            ]
        )
        objectives = {
            s.labels["job"]: s.value
            for family in telemetry.registry.collect()
            if family.name == "early_stopping_objective"
            for s in family.samples
        }
        assert objectives == {"running": 0.5}

    def test_a_job_that_ends_loses_its_objective_series(self) -> None:
        """Per-job series are bounded: the objective disappears at the scrape after the job ends."""
        jobs = [JobSnapshot("tj", "a", JobStatus.RUNNING, 0.5)]
        registry = CollectorRegistry()
        registry.register(EngineCollector(lambda: list(jobs)))
        labels = {"tuning_job": "tj", "job": "a"}
        assert registry.get_sample_value("early_stopping_objective", labels) == 0.5
        jobs[0] = JobSnapshot("tj", "a", JobStatus.STOPPED, 0.5)
        assert registry.get_sample_value("early_stopping_objective", labels) is None
        assert (
            registry.get_sample_value(
                "early_stopping_jobs", {"tuning_job": "tj", "status": "Stopped"}
            )
            == 1
        )

    def test_the_snapshot_is_read_at_every_scrape(self) -> None:
        """Values are not cached: a new objective shows at the next scrape."""
        value = [1.0]
        registry = CollectorRegistry()
        registry.register(
            EngineCollector(lambda: [JobSnapshot("tj", "a", JobStatus.RUNNING, value[0])])
        )
        labels = {"tuning_job": "tj", "job": "a"}
        assert registry.get_sample_value("early_stopping_objective", labels) == 1.0
        value[0] = 0.75
        assert registry.get_sample_value("early_stopping_objective", labels) == 0.75


@pytest.fixture
def server() -> Iterator[tuple[HttpServer, Telemetry, list[tuple[bool, str]]]]:
    """An HttpServer on 127.0.0.1, a free port, over a populated Telemetry; `ready` is settable."""
    telemetry = Telemetry(CollectorRegistry())
    populate(telemetry)
    readiness = [(True, "ready")]
    router = Router()
    add_health_routes(router, telemetry.registry, lambda: readiness[0])
    http = HttpServer(bind("127.0.0.1", 0), router)
    http.start()
    yield http, telemetry, readiness
    http.stop(time.monotonic() + 5)


class TestHttpServer:
    def test_metrics_serves_the_exposition_text(
        self, server: tuple[HttpServer, Telemetry, list[tuple[bool, str]]]
    ) -> None:
        """GET /metrics returns what the registry holds, in the text format."""
        http, telemetry, _ = server
        assert http.port > 0
        status, body = get(f"http://127.0.0.1:{http.port}/metrics")
        assert status == 200
        found = samples(body)
        assert found[("early_stopping_log_lines_total", frozenset())] == 5
        assert found == samples(generate_latest(telemetry.registry).decode())

    def test_healthz_is_200(
        self, server: tuple[HttpServer, Telemetry, list[tuple[bool, str]]]
    ) -> None:
        status, _ = get(f"http://127.0.0.1:{server[0].port}/healthz")
        assert status == 200

    def test_readyz_follows_the_ready_callable(
        self, server: tuple[HttpServer, Telemetry, list[tuple[bool, str]]]
    ) -> None:
        """200 while ready; 503 with the reason when not; 200 again when it recovers."""
        http, _, readiness = server
        url = f"http://127.0.0.1:{http.port}/readyz"
        assert get(url)[0] == 200
        readiness[0] = (False, "store unreachable")
        status, body = get(url)
        assert status == 503
        assert "store unreachable" in body
        readiness[0] = (True, "ready")
        assert get(url)[0] == 200

    @pytest.mark.parametrize("path", ["/", "/metrics/extra", "/debug", "/healthz/x"])
    def test_unknown_paths_are_404(
        self, server: tuple[HttpServer, Telemetry, list[tuple[bool, str]]], path: str
    ) -> None:
        """The server exposes metrics and health only."""
        assert get(f"http://127.0.0.1:{server[0].port}{path}")[0] == 404

    @pytest.mark.prometheus
    def test_promtool_accepts_the_metrics_page(
        self, server: tuple[HttpServer, Telemetry, list[tuple[bool, str]]]
    ) -> None:
        """`promtool check metrics` passes on /metrics with real labelled series."""
        status, body = get(f"http://127.0.0.1:{server[0].port}/metrics")
        assert status == 200
        assert 'early_stopping_objective{job="job-a",tuning_job="tj"}' in body
        promtool_check(body)


# -- a real daemon ----------------------------------------------------------------------------
def sidecar_command() -> list[str]:
    """The installed `sidecar` entry point next to this interpreter, else `python -m sidecar`."""
    script = Path(sys.executable).with_name("sidecar")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sidecar"]


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    try:
        status, body = get(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return {}
    return samples(body) if status == 200 else {}


def ready(port: int) -> bool:
    try:
        return get(f"http://127.0.0.1:{port}/readyz")[0] == 200
    except OSError:
        return False


@pytest.mark.slow
class TestDaemonMetrics:
    def test_a_running_daemon_exports_a_stop_and_exits_cleanly(self, tmp_path: Path) -> None:
        """`sidecar run`: a worse second job is stopped (backend none), /metrics shows it and
        passes promtool, /readyz is 200 while running, SIGTERM exits 0."""
        tuning_job = f"live-{secrets.token_hex(4)}"
        logs = tmp_path / "logs"
        logs.mkdir()
        port = free_port()
        cfg = tmp_path / "config.yaml"
        cfg.write_text(
            f"tuning_job: {tuning_job}\n"
            "objective: {metric: val_loss, type: Minimize}\n"
            "metric_definitions:\n"
            "  - {Name: val_loss, Regex: 'val_loss=([0-9.]+)'}\n"
            "epoch: {regex: '^epoch (\\d+) '}\n"
            "early_stopping: {min_jobs: 1}\n"
            f"sources: [{{path: '{logs}/*.log'}}]\n"
            "stop: {backend: none}\n"
            f"store: 'sqlite://{tmp_path}/history.db'\n"
            f"http: {{host: 127.0.0.1, port: {port}}}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        stderr = (tmp_path / "daemon.stderr").open("wb")
        proc = subprocess.Popen(
            [*sidecar_command(), "run", "-c", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
        try:
            wait_for(lambda: ready(port), DEADLINE, what="/readyz is 200", process=proc)
            assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200

            values = ("early_stopping_metric_values_total", frozenset({("metric", "val_loss")}))
            (logs / "job-a.log").write_text("epoch 1 val_loss=0.50\nepoch 2 val_loss=0.40\n")
            wait_for(
                lambda: scrape(port).get(values) == 2,
                DEADLINE,
                what="job-a's values are read",
                process=proc,
            )
            (logs / "job-b.log").write_text("epoch 1 val_loss=0.90\n")

            stopped = (
                "early_stopping_jobs_stopped_total",
                frozenset({("tuning_job", tuning_job)}),
            )
            wait_for(
                lambda: scrape(port).get(stopped) == 1,
                DEADLINE,
                what="job-b is stopped",
                process=proc,
            )

            status, body = get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            found = samples(body)
            assert found[("early_stopping_log_lines_total", frozenset())] == 3
            assert found[values] == 3

            def jobs(status: str) -> float | None:
                key = frozenset({("tuning_job", tuning_job), ("status", status)})
                return found.get(("early_stopping_jobs", key))

            assert (jobs("Running"), jobs("Stopped"), jobs("Completed"), jobs("Failed")) == (
                1,
                1,
                0,
                0,
            )
            objective = "early_stopping_objective"
            job_a = frozenset({("tuning_job", tuning_job), ("job", "job-a")})
            job_b = frozenset({("tuning_job", tuning_job), ("job", "job-b")})
            assert found[(objective, job_a)] == 0.40
            assert (objective, job_b) not in found  # stopped: its series is dropped
            assert ready(port)
            promtool_check(body)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
            finally:
                stderr.close()
        log = (tmp_path / "daemon.stderr").read_text()
        assert code == 0, log
        assert "Traceback" not in log
        events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        decisions = [e for e in events if e.get("event") == "stop_decision"]
        assert len(decisions) == 1  # one structured event per decision, with its evidence
        assert {k: decisions[0][k] for k in ("tuning_job", "job", "epoch", "value")} == {
            "tuning_job": tuning_job,
            "job": "job-b",
            "epoch": 1,
            "value": 0.9,
        }
        assert decisions[0]["median"] == 0.5 and decisions[0]["compared_jobs"] == 1
        assert decisions[0]["outcome"] == "dry_run" and decisions[0]["backend"] == "none"
