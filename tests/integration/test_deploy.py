"""deploy/ checked with the real tools: hadolint, kubernetes-validate, promtool, systemd-analyze."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
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
from typing import Any

import pytest
import regex
import yaml

from sidecar.config import Config, load_config
from sidecar.sources.files import job_for_path
from sidecar.templates import render_template
from tests.conftest import ROOT, skip_or_fail

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
VENV_BIN = Path(sys.executable).parent

# Native sidecar containers (init containers with restartPolicy: Always) are on by default from
# Kubernetes 1.29; the manifests must validate there and on the newest version the package knows.
OLDEST_K8S = "1.29.0"

# A kubelet log path of the naming convention daemonset.yaml documents.
KUBELET_LOG = (
    "/var/log/pods/ml-training_xgb-hpo-42--lr-0-01-x7k2p_"
    "0b6c1a4e-8f3d-4c2a-9e1b-2d5f7a9c3e11/trainer/0.log"
)


def tool(name: str) -> str:
    """The path of a command-line tool (the venv's first), or skip (fail under CI) without it."""
    found = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        skip_or_fail(f"{name} is not installed")
    assert found is not None
    return found


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion, capturing its output."""
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a manifest file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every manifest under deploy/kubernetes/."""
    return [(p.name, doc) for p in sorted(K8S.glob("*.yaml")) for doc in documents(p)]


def find(kind: str, name: str) -> dict[str, Any]:
    """The one manifest document of this kind and name."""
    found = [d for _, d in all_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    """A container or init container of a pod spec, by name."""
    for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name!r}")


def mounted_config(pod: dict[str, Any], c: dict[str, Any]) -> tuple[Config, str]:
    """The sidecar config a container reads: its ConfigMap's config.yaml, validated."""
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/sidecar")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    text = find("ConfigMap", volume["configMap"]["name"])["data"]["config.yaml"]
    assert c["args"] == ["run", "-c", "/etc/sidecar/config.yaml"]
    return load_config(text, env={}, source=volume["configMap"]["name"]), text


def under_mount(c: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mount of a container that holds `path`."""
    mounts = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{path} is on no volume of container {c['name']}"
    return max(mounts, key=lambda m: len(m["mountPath"]))


def sqlite_path(store: str) -> str:
    """The file of a `sqlite:///...` store URL."""
    assert store.startswith("sqlite:///"), store
    return store.removeprefix("sqlite://")


def caps(c: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A container's dropped and added capabilities."""
    capabilities = c.get("securityContext", {}).get("capabilities", {})
    return capabilities.get("drop", []), capabilities.get("add", [])


def effective(pod: dict[str, Any], c: dict[str, Any], field: str) -> Any:
    """A security setting as it applies to a container: its own, else the pod's."""
    return c.get("securityContext", {}).get(field, pod.get("securityContext", {}).get(field))


def check_probes(c: dict[str, Any], config: Config) -> None:
    """Liveness on /healthz and readiness on /readyz, at the port the config serves."""
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == config.http.port
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert set(c["resources"]) == {"requests", "limits"}


# -- running processes ----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def daemon(
    argv: list[str], *, env: dict[str, str], stderr: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A background process with its stderr in a file, terminated (then killed) on exit."""
    with stderr.open("wb") as err:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is still running after 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wait_ready(url: str, stderr: Path, timeout: float = 30.0) -> None:
    """Poll a URL until it answers 200, or fail with the process's stderr."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)  # the polling interval; the deadline above bounds the wait
    pytest.fail(f"{url} not ready after {timeout} s; stderr:\n{stderr.read_text()[-3000:]}")


class TestDockerfile:
    """deploy/Dockerfile: hadolint-clean, non-root, the sidecar entrypoint."""

    def test_hadolint_reports_nothing(self) -> None:
        """hadolint (default threshold: any finding fails) passes on the Dockerfile."""
        result = run(tool("hadolint"), DEPLOY / "Dockerfile")
        assert result.returncode == 0, result.stdout + result.stderr

    def test_runtime_stage_is_non_root_with_the_sidecar_entrypoint(self) -> None:
        """The last stage runs as a numeric non-root user, `sidecar run -c` the mounted config."""
        text = (DEPLOY / "Dockerfile").read_text()
        final = text[text.rindex("\nFROM ") :]
        user = re.findall(r"^USER (\S+)$", final, re.M)
        assert len(user) == 1
        uid = user[0].split(":")[0]
        assert uid.isdigit() and int(uid) != 0
        assert re.search(r'^ENTRYPOINT \["sidecar"\]$', final, re.M)
        assert re.search(r'^CMD \["run", "-c", "/etc/sidecar/config.yaml"\]$', final, re.M)
        assert re.search(r"^EXPOSE 9108$", final, re.M)
        assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)

    def test_copied_files_exist_and_pass_the_ignore_file(self) -> None:
        """Every COPY source from the build context exists and is not excluded by
        Dockerfile.dockerignore (a build would fail on either)."""
        sources = []
        for line in (DEPLOY / "Dockerfile").read_text().splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                sources.extend(line.split()[1:-1])
        assert sources
        patterns = [
            p.strip()
            for p in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
            if p.strip() and not p.startswith("#")
        ]
        for source in sources:
            assert (ROOT / source).exists(), source
            included = True  # the last matching pattern decides, as in .dockerignore
            for pattern in patterns:
                negated = pattern.startswith("!")
                if fnmatch.fnmatch(source.rstrip("/"), pattern.lstrip("!").rstrip("/")):
                    included = negated
            assert included, f"{source} is excluded from the build context"

    def test_constraints_pin_every_runtime_dependency(self) -> None:
        """deploy/constraints.txt pins (==) each dependency the image installs."""
        pins = {}
        for line in (DEPLOY / "constraints.txt").read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, version = line.partition("==")
                assert version, f"not pinned: {line}"
                pins[re.sub(r"[-_.]+", "-", name).lower()] = version
        pyproject = (ROOT / "pyproject.toml").read_text()
        wanted = ["watchdog", "regex", "prometheus-client", "structlog", "pyyaml", "pydantic"]
        wanted += ["docker", "kubernetes"]  # EXTRAS in the Dockerfile
        for name in wanted:
            assert name in pyproject.lower()
            assert name in pins, f"{name} is not pinned in deploy/constraints.txt"


@pytest.fixture(scope="module")
def versions() -> list[str]:
    """The oldest Kubernetes with native sidecars on by default, and the newest bundled."""
    try:
        from kubernetes_validate import utils
    except ImportError:
        skip_or_fail("kubernetes-validate is not installed")
    return sorted({OLDEST_K8S, utils.latest_version()})


class TestKubernetesManifests:
    """Every manifest validates strictly against the Kubernetes schemas (kubernetes-validate)."""

    @pytest.mark.parametrize(
        ("file", "doc"),
        [
            pytest.param(f, d, id=f"{f}:{d['kind']}/{d['metadata']['name']}")
            for f, d in all_documents()
        ],
    )
    def test_document_validates_strictly(
        self, versions: list[str], file: str, doc: dict[str, Any]
    ) -> None:
        """Built-in kinds pass strict validation (unknown fields are errors) on each version;
        the ServiceMonitor, a CRD kubernetes-validate has no schema for, is checked in
        test_servicemonitor_structure instead."""
        import kubernetes_validate

        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(doc, versions[-1], strict=True)
            return
        for version in versions:
            kubernetes_validate.validate(doc, version, strict=True)

    def test_servicemonitor_structure(self) -> None:
        """The ServiceMonitor has the Prometheus Operator's shape (a schema of the fields it
        uses) and selects the Service by its labels and the port by its name."""
        import jsonschema

        relabel = {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "sourceLabels": {"type": "array", "items": {"type": "string"}},
                "separator": {"type": "string"},
                "targetLabel": {"type": "string"},
                "regex": {"type": "string"},
                "replacement": {"type": "string"},
                "action": {
                    "enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"]
                },
            },
        }
        duration = {"type": "string", "pattern": "^(0|([0-9]+(ms|s|m|h))+)$"}
        schema = {
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {
                "apiVersion": {"const": "monitoring.coreos.com/v1"},
                "kind": {"const": "ServiceMonitor"},
                "metadata": {"type": "object", "required": ["name", "namespace"]},
                "spec": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["selector", "endpoints"],
                    "properties": {
                        "jobLabel": {"type": "string"},
                        "selector": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "matchLabels": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                }
                            },
                        },
                        "namespaceSelector": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "any": {"type": "boolean"},
                                "matchNames": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        "endpoints": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["port"],
                                "properties": {
                                    "port": {"type": "string"},
                                    "path": {"type": "string"},
                                    "scheme": {"enum": ["http", "https"]},
                                    "interval": duration,
                                    "scrapeTimeout": duration,
                                    "honorLabels": {"type": "boolean"},
                                    "relabelings": {"type": "array", "items": relabel},
                                    "metricRelabelings": {"type": "array", "items": relabel},
                                },
                            },
                        },
                    },
                },
            },
        }
        monitor = find("ServiceMonitor", "early-stopping-sidecar")
        jsonschema.validate(monitor, schema)
        service = find("Service", "early-stopping-sidecar")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= (
            service["metadata"]["labels"].items()
        )
        assert (
            service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
        )
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names

    def test_every_configmap_holds_a_valid_sidecar_config(self) -> None:
        """Each ConfigMap's config.yaml loads with the sidecar's own validation."""
        maps = [d for _, d in all_documents() if d["kind"] == "ConfigMap"]
        assert len(maps) == 2
        for cm in maps:
            load_config(cm["data"]["config.yaml"], env={}, source=cm["metadata"]["name"])

    def test_pods_run_in_the_namespaces_created(self) -> None:
        """Namespaced objects live in the namespaces namespaces.yaml creates."""
        created = {d["metadata"]["name"] for d in documents(K8S / "namespaces.yaml")}
        for file, doc in all_documents():
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] in created, (file, doc["metadata"])


