"""The kubernetes backend through the real `kubernetes` client, against a fake API server.

No Kubernetes API server can run here, so `FakeKubernetesApiServer` — a small local HTTP server,
a fake — serves the two calls the backend makes (delete a Pod; delete a batch Job) and records each
request exactly as it arrived: method, path, query, body and headers. The client is configured the
way users configure it, from a kubeconfig file. What a real API server does with these requests
(RBAC, the garbage collector deleting a Job's pods) is Kubernetes' documented behaviour, not
verified here.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry

from sidecar.config import Config, SourceConfig, load_config, validate_config
from sidecar.model import Decision
from sidecar.sources.files import job_for_path
from sidecar.stoppers import PermanentStopError, StopDispatcher, StopError, StopRequest, StopResult
from sidecar.stoppers.factory import make_stopper
from sidecar.stoppers.kubernetes import KubernetesStopper
from sidecar.templates import template_context
from tests.helpers import ROOT, History, ThreadedDaemon, wait_for

TOKEN = "fake-token-4f2a"
DEADLINE = 15.0

# The `job_regex` of docs/sources.md for the kubelet's layout /var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log
POD_LOG_REGEX = (
    r"/var/log/pods/(?P<namespace>[^_/]+)_(?P<job>[^_/]+)_(?P<uid>[^_/]+)"
    r"/(?P<container>[^/]+)/\d+\.log$"
)
# and for pods of batch Jobs (named <job>-<5 characters>): the Job's name is captured as well
JOB_POD_LOG_REGEX = (
    r"/var/log/pods/(?P<namespace>[^_/]+)_(?P<job>(?P<batch_job>[^_/]+)-[a-z0-9]{5})"
    r"_(?P<uid>[^_/]+)/(?P<container>[^/]+)/\d+\.log$"
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake API server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any  # the parsed JSON body, or None when there was none
    headers: dict[str, str]


Reply = tuple[int, dict[str, Any]]


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A `metav1.Status` as the API server sends with an error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeKubernetesApiServer:
    """A FAKE Kubernetes API server (no real one can run here): serves DELETE of a namespaced Pod
    and of a namespaced batch/v1 Job, records every request, and answers each with the next
    scripted reply for its path (default: 200 and the deleted object, as the API server does)."""

    POD = "/api/v1/namespaces/{namespace}/pods/{name}"
    JOB = "/apis/batch/v1/namespaces/{namespace}/jobs/{name}"

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.replies: dict[str, list[Reply]] = {}
        self.delay = 0.0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_DELETE(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:  # recorded too: the backend must make no other call
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

            def do_PATCH(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def reply(self, path: str, *replies: Reply) -> None:
        """Script the replies to the next requests for `path`, in order."""
        with self._lock:
            self.replies.setdefault(path, []).extend(replies)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        url = urlsplit(handler.path)
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    handler.command,
                    url.path,
                    parse_qs(url.query, keep_blank_values=True),
                    json.loads(raw) if raw else None,
                    {k.lower(): v for k, v in handler.headers.items()},
                )
            )
            scripted = self.replies.get(url.path)
            reply = scripted.pop(0) if scripted else None
        if self.delay:
            time.sleep(self.delay)  # simulating a hung API server
        if reply is None:
            reply = self._default(handler.command, url.path)
        code, doc = reply
        data = json.dumps(doc).encode()
        try:
            handler.send_response(code)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass

    @staticmethod
    def _default(method: str, path: str) -> Reply:
        parts = path.strip("/").split("/")
        if method == "DELETE" and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            namespace, name = parts[3], parts[5]
            return 200, {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "deletionTimestamp": "2026-01-01T00:00:00Z",
                },
            }
        if method == "DELETE" and parts[:4] == ["apis", "batch", "v1", "namespaces"]:
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 404, status_body(404, "NotFound", f"the fake serves no {method} {path}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[FakeKubernetesApiServer]:
    server = FakeKubernetesApiServer()
    try:
        yield server
    finally:
        server.close()


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig as `kubectl config` writes it: one cluster, a token user, one context."""
    path.write_text(
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        f"- name: fake\n  cluster: {{server: '{server}'}}\n"
        "users:\n"
        f"- name: sidecar\n  user: {{token: {TOKEN}}}\n"
        "contexts:\n"
        "- name: fake\n  context: {cluster: fake, user: sidecar, namespace: not-this-one}\n"
        "current-context: fake\n"
    )
    return path


