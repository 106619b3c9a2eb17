"""A real Prometheus scraping a real `sidecar run`: the stop count, every dashboard query, the
alert rules, evaluated through Prometheus's HTTP API."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, skip_or_fail
from tests.helpers import wait_for
from tests.integration.test_deploy import daemon, free_port, stop_process, wait_ready

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

TUNING_JOB = "deploy-test"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Grafana's own variables, as a short-range dashboard would fill them in
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
DEADLINE = 30.0  # seconds any one condition below may take to become true


@dataclass(frozen=True, slots=True)
class Scraped:
    """A sidecar that stopped one job, and a Prometheus scraping it every second."""

    sidecar: str  # base URL
    prometheus: str  # base URL
    instance: str  # the sidecar's `instance` label

    def query(self, expr: str) -> dict[str, Any]:
        """Prometheus's answer to an instant query (status and data)."""
        return api(self.prometheus, "/api/v1/query", query=expr)


def api(base: str, path: str, **params: str) -> dict[str, Any]:
    """GET a Prometheus API path; the decoded JSON document."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            document: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:  # a bad query: Prometheus explains in JSON
        document = json.load(exc)
    return document


def sidecar_sample(base: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample of the sidecar's own /metrics, read directly (None when absent)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels or {}).items() <= sample.labels.items():
                return float(sample.value)
    return None


def values(result: dict[str, Any]) -> list[float]:
    """The sample values of an instant query's vector or scalar result."""
    data = result["data"]
    if data["resultType"] == "vector":
        return [float(r["value"][1]) for r in data["result"]]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    raise AssertionError(f"unexpected result type {data['resultType']}")