class TestTrainingPod:
    """training-pod.yaml: the sidecar as a native sidecar signalling the trainer."""

    @pytest.fixture
    def pod(self) -> dict[str, Any]:
        """The pod spec of the training Job."""
        job = find("Job", "lr-sweep")
        spec: dict[str, Any] = job["spec"]["template"]["spec"]
        return spec

    def test_sidecar_is_a_native_sidecar_sharing_the_process_namespace(
        self, pod: dict[str, Any]
    ) -> None:
        """The sidecar is an init container with restartPolicy Always, in a pod that shares its
        process namespace, with no service-account token (it needs no API)."""
        assert pod["shareProcessNamespace"] is True
        assert [c["name"] for c in pod["initContainers"]] == ["sidecar"]
        assert pod["initContainers"][0]["restartPolicy"] == "Always"
        assert [c["name"] for c in pod["containers"]] == ["trainer"]
        assert pod["automountServiceAccountToken"] is False

    def test_capabilities_are_exactly_what_signalling_needs(self, pod: dict[str, Any]) -> None:
        """Every container drops ALL. The sidecar adds nothing when it runs as the trainer's
        user (kill(2) needs no capability then); it may add KILL, and only KILL, when the users
        differ, and then only as UID 0: Kubernetes gives added capabilities to root only."""
        sidecar, trainer = container(pod, "sidecar"), container(pod, "trainer")
        for c in (sidecar, trainer):
            drop, _ = caps(c)
            assert drop == ["ALL"], c["name"]
            assert effective(pod, c, "allowPrivilegeEscalation") is False
            assert effective(pod, c, "readOnlyRootFilesystem") is True
        assert caps(trainer)[1] == []
        same_user = effective(pod, sidecar, "runAsUser") == effective(pod, trainer, "runAsUser")
        added = caps(sidecar)[1]
        if same_user:
            assert added == []
        else:
            assert added == ["KILL"]
            assert effective(pod, sidecar, "runAsUser") == 0

    def test_meets_the_restricted_pod_security_profile(self, pod: dict[str, Any]) -> None:
        """Non-root, RuntimeDefault seccomp, no host namespaces or paths: the ml-training
        namespace enforces `restricted`."""
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not any(pod.get(k) for k in ("hostPID", "hostIPC", "hostNetwork"))
        assert all("hostPath" not in v for v in pod["volumes"])
        namespace = find("Namespace", "ml-training")
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
            "restricted"
        )

    def test_config_signals_the_trainer_and_reads_the_shared_logs(
        self, pod: dict[str, Any]
    ) -> None:
        """The signal backend with process_match; the source glob is on the emptyDir the trainer
        writes; the store is on a writable volume; probes match the config's port."""
        sidecar, trainer = container(pod, "sidecar"), container(pod, "trainer")
        config, _ = mounted_config(pod, sidecar)
        assert config.stop.backend == "signal"
        assert config.stop.signal.process_match and "{job}" in config.stop.signal.process_match
        source = config.sources[0].path
        assert source is not None
        logs = under_mount(sidecar, source)
        assert logs["readOnly"] is True
        volume = next(v for v in pod["volumes"] if v["name"] == logs["name"])
        assert "emptyDir" in volume
        trainer_logs = under_mount(trainer, source)
        assert trainer_logs["name"] == logs["name"]
        assert not trainer_logs.get("readOnly", False)
        assert not under_mount(sidecar, sqlite_path(config.store)).get("readOnly", False)
        check_probes(sidecar, config)
        env = {e["name"]: e for e in sidecar["env"]}
        label = env["SIDECAR_TUNING_JOB"]["valueFrom"]["fieldRef"]["fieldPath"]
        key = re.fullmatch(r"metadata\.labels\['([^']+)'\]", label)
        assert (
            key
            and key.group(1) in find("Job", "lr-sweep")["spec"]["template"]["metadata"]["labels"]
        )

    def test_process_match_finds_exactly_one_trial(self, pod: dict[str, Any]) -> None:
        """process_match, filled in as the signal backend fills it (regex-escaped job), matches
        the trainer's command line of that trial only: not other trials, not the shell around it."""
        config, _ = mounted_config(pod, container(pod, "sidecar"))
        pattern = config.stop.signal.process_match
        assert pattern is not None

        def matches(job: str, line: str) -> bool:
            compiled = regex.compile(render_template(pattern, {"job": regex.escape(job)}))
            return compiled.search(line) is not None

        trainer = "python -m sidecar.demo.trainer --job {} --lr {} --epochs 12 --epoch-seconds 5"
        assert matches("lr-0.03", trainer.format("lr-0.03", "0.03"))
        assert not matches("lr-0.03", trainer.format("lr-0.0300", "0.03"))
        assert not matches("lr-0.03", trainer.format("lr-0x03", "0.03"))
        script = container(pod, "trainer")["args"][0]
        inner = re.search(r"sh -c '([^']*)'", script)
        assert inner is not None
        assert not matches("lr-0.03", f"sh -c {inner.group(1)} trial lr-0.03 0.03")

    @pytest.mark.slow
    def test_sweep_and_sidecar_run_as_the_pod_runs_them(
        self, pod: dict[str, Any], tmp_path: Path
    ) -> None:
        """The trainer container's script and the sidecar's config, run on this host with the
        pod's paths moved into tmp and epochs shortened: the sidecar stops losing trials through
        process_match, and the sweep goes on to its last trial (setsid keeps them apart)."""
        if shutil.which("setsid") is None or shutil.which("sh") is None:
            skip_or_fail("setsid (util-linux) and sh are needed")
        sidecar, trainer = container(pod, "sidecar"), container(pod, "trainer")
        _, text = mounted_config(pod, sidecar)
        logs, state = tmp_path / "logs", tmp_path / "state"
        logs.mkdir()
        state.mkdir()
        port = free_port()
        text = text.replace("/logs/", f"{logs}/").replace("/var/lib/sidecar/", f"{state}/")
        text = re.sub(r"port: 9108", f"port: {port}", text).replace("0.0.0.0", "127.0.0.1")
        (tmp_path / "config.yaml").write_text(text)
        script = trainer["args"][0].replace("/logs/", f"{logs}/")
        script = script.replace("--epoch-seconds 5", "--epoch-seconds 0.1")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        with daemon(
            [sys.executable, "-m", "sidecar", "run", "-c", str(tmp_path / "config.yaml")],
            env=env,
            stderr=tmp_path / "sidecar.err",
        ):
            wait_ready(f"http://127.0.0.1:{port}/readyz", tmp_path / "sidecar.err")
            sweep = subprocess.run(
                [*trainer["command"], script],
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
                check=False,
            )
        assert sweep.returncode == 0, sweep.stderr
        trials = ["lr-0.03", "lr-0.01", "lr-0.001", "lr-0.05", "lr-0.0003", "lr-0.02"]
        assert sorted(p.stem for p in logs.glob("*.log")) == sorted(trials)
        # the trainer that process_match finds does not lead the setsid group (sh does): it is
        # signalled alone, tee ends at EOF, and the trainer's last words reach the log
        stopped = [t for t in trials if "received SIGTERM" in (logs / f"{t}.log").read_text()]
        assert "lr-0.001" in stopped and "lr-0.0003" in stopped, sweep.stdout
        assert all(f"trial {t} ended" in sweep.stdout for t in trials), sweep.stdout
        assert "lr-0.03" not in stopped
        for t in trials:
            finished = "training finished" in (logs / f"{t}.log").read_text()
            assert finished == (t not in stopped), t
        decisions = [
            json.loads(line)
            for line in (tmp_path / "sidecar.err").read_text().splitlines()
            if '"stop_decision"' in line
        ]
        assert sorted(d["job"] for d in decisions) == sorted(stopped)
        assert {d["outcome"] for d in decisions} == {"stopped"}
        assert (logs / "lr-0.02.log").read_text().startswith("starting job lr-0.02")