@pytest.fixture
def kubeconfig(api: FakeKubernetesApiServer, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", api.url)


def labels_for(path: str, regex: str) -> tuple[str, dict[str, str]]:
    """The job name and template values the tailer takes from a kubelet log path."""
    found = job_for_path(path, SourceConfig(path="/var/log/pods/*/*/*.log", job_regex=regex), "tj")
    assert found is not None, path
    name, labels = found
    return name.job, labels


def request_for(job: str, labels: dict[str, str] | None = None) -> StopRequest:
    return StopRequest(
        Decision("tj", job, 3, 0.9, 0.5, 2, "sagemaker"),
        template_context(job=job, tuning_job="tj", extra=labels),
    )


def pod_stopper(kubeconfig: Path, **kwargs: Any) -> KubernetesStopper:
    options: dict[str, Any] = {
        "namespace": "{namespace}",
        "pod": "{job}",
        "job": None,
        "grace_seconds": 30,
        "kubeconfig": str(kubeconfig),
    }
    options.update(kwargs)
    return KubernetesStopper(**options)


def job_stopper(kubeconfig: Path, **kwargs: Any) -> KubernetesStopper:
    return pod_stopper(kubeconfig, job="{batch_job}", **kwargs)


POD_PATH = "/var/log/pods/ml-team_trainer-lr-0.1_7c9e6679-7425-40de-944b-e07fc1f90ae7/trainer/0.log"
JOB_POD_PATH = (
    "/var/log/pods/ml-team_hpo-42-lr-3-x7k2q_0b1c2d3e-aaaa-bbbb-cccc-0123456789ab/trainer/1.log"
)


class TestDeletePod:
    def test_deletes_the_pod_named_by_the_templates_with_the_grace_period(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        """One DELETE of the Pod in the namespace from the log path, `gracePeriodSeconds` the
        grace period, authenticated with the kubeconfig's token."""
        job, labels = labels_for(POD_PATH, POD_LOG_REGEX)
        assert (job, labels["namespace"]) == ("trainer-lr-0.1", "ml-team")

        result = pod_stopper(kubeconfig).stop(request_for(job, labels))

        assert result is StopResult.STOPPED
        assert len(api.requests) == 1
        sent = api.requests[0]
        assert sent.method == "DELETE"
        assert sent.path == "/api/v1/namespaces/ml-team/pods/trainer-lr-0.1"
        assert sent.query == {"gracePeriodSeconds": ["30"]}
        assert sent.body is None
        assert sent.headers["authorization"] == f"Bearer {TOKEN}"
        assert "application/json" in sent.headers["accept"]

    def test_a_fractional_grace_period_is_rounded_up_and_zero_is_immediate(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        """The API takes whole seconds: 2.5 s becomes 3 (never less than asked); 0 stays 0."""
        pod_stopper(kubeconfig, grace_seconds=2.5).stop(request_for("a", {"namespace": "n"}))
        pod_stopper(kubeconfig, grace_seconds=0).stop(request_for("b", {"namespace": "n"}))
        assert [r.query["gracePeriodSeconds"] for r in api.requests] == [["3"], ["0"]]

    def test_a_fixed_namespace_and_pod_template(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        """Templates mix fixed text and `{job}`/`{tuning_job}`; the kubeconfig's own namespace is
        not used: the stop target is the config's."""
        stopper = pod_stopper(kubeconfig, namespace="training", pod="{tuning_job}-{job}")
        stopper.stop(request_for("lr-3"))
        assert api.requests[0].path == "/api/v1/namespaces/training/pods/tj-lr-3"

    def test_a_pod_already_exited_is_success(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        """404: the pod ended (or was deleted) before the stop: success, not retried."""
        api.reply(
            "/api/v1/namespaces/ml-team/pods/gone",
            (404, status_body(404, "NotFound", 'pods "gone" not found')),
        )
        result = pod_stopper(kubeconfig).stop(request_for("gone", {"namespace": "ml-team"}))
        assert result is StopResult.ALREADY_EXITED
        assert len(api.requests) == 1

    def test_forbidden_is_one_permanent_error_naming_the_verb_and_resource(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        """403: a PermanentStopError whose message names the verb `delete`, the resource `pods`,
        the namespace, the Role rule to add, and what the API server said."""
        api.reply(
            "/api/v1/namespaces/ml-team/pods/p",
            (
                403,
                status_body(
                    403,
                    "Forbidden",
                    'pods "p" is forbidden: User "system:serviceaccount:obs:sidecar" cannot '
                    'delete resource "pods" in API group "" in the namespace "ml-team"',
                ),
            ),
        )
        with pytest.raises(PermanentStopError) as caught:
            pod_stopper(kubeconfig).stop(request_for("p", {"namespace": "ml-team"}))
        message = str(caught.value)
        assert "RBAC" in message
        assert "'delete'" in message
        assert "resource 'pods'" in message
        assert "namespace 'ml-team'" in message
        assert "{apiGroups: [''], resources: ['pods'], verbs: ['delete']}" in message
        assert "system:serviceaccount:obs:sidecar" in message

    @pytest.mark.parametrize("code", [500, 503, 429])
    def test_server_errors_are_retryable(
        self, api: FakeKubernetesApiServer, kubeconfig: Path, code: int
    ) -> None:
        """5xx and 429 raise StopError (retried with backoff), not PermanentStopError."""
        api.reply(
            "/api/v1/namespaces/n/pods/p",
            (code, status_body(code, "InternalError", "etcdserver: request timed out")),
        )
        with pytest.raises(StopError) as caught:
            pod_stopper(kubeconfig).stop(request_for("p", {"namespace": "n"}))
        assert not isinstance(caught.value, PermanentStopError)
        assert str(code) in str(caught.value)
        assert "etcdserver: request timed out" in str(caught.value)
        assert len(api.requests) == 1  # the client itself does not retry: the dispatcher does


class TestDeleteBatchJob:
    def test_deletes_the_owning_job_in_the_background_so_no_pod_is_recreated(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        """With `job` set, the batch Job (named from the pod's name) is deleted — not its pod,
        which the Job controller would replace — with `propagationPolicy=Background`: the Job
        goes at once and the garbage collector deletes its pods. (Without a policy, batch/v1
        orphans them: they would keep running.)"""
        job, labels = labels_for(JOB_POD_PATH, JOB_POD_LOG_REGEX)
        assert (job, labels["batch_job"], labels["namespace"]) == (
            "hpo-42-lr-3-x7k2q",
            "hpo-42-lr-3",
            "ml-team",
        )

        result = job_stopper(kubeconfig).stop(request_for(job, labels))

        assert result is StopResult.STOPPED
        assert len(api.requests) == 1
        sent = api.requests[0]
        assert sent.method == "DELETE"
        assert sent.path == "/apis/batch/v1/namespaces/ml-team/jobs/hpo-42-lr-3"
        assert sent.query == {"gracePeriodSeconds": ["30"], "propagationPolicy": ["Background"]}
        assert sent.body is None
        assert sent.headers["authorization"] == f"Bearer {TOKEN}"
        assert not any("/pods/" in r.path for r in api.requests)

    def test_a_job_already_exited_is_success(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        api.reply(
            "/apis/batch/v1/namespaces/n/jobs/j",
            (404, status_body(404, "NotFound", 'jobs.batch "j" not found')),
        )
        stopper = job_stopper(kubeconfig, namespace="n")
        assert stopper.stop(request_for("j-abcde", {"batch_job": "j"})) is StopResult.ALREADY_EXITED

    def test_forbidden_names_delete_on_jobs_in_the_batch_group(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        """403 on a Job: the missing permission is `delete` on `jobs.batch` in the namespace."""
        api.reply(
            "/apis/batch/v1/namespaces/n/jobs/j", (403, status_body(403, "Forbidden", "denied"))
        )
        with pytest.raises(PermanentStopError) as caught:
            job_stopper(kubeconfig, namespace="n").stop(request_for("j-abcde", {"batch_job": "j"}))
        message = str(caught.value)
        assert "'delete'" in message
        assert "resource 'jobs.batch'" in message
        assert "namespace 'n'" in message
        assert "{apiGroups: ['batch'], resources: ['jobs'], verbs: ['delete']}" in message

    def test_a_server_error_is_retryable(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        api.reply("/apis/batch/v1/namespaces/n/jobs/j", (500, status_body(500, "Internal", "x")))
        with pytest.raises(StopError) as caught:
            job_stopper(kubeconfig, namespace="n").stop(request_for("j-abcde", {"batch_job": "j"}))
        assert not isinstance(caught.value, PermanentStopError)


class TestConnection:
    def test_a_hung_api_server_is_a_retryable_timeout(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        """An API server that does not answer cannot hold a stopper thread: the request times
        out and the attempt fails with a retryable StopError."""
        api.delay = 3.0
        stopper = pod_stopper(kubeconfig, request_timeout=(1.0, 0.5))
        with pytest.raises(StopError) as caught:
            stopper.stop(request_for("p", {"namespace": "n"}))
        assert not isinstance(caught.value, PermanentStopError)

    def test_an_unreachable_api_server_is_retryable(self, tmp_path: Path) -> None:
        """Connection refused (the API server restarting) is a retryable StopError."""
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        config = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
        with pytest.raises(StopError) as caught:
            pod_stopper(config).stop(request_for("p", {"namespace": "n"}))
        assert not isinstance(caught.value, PermanentStopError)

    def test_a_missing_kubeconfig_is_a_permanent_error(self, tmp_path: Path) -> None:
        """No client configuration: retrying cannot help, one clear error."""
        with pytest.raises(PermanentStopError, match="configuration"):
            pod_stopper(tmp_path / "missing").stop(request_for("p", {"namespace": "n"}))


class TestThroughTheDispatcher:
    @staticmethod
    def dispatch(stopper: KubernetesStopper) -> tuple[list[StopResult | None], list[Exception]]:
        results: list[StopResult | None] = []
        failures: list[Exception] = []
        dispatcher = StopDispatcher(
            stopper,
            on_result=lambda outcome: results.append(outcome.result),
            on_failure=lambda req, error: failures.append(error),
            backoff=0.01,
        )
        try:
            assert dispatcher.submit(request_for("p", {"namespace": "n"}))
            wait_for(lambda: results, DEADLINE, what="the stop to finish")
        finally:
            dispatcher.close(DEADLINE)
        return results, failures

    def test_a_server_error_is_retried_until_the_delete_succeeds(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        """500 then 200: two identical requests, one counted failure, then STOPPED."""
        api.reply("/api/v1/namespaces/n/pods/p", (500, status_body(500, "InternalError", "x")))
        results, failures = self.dispatch(pod_stopper(kubeconfig))
        assert results == [StopResult.STOPPED]
        assert len(failures) == 1
        assert [r.path for r in api.requests] == ["/api/v1/namespaces/n/pods/p"] * 2
        assert api.requests[0].query == api.requests[1].query

    def test_forbidden_is_not_retried(self, api: FakeKubernetesApiServer, kubeconfig: Path) -> None:
        """403: exactly one request, one failure, and the stop ends as failed."""
        api.reply("/api/v1/namespaces/n/pods/p", (403, status_body(403, "Forbidden", "no")))
        results, failures = self.dispatch(pod_stopper(kubeconfig))
        assert results == [None]
        assert len(failures) == 1
        assert isinstance(failures[0], PermanentStopError)
        assert len(api.requests) == 1


class TestFromConfig:
    def test_the_factory_builds_it_from_stop_kubernetes(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        """`stop.kubernetes` (namespace, pod, job, kubeconfig) and `grace_seconds` are used."""
        config: Config = validate_config(
            {
                "objective": {"metric": "loss"},
                # the source whose job_regex groups the templates use
                "sources": [{"path": "/var/log/pods/*/*/*.log", "job_regex": JOB_POD_LOG_REGEX}],
                "stop": {
                    "backend": "kubernetes",
                    "grace_seconds": 12,
                    "kubernetes": {
                        "namespace": "{namespace}",
                        "job": "{batch_job}",
                        "kubeconfig": str(kubeconfig),
                    },
                },
            }
        )
        stopper = make_stopper(config)
        assert isinstance(stopper, KubernetesStopper)
        job, labels = labels_for(JOB_POD_PATH, JOB_POD_LOG_REGEX)
        assert stopper.stop(request_for(job, labels)) is StopResult.STOPPED
        assert api.requests[0].path == "/apis/batch/v1/namespaces/ml-team/jobs/hpo-42-lr-3"
        assert api.requests[0].query["gracePeriodSeconds"] == ["12"]

    def test_the_shipped_daemonset_config_deletes_the_trials_batch_job(
        self, api: FakeKubernetesApiServer, kubeconfig: Path
    ) -> None:
        """deploy/kubernetes/daemonset.yaml's own config: a trial's kubelet log path names the
        batch Job in its namespace, which is deleted in the background (only the kubeconfig is
        this test's: in the cluster the in-cluster config is used)."""
        documents = yaml.safe_load_all((ROOT / "deploy/kubernetes/daemonset.yaml").read_text())
        configmap = next(d for d in documents if d and d["kind"] == "ConfigMap")
        config = load_config(configmap["data"]["config.yaml"], env={})
        target = config.stop.kubernetes
        stopper = KubernetesStopper(
            namespace=target.namespace,
            pod=target.pod,
            job=target.job,
            grace_seconds=config.stop.grace_seconds,
            kubeconfig=str(kubeconfig),
        )
        path = (
            "/var/log/pods/ml-training_xgb-hpo-42--trial-7-x7k2q_"
            "0b1c2d3e-aaaa-bbbb-cccc-0123456789ab/trainer/0.log"
        )
        found = job_for_path(path, config.sources[0], config.tuning_job)
        assert found is not None
        name, labels = found
        assert (name.tuning_job, name.job) == ("xgb-hpo-42", "xgb-hpo-42--trial-7")

        assert stopper.stop(request_for(name.job, labels)) is StopResult.STOPPED

        assert [(r.method, r.path, r.query) for r in api.requests] == [
            (
                "DELETE",
                "/apis/batch/v1/namespaces/ml-training/jobs/xgb-hpo-42--trial-7",
                {"gracePeriodSeconds": ["30"], "propagationPolicy": ["Background"]},
            )
        ]

    def test_the_daemon_reading_kubelet_logs_deletes_the_losing_pod(
        self, api: FakeKubernetesApiServer, kubeconfig: Path, tmp_path: Path
    ) -> None:
        """The node setup of docs/sources.md end to end: `sidecar run` reads CRI logs laid out as
        /var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log, names jobs with `job_regex`, and
        deletes the losing pod in its own namespace — and nothing else."""
        pods = tmp_path / "var" / "log" / "pods"
        layout = {
            "good-a": ("team-a", [0.9, 0.8, 0.7]),
            "good-b": ("team-a", [1.0, 0.9, 0.8]),
            "bad-c": ("team-b", [5.0, 4.0, 3.0]),
        }
        config = load_config(
            "tuning_job: hpo\n"
            "objective: {metric: loss}\n"
            "metric_definitions: [{Name: loss, Regex: 'loss=([0-9.]+)'}]\n"
            "early_stopping: {min_jobs: 2}\n"
            f"sources: [{{path: '{pods}/*/trainer/*.log', format: cri,"
            f" job_regex: '{POD_LOG_REGEX}'}}]\n"
            "stop:\n"
            "  backend: kubernetes\n"
            "  grace_seconds: 20\n"
            f"  kubernetes: {{namespace: '{{namespace}}', pod: '{{job}}', kubeconfig: '{kubeconfig}'}}\n"
            f"store: 'sqlite://{tmp_path}/h.db'\n"
            "http: {host: 127.0.0.1, port: 0}\n"
            "node: test-node\n",
            env={},
        )
        history = History(tmp_path / "h.db", "hpo")
        with ThreadedDaemon(config, registry=CollectorRegistry()):
            for uid, (pod, (namespace, losses)) in enumerate(layout.items()):
                log = pods / f"{namespace}_{pod}_0000-{uid}" / "trainer" / "0.log"
                log.parent.mkdir(parents=True)
                log.write_text(
                    "".join(
                        f"2026-01-01T00:00:0{i}.000000000Z stdout F loss={v}\n"
                        for i, v in enumerate(losses)
                    )
                )
                # one pod after another: launch order is the order of the files
                count = len(losses)
                wait_for(
                    lambda p=pod, n=count: len(history.values(p, "loss")) == n,  # type: ignore[misc]
                    DEADLINE,
                    what=f"{pod} applied",
                )
            wait_for(lambda: api.requests, DEADLINE, what="the delete request")
        assert history.status("bad-c") == "Stopped"
        assert [(r.method, r.path, r.query) for r in api.requests] == [
            ("DELETE", "/api/v1/namespaces/team-b/pods/bad-c", {"gracePeriodSeconds": ["20"]})
        ]