def fill(expr: str, variables: dict[str, str]) -> str:
    """A dashboard expression with `$name` / `${name}` / `${name:format}` filled in; an
    unknown variable fails the test (the dashboard would show nothing for it)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"unknown dashboard variable ${name} in {expr}"
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


@pytest.fixture(scope="module")
def binaries() -> tuple[str, str]:
    """The Prometheus server and promtool (Debian's package)."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if None in found:
        skip_or_fail("prometheus (Debian package `prometheus`) is not installed")
    return found  # type: ignore[return-value]


@pytest.fixture(scope="module")
def scraped(
    binaries: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scraped]:
    """Start `sidecar run` (signal backend on a real process it may stop) and Prometheus
    scraping it every second with deploy/prometheus/alerts.yml loaded; write two jobs' logs so
    the second is stopped, plus a line that does not parse and one that times out its regex;
    yield once Prometheus shows the stop."""
    tmp = tmp_path_factory.mktemp("prometheus")
    logs = tmp / "logs"
    logs.mkdir()
    sidecar_port, prometheus_port = free_port(), free_port()
    token = uuid.uuid4().hex  # only our target process's command line holds it
    (tmp / "config.yaml").write_text(
        f"""
tuning_job: {TUNING_JOB}
objective: {{metric: val_loss, type: Minimize}}
metric_definitions:
  - {{Name: val_loss, Regex: 'val_loss=([-+0-9.eE]+|nan|inf)'}}
  - {{Name: slow, Regex: '^slow (a|aa)+$'}}   # backtracks exponentially: times out on purpose
early_stopping: {{type: Auto, min_jobs: 1, start_epoch: 1}}
regex_timeout_seconds: 0.05
sources: [{{path: '{logs}/*.log', format: plain}}]
stop:
  backend: signal
  grace_seconds: 5
  signal: {{process_match: 'deploy-test-target-{token} --job {{job}}$'}}
store: 'sqlite:///{tmp}/history.db'
http: {{host: 127.0.0.1, port: {sidecar_port}}}
"""
    )
    instance = f"127.0.0.1:{sidecar_port}"
    (tmp / "prometheus.yml").write_text(
        f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ['{ALERTS}']
scrape_configs:
  - job_name: early-stopping-sidecar
    static_configs: [{{targets: ['{instance}']}}]
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
    target = subprocess.Popen(
        [*sleeper, f"deploy-test-target-{token}", "--job", "job-b"],
        start_new_session=True,  # its own process group: the stop must not reach pytest's
    )
    sidecar_url = f"http://{instance}"
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    prometheus_argv = [
        binaries[0],
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
    ]
    try:
        with (
            daemon(
                [sys.executable, "-m", "sidecar", "run", "-c", str(tmp / "config.yaml")],
                env=env,
                stderr=tmp / "sidecar.err",
            ),
            daemon(prometheus_argv, env=env, stderr=tmp / "prometheus.err"),
        ):
            wait_ready(f"{sidecar_url}/readyz", tmp / "sidecar.err")
            wait_ready(f"{prometheus_url}/-/ready", tmp / "prometheus.err")
            scraped = Scraped(sidecar_url, prometheus_url, instance)
            lines = 'early_stopping_log_lines_total{job="early-stopping-sidecar"}'
            # a scrape before any line, so rates over the test's window have a starting point
            wait_for(
                lambda: values(scraped.query(lines)) == [0.0], what="the first scrape", interval=0.1
            )
            with (logs / "job-a.log").open("w") as a:
                a.write("epoch 1 val_loss=0.5\nval_loss=1.2.3\nslow " + "a" * 40 + "!\n")
                a.write("epoch 2 val_loss=0.4\n")
            read = ("early_stopping_metric_values_total", {"metric": "val_loss"})
            wait_for(
                lambda: sidecar_sample(sidecar_url, *read) == 2.0,
                what="job-a's values",
                interval=0.1,
            )
            (logs / "job-b.log").write_text("epoch 1 val_loss=0.9\n")  # launched after job-a
            wait_for(
                lambda: target.poll() is not None,
                what="job-b's target process to be stopped",
                interval=0.1,
            )
            stopped = "early_stopping_jobs_stopped_total"
            wait_for(
                lambda: values(scraped.query(stopped)) == [1.0],
                what="Prometheus to show the stop",
                interval=0.1,
            )
            yield scraped
    finally:
        stop_process(target)


def test_prometheus_reads_the_stop_count(scraped: Scraped) -> None:
    """early_stopping_jobs_stopped_total, through Prometheus, is 1 for the tuning job."""
    result = scraped.query("early_stopping_jobs_stopped_total")
    assert result["status"] == "success"
    [series] = result["data"]["result"]
    assert series["metric"]["tuning_job"] == TUNING_JOB
    assert series["metric"]["job"] == "early-stopping-sidecar"
    assert float(series["value"][1]) == 1.0
    jobs = scraped.query(f'early_stopping_jobs{{tuning_job="{TUNING_JOB}"}}')
    by_status = {r["metric"]["status"]: float(r["value"][1]) for r in jobs["data"]["result"]}
    assert by_status["Stopped"] == 1.0 and by_status["Running"] == 1.0


def test_dashboard_variables_list_the_live_values(scraped: Scraped) -> None:
    """Each `label_values(metric, label)` variable of the dashboard, asked of Prometheus's
    label API as Grafana asks it, lists this sidecar's value."""
    dashboard = json.loads(DASHBOARD.read_text())
    expected = {"instance": scraped.instance, "tuning_job": TUNING_JOB}
    queried = 0
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"])
        assert found, variable["query"]
        metric, label = found.groups()
        answer = api(scraped.prometheus, f"/api/v1/label/{label}/values", **{"match[]": metric})
        assert answer["status"] == "success"
        assert expected[variable["name"]] in answer["data"]
        queried += 1
    assert queried == 2


def test_every_dashboard_query_returns_data(scraped: Scraped) -> None:
    """Every target of every panel, with the dashboard's variables filled in, returns a
    non-empty result with a number in it (not only NaN) from the real Prometheus."""
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {
        **GRAFANA_VARIABLES,
        "instance": scraped.instance,  # one value: a regex matching itself
        "tuning_job": TUNING_JOB,
    }
    targets = [
        (panel["title"], fill(target["expr"], variables))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    assert len(targets) >= 10

    def answered(expr: str) -> Callable[[], dict[str, Any] | None]:
        def check() -> dict[str, Any] | None:
            result = scraped.query(expr)
            assert result["status"] == "success", result
            numbers = [v for v in values(result) if not math.isnan(v)]
            return result if numbers else None

        return check

    for title, expr in targets:
        wait_for(answered(expr), what=f"panel {title!r}: {expr}", interval=0.1)


def test_alert_rules_evaluate_without_error(scraped: Scraped) -> None:
    """Prometheus loaded alerts.yml and evaluated every rule against the sidecar's series
    without an error."""

    def evaluated() -> list[dict[str, Any]] | None:
        groups = api(scraped.prometheus, "/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = all(rule.get("lastEvaluation", "").startswith("2") for rule in rules)
        return rules if rules and done else None

    rules = wait_for(evaluated, what="every rule to be evaluated", interval=0.1)
    assert len(rules) >= 5
    for rule in rules:
        assert rule["health"] == "ok", rule


def test_metric_names_in_the_dashboard_and_alerts_exist(scraped: Scraped) -> None:
    """Every early_stopping_* series name the dashboard or the alerts use is one the running
    sidecar exports (a typo would make a panel or an alert silently empty)."""
    names = set(api(scraped.prometheus, "/api/v1/label/__name__/values")["data"])
    used = set(re.findall(r"early_stopping_\w+", DASHBOARD.read_text() + ALERTS.read_text()))
    assert used
    assert used <= names, sorted(used - names)