class TestNodeDaemonSet:
    """daemonset.yaml and rbac.yaml: /var/log/pods, the kubernetes backend, least privilege."""

    @pytest.fixture
    def daemonset(self) -> dict[str, Any]:
        """The node DaemonSet."""
        return find("DaemonSet", "early-stopping-sidecar")

    @pytest.fixture
    def config(self, daemonset: dict[str, Any]) -> Config:
        """The DaemonSet's sidecar config."""
        pod = daemonset["spec"]["template"]["spec"]
        return mounted_config(pod, container(pod, "sidecar"))[0]

    def test_reads_pod_logs_read_only_with_no_capabilities(self, daemonset: dict[str, Any]) -> None:
        """/var/log/pods is a read-only hostPath; the container drops ALL capabilities and adds
        none, cannot escalate, and has a read-only root filesystem."""
        pod = daemonset["spec"]["template"]["spec"]
        c = container(pod, "sidecar")
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/var/log/pods")
        assert mount["readOnly"] is True
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["hostPath"]["path"] == "/var/log/pods"
        assert caps(c) == (["ALL"], [])
        assert effective(pod, c, "allowPrivilegeEscalation") is False
        assert effective(pod, c, "readOnlyRootFilesystem") is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}

    def test_config_reads_cri_files_and_names_the_node(
        self, daemonset: dict[str, Any], config: Config
    ) -> None:
        """Sources are CRI files under /var/log/pods; SIDECAR_NODE comes from spec.nodeName; the
        store is on a writable volume; probes match the config's port."""
        pod = daemonset["spec"]["template"]["spec"]
        c = container(pod, "sidecar")
        assert [s.format for s in config.sources] == ["cri"]
        assert config.sources[0].path and config.sources[0].path.startswith("/var/log/pods/")
        env = {e["name"]: e for e in c["env"]}
        assert env["SIDECAR_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        store = under_mount(c, sqlite_path(config.store))
        assert not store.get("readOnly", False)
        check_probes(c, config)

    def test_job_regex_turns_a_kubelet_path_into_the_job_to_delete(self, config: Config) -> None:
        """A trainer container's log path yields its tuning job, and the stop templates render
        to that trial's batch Job in its namespace; other containers, rotated files and other
        namespaces are not followed."""
        source = config.sources[0]
        assert source.path is not None and fnmatch.fnmatch(KUBELET_LOG, source.path)
        found = job_for_path(KUBELET_LOG, source, config.tuning_job)
        assert found is not None
        name, groups = found
        assert (name.tuning_job, name.job) == ("xgb-hpo-42", "xgb-hpo-42--lr-0-01")
        context = {**groups, "job": name.job, "tuning_job": name.tuning_job}
        assert config.stop.backend == "kubernetes"
        assert render_template(config.stop.kubernetes.namespace, context) == "ml-training"
        assert config.stop.kubernetes.job is not None
        assert render_template(config.stop.kubernetes.job, context) == "xgb-hpo-42--lr-0-01"
        for other in (
            KUBELET_LOG.replace("/trainer/", "/sidecar/"),
            KUBELET_LOG + ".20250101-000000",
            KUBELET_LOG.replace("ml-training_", "kube-system_"),
            KUBELET_LOG.replace("xgb-hpo-42--lr-0-01", "no-double-dash"),
        ):
            assert job_for_path(other, source, config.tuning_job) is None, other

    def test_role_grants_exactly_what_the_backend_needs(
        self, daemonset: dict[str, Any], config: Config
    ) -> None:
        """One rule: `delete` on batch Jobs when stop.kubernetes.job is set (else on pods), in
        the only namespace job_regex admits, bound to the DaemonSet's service account; no
        ClusterRole or ClusterRoleBinding anywhere."""
        if config.stop.kubernetes.job is not None:
            needed = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["delete"]}]
        else:
            needed = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]
        role = find("Role", "early-stopping-sidecar")
        assert role["rules"] == needed
        binding = find("RoleBinding", "early-stopping-sidecar")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        account = daemonset["spec"]["template"]["spec"]["serviceAccountName"]
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": account,
                "namespace": daemonset["metadata"]["namespace"],
            }
        ]
        find("ServiceAccount", account)
        assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
        namespace_group = re.search(r"\(\?P<namespace>([^)]*)\)", config.sources[0].job_regex or "")
        assert namespace_group is not None
        assert namespace_group.group(1) == role["metadata"]["namespace"]
        kinds = {d["kind"] for _, d in all_documents()}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}

    def test_service_selects_the_daemonset_with_scrape_annotations(
        self, daemonset: dict[str, Any], config: Config
    ) -> None:
        """The headless Service selects the DaemonSet's pods and carries prometheus.io
        annotations for the port the sidecar serves."""
        service = find("Service", "early-stopping-sidecar")
        labels = daemonset["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["clusterIP"] == "None"
        annotations = service["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(config.http.port)
        assert annotations["prometheus.io/path"] == "/metrics"


class TestPrometheusFiles:
    """deploy/prometheus/: promtool checks the scrape configs, the rules and the rule tests."""

    def test_alert_rules_check(self) -> None:
        """`promtool check rules` accepts alerts.yml."""
        result = run(tool("promtool"), "check", "rules", PROMETHEUS / "alerts.yml")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    def test_alert_rules_unit_tests(self) -> None:
        """`promtool test rules`: the alerts fire (and stay quiet) on synthetic series as
        alerts_test.yml expects, annotations included."""
        result = run(tool("promtool"), "test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_static_scrape_config_check(self) -> None:
        """`promtool check config` accepts prometheus.yml and the rule file it loads."""
        result = run(tool("promtool"), "check", "config", PROMETHEUS / "prometheus.yml")
        assert result.returncode == 0, result.stdout + result.stderr

    def test_kubernetes_scrape_config_check(self, tmp_path: Path) -> None:
        """`promtool check config` accepts prometheus-kubernetes.yml. Debian's promtool is built
        without Kubernetes service discovery; with it, the file is checked with its
        kubernetes_sd_configs block swapped for a static target (everything else, the relabel
        rules included, is checked by promtool) and the block's own fields checked here."""
        promtool = tool("promtool")
        source = PROMETHEUS / "prometheus-kubernetes.yml"
        result = run(promtool, "check", "config", source)
        if "field kubernetes_sd_configs not found" not in result.stdout + result.stderr:
            assert result.returncode == 0, result.stdout + result.stderr
            return
        document = yaml.safe_load(source.read_text())
        for job in document["scrape_configs"]:
            for sd in job.pop("kubernetes_sd_configs"):
                assert sd["role"] in {"pod", "service", "endpoints", "endpointslice", "node"}
                assert set(sd) <= {"role", "namespaces", "selectors", "api_server"}
            job["static_configs"] = [{"targets": ["localhost:9108"]}]
        shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(document))
        result = run(promtool, "check", "config", tmp_path / "prometheus.yml")
        assert result.returncode == 0, result.stdout + result.stderr

    def test_scrape_job_name_is_the_one_the_alerts_select(self) -> None:
        """Both scrape configs name the job `early-stopping-sidecar`, as the `up` alerts and the
        ServiceMonitor (the Service's name) do."""
        alerts = (PROMETHEUS / "alerts.yml").read_text()
        assert 'up{job="early-stopping-sidecar"}' in alerts
        for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
            document = yaml.safe_load((PROMETHEUS / name).read_text())
            assert [j["job_name"] for j in document["scrape_configs"]] == ["early-stopping-sidecar"]
        assert find("Service", "early-stopping-sidecar")["metadata"]["name"] in alerts


class TestGrafanaDashboard:
    """deploy/grafana/dashboard.json: importable, on a `datasource` variable, the panels asked."""

    @pytest.fixture
    def dashboard(self) -> dict[str, Any]:
        """The dashboard document."""
        loaded: dict[str, Any] = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
        return loaded

    def test_every_query_uses_the_datasource_variable(self, dashboard: dict[str, Any]) -> None:
        """A `datasource` variable of type prometheus; every panel, target and query variable
        uses it; panel ids are unique and every panel is placed on the grid."""
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        uses = {"type": "prometheus", "uid": "${datasource}"}
        for panel in dashboard["panels"]:
            assert panel["datasource"] == uses, panel["title"]
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
            assert panel["targets"]
            for target in panel["targets"]:
                assert target["datasource"] == uses and target["expr"]
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"] == uses
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        assert dashboard["uid"] and dashboard["id"] is None

    def test_has_the_panels_operators_need(self, dashboard: dict[str, Any]) -> None:
        """Stopped jobs per tuning job, objective per live job, decision latency quantiles,
        stop failures, lines read (rate) and jobs by status."""
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]

        def some(pattern: str) -> bool:
            return any(re.search(pattern, e) for e in exprs)

        assert some(r'sum by \(tuning_job\) \(early_stopping_jobs\{status="Stopped"')
        assert some(r"early_stopping_jobs_stopped_total")
        assert some(r"^early_stopping_objective\{")
        assert some(r"histogram_quantile\(0\.99, .*early_stopping_decision_latency_seconds_bucket")
        assert some(r"early_stopping_stop_failures_total")
        assert some(r"rate\(early_stopping_log_lines_total")
        assert some(r"sum by \(tuning_job, status\) \(early_stopping_jobs\{")


class TestSystemdUnit:
    """deploy/systemd/sidecar.service: valid, hardened, CAP_KILL as its only capability."""

    @pytest.fixture
    def analyze(self) -> str:
        """systemd-analyze; skipped where systemd is not installed, even under CI: .ci/run does
        not install systemd (a container machine has no use for it otherwise)."""
        found = shutil.which("systemd-analyze")
        if found is None:
            pytest.skip("systemd-analyze is not installed (Debian package systemd)")
        return found

    @pytest.fixture
    def unit(self, tmp_path: Path) -> Path:
        """The unit, its ExecStart pointed at this checkout's sidecar (verify checks that the
        program exists; the shipped unit names /opt/sidecar/bin/sidecar)."""
        text = (DEPLOY / "systemd" / "sidecar.service").read_text()
        assert "ExecStart=/opt/sidecar/bin/sidecar run -c /etc/sidecar/config.yaml" in text
        path = tmp_path / "sidecar.service"
        path.write_text(text.replace("/opt/sidecar/bin/sidecar", str(VENV_BIN / "sidecar")))
        return path

    def test_systemd_analyze_verify(self, analyze: str, unit: Path) -> None:
        """`systemd-analyze verify` reports nothing."""
        result = run(analyze, "verify", unit)
        assert result.returncode == 0 and not result.stderr.strip(), result.stderr

    def test_offline_security_exposure_is_low(self, analyze: str, unit: Path) -> None:
        """`systemd-analyze security --offline` rates the unit's exposure below 3 (of 10)."""
        result = run(analyze, "security", "--offline=true", unit)
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
        if found is None and "offline" in result.stderr:
            pytest.skip(f"this systemd-analyze has no --offline: {result.stderr.strip()}")
        assert found is not None, result.stdout + result.stderr
        assert float(found.group(1)) < 3.0, result.stdout

    @pytest.mark.slow
    def test_documentation_points_to_files_the_wheel_installs(self, bare_venv: Path) -> None:
        """Every `Documentation=` file exists once the sidecar is pip-installed into a venv
        (the unit's /opt/sidecar is that venv)."""
        docs = [
            line.partition("=")[2]
            for line in (DEPLOY / "systemd" / "sidecar.service").read_text().splitlines()
            if line.startswith("Documentation=")
        ]
        assert docs
        for uri in docs:
            assert uri.startswith("file:///opt/sidecar/"), uri
            installed = bare_venv / uri.removeprefix("file:///opt/sidecar/")
            assert installed.is_file(), uri

    def test_hardening_settings(self) -> None:
        """A dedicated user, ProtectSystem=strict with the state directory writable,
        NoNewPrivileges, restart on failure but not on a bad config, CAP_KILL only."""
        settings: dict[str, list[str]] = {}
        for line in (DEPLOY / "systemd" / "sidecar.service").read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                settings.setdefault(key, []).append(value)
        assert settings["User"] == ["sidecar"]
        assert settings["NoNewPrivileges"] == ["yes"]
        assert settings["ProtectSystem"] == ["strict"]
        assert settings["StateDirectory"] == ["sidecar"]
        assert settings["ReadWritePaths"] == ["/var/lib/sidecar"]
        assert settings["Restart"] == ["on-failure"]
        assert settings["RestartPreventExitStatus"] == ["2"]
        assert settings["AmbientCapabilities"] == ["CAP_KILL"]
        assert settings["CapabilityBoundingSet"] == ["CAP_KILL"]
        assert "ProtectProc" not in settings  # `invisible` would hide the trainers' processes
