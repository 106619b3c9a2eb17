"""The docker backend and the docker source against real Podman, through Docker's Engine API.

`podman system service` serves the API on a private socket (the `podman_socket` fixture); every
container is a real one, run from the minimal image of host binaries. The sidecar runs as a real
process (`python -m sidecar run`) in the end-to-end scenarios. Synchronisation polls with a
deadline (container state, logs, the store), never a bare sleep.
"""

from __future__ import annotations

import gc
import json
import re
import secrets
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import DockerSourceConfig, load_config, validate_config
from sidecar.model import Chunk, Decision, JobEnded, JobStatus
from sidecar.sources.docker import DockerLogSource
from sidecar.stoppers import PermanentStopError, StopError, StopRequest, StopResult
from sidecar.stoppers.docker import DockerStopper
from sidecar.stoppers.factory import make_stopper
from sidecar.templates import template_context
from tests.helpers import DaemonProcess, History, wait_for

DEADLINE = 30.0
TEST_LABEL = "sidecar.test"

# Waits to be stopped; on SIGTERM says so and exits 143 (sh as PID 1 needs the trap to exit).
OBEDIENT = 'trap "echo got SIGTERM; exit 143" TERM; echo ready; while :; do sleep 0.1; done'
# Notes SIGTERM and carries on: only the engine's SIGKILL after the grace period ends it.
STUBBORN = 'trap "echo got SIGTERM, carrying on" TERM; echo ready; while :; do sleep 0.1; done'
# Prints `step=k val_loss=k.<id>` every 50 ms until SIGTERM, then exits 0.
ENDLESS = (
    'trap "exit 0" TERM; k=0; '
    'while :; do k=$((k+1)); echo "step=$k val_loss=$k.$1"; sleep 0.05; done'
)
# A trainer: prints its arguments one line per epoch, pausing between them.
TRAINER = (
    'trap "echo got SIGTERM; exit 143" TERM; pause=$1; shift; '
    'for line in "$@"; do echo "$line"; sleep "$pause"; done'
)


class Containers:
    """Runs containers on the podman service with the flags this machine needs; removes every
    container it started at teardown."""

    def __init__(self, url: str, image: str) -> None:
        import docker
        from docker.types import Ulimit

        self.client = docker.DockerClient(base_url=url, timeout=120)
        self.image = image
        self.token = secrets.token_hex(4)
        # conftest.PODMAN_RUN_FLAGS, in the Engine API's words
        self.options: dict[str, Any] = {
            "runtime": "runc",  # podman's crun refuses this machine's hybrid cgroups
            "ulimits": [
                Ulimit(name="nofile", soft=1024, hard=1024),
                Ulimit(name="nproc", soft=1024, hard=1024),
            ],
            "network_mode": "none",
        }

    def name(self, base: str) -> str:
        return f"{base}-{self.token}"

    def run(
        self,
        script: str,
        *args: str,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        start: bool = True,
    ) -> Any:
        container = self.client.containers.create(
            self.image,
            ["sh", "-c", script, "sh", *args],
            name=name or self.name(f"c{secrets.token_hex(3)}"),
            labels={TEST_LABEL: self.token, **(labels or {})},
            **self.options,
        )
        if start:
            container.start()
        return container

    def state(self, container: Any) -> dict[str, Any]:
        container.reload()
        state: dict[str, Any] = container.attrs["State"]
        return state

    def logs(self, container: Any) -> str:
        return bytes(container.logs(stdout=True, stderr=True)).decode()

    def wait_logged(self, container: Any, text: str) -> None:
        wait_for(
            lambda: text in self.logs(container),
            DEADLINE,
            what=f"{container.name} to print {text!r}",
            describe=lambda: self.logs(container)[-300:],
        )

    def wait_exited(self, container: Any, timeout: float = DEADLINE) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.state(container))["Status"] == "exited" and s,
            timeout,
            what=f"{container.name} to exit",
        )

    def cleanup(self) -> None:
        for container in self.client.containers.list(
            all=True, filters={"label": f"{TEST_LABEL}={self.token}"}
        ):
            try:
                container.remove(force=True)
            except Exception as exc:  # already removed
                print(f"cleanup: {exc}")
        self.client.close()


@pytest.fixture
def containers(podman_socket: str, podman_image: str) -> Iterator[Containers]:
    made = Containers(podman_socket, podman_image)
    try:
        yield made
    finally:
        made.cleanup()


def request_for(job: str, extra: dict[str, str] | None = None) -> StopRequest:
    return StopRequest(
        Decision("tj", job, 2, 0.9, 0.5, 2, "sagemaker"),
        template_context(job=job, tuning_job="tj", extra=extra),
    )


# -- the docker backend ---------------------------------------------------------------------
@pytest.mark.podman
class TestDockerStopper:
    def test_stops_the_named_container_with_sigterm_first(
        self, containers: Containers, podman_socket: str
    ) -> None:
        """The `container` template names it; the engine sends SIGTERM, the container's trap
        runs and it exits 143 — well within the grace period, no SIGKILL needed."""
        name = containers.name("job-a")
        container = containers.run(OBEDIENT, name=name)
        containers.wait_logged(container, "ready")
        stopper = DockerStopper(container="{job}", label=None, grace_seconds=30, host=podman_socket)

        assert stopper.stop(request_for(name)) is StopResult.STOPPED

        state = containers.state(container)  # stop returns once the container has exited
        assert (state["Status"], state["ExitCode"]) == ("exited", 143)
        assert "got SIGTERM" in containers.logs(container)

    def test_a_container_ignoring_sigterm_is_killed_after_the_grace_period(
        self, containers: Containers, podman_socket: str
    ) -> None:
        """A container that survives SIGTERM: the engine sent SIGTERM first (the container
        logged it and carried on), then SIGKILL after the grace period (exit 137)."""
        name = containers.name("stubborn")
        container = containers.run(STUBBORN, name=name)
        containers.wait_logged(container, "ready")
        stopper = DockerStopper(container="{job}", label=None, grace_seconds=2, host=podman_socket)

        assert stopper.stop(request_for(name)) is StopResult.STOPPED

        state = containers.state(container)
        assert (state["Status"], state["ExitCode"]) == ("exited", 137)
        assert "got SIGTERM, carrying on" in containers.logs(container)

    def test_a_container_already_exited_is_success(
        self, containers: Containers, podman_socket: str
    ) -> None:
        """No such container, or one that has already exited: nothing to stop, success."""
        stopper = DockerStopper(container="{job}", label=None, grace_seconds=5, host=podman_socket)
        assert stopper.stop(request_for(containers.name("never-existed"))) is (
            StopResult.ALREADY_EXITED
        )
        exited = containers.run("echo done", name=containers.name("exited"))
        containers.wait_exited(exited)
        assert stopper.stop(request_for(exited.name)) is StopResult.ALREADY_EXITED
        assert containers.state(exited)["ExitCode"] == 0

    def test_probe_says_whether_the_jobs_container_runs(
        self, containers: Containers, podman_socket: str
    ) -> None:
        """The liveness a file source asks about: running True, exited or missing False."""
        stopper = DockerStopper(container="{job}", label=None, grace_seconds=5, host=podman_socket)
        running = containers.run(OBEDIENT, name=containers.name("alive"))
        containers.wait_logged(running, "ready")
        exited = containers.run("echo done", name=containers.name("done"))
        containers.wait_exited(exited)
        assert stopper.probe(request_for(running.name).context) is True
        assert stopper.probe(request_for(exited.name).context) is False
        assert stopper.probe(request_for(containers.name("never")).context) is False

    def test_label_selection_stops_only_the_container_labelled_with_the_job(
        self, containers: Containers, podman_socket: str
    ) -> None:
        """`label: sidecar.job`: the container labelled `sidecar.job=<job>` is stopped, whatever
        its name; a neighbour with another job's label keeps running."""
        job = f"lr-0.1-{containers.token}"
        target = containers.run(OBEDIENT, labels={"sidecar.job": job})
        neighbour = containers.run(OBEDIENT, labels={"sidecar.job": f"{job}-other"})
        for c in (target, neighbour):
            containers.wait_logged(c, "ready")
        stopper = DockerStopper(
            container="{job}", label="sidecar.job", grace_seconds=10, host=podman_socket
        )

        assert stopper.stop(request_for(job)) is StopResult.STOPPED

        assert containers.state(target)["ExitCode"] == 143
        assert containers.state(neighbour)["Status"] == "running"
        assert stopper.stop(request_for(job)) is StopResult.ALREADY_EXITED

    def test_the_container_id_from_the_docker_source_names_the_target(
        self, containers: Containers, podman_socket: str
    ) -> None:
        """`container: '{container_id}'` stops the very container the lines came from, whatever
        the job's name is (a label)."""
        container = containers.run(OBEDIENT, labels={"sidecar.job": "trial-7"})
        containers.wait_logged(container, "ready")
        stopper = DockerStopper(
            container="{container_id}", label=None, grace_seconds=10, host=podman_socket
        )
        result = stopper.stop(request_for("trial-7", {"container_id": container.id}))
        assert result is StopResult.STOPPED
        assert containers.state(container)["ExitCode"] == 143

    def test_the_factory_builds_it_from_stop_docker(
        self, containers: Containers, podman_socket: str
    ) -> None:
        """`stop.docker` (container, host) and `grace_seconds` from the config are used."""
        config = validate_config(
            {
                "objective": {"metric": "loss"},
                "stop": {
                    "backend": "docker",
                    "grace_seconds": 7,
                    "docker": {"container": "{tuning_job}-{job}", "host": podman_socket},
                },
            }
        )
        stopper = make_stopper(config)
        assert isinstance(stopper, DockerStopper)
        container = containers.run(OBEDIENT, name=f"tj-{containers.name('f')}")
        containers.wait_logged(container, "ready")
        assert stopper.stop(request_for(containers.name("f"))) is StopResult.STOPPED
        assert containers.state(container)["ExitCode"] == 143


class TestDockerStopperWithoutAnEngine:
    def test_an_unreachable_engine_is_a_retryable_error(self, tmp_path: Path) -> None:
        """No engine at the socket: StopError (retried with backoff), not a permanent error."""
        stopper = DockerStopper(
            container="{job}",
            label=None,
            grace_seconds=1,
            host=f"unix://{tmp_path}/no-engine.sock",
        )
        with warnings.catch_warnings():
            # docker-py's unix-socket connection leaves its socket unclosed when connect()
            # fails; collect it here, where that is expected, not in some later test
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                stopper.stop(request_for("job-a"))
            except StopError as exc:  # the traceback holds the socket: keep only the facts
                permanent, message = isinstance(exc, PermanentStopError), str(exc)
            else:
                pytest.fail("no error without an engine")
            del stopper
            gc.collect()
        assert not permanent
        assert message.startswith("Docker API")


# -- the docker source ----------------------------------------------------------------------
class Collected:
    """What a source emitted, as the consumer would receive it."""

    def __init__(self) -> None:
        self.items: list[Chunk | JobEnded] = []

    def lines(self, job: str) -> list[bytes]:
        return [
            line
            for item in list(self.items)
            if isinstance(item, Chunk) and item.job == job
            for line in item.lines
        ]

    def ended(self, job: str) -> list[JobEnded]:
        return [i for i in list(self.items) if isinstance(i, JobEnded) and i.job == job]


def docker_source(url: str, labels: list[str], collected: Collected) -> DockerLogSource:
    return DockerLogSource(
        DockerSourceConfig(labels=labels, host=url),
        node="n",
        tuning_job="default-tj",
        max_line_bytes=1 << 20,
        offsets={},
        emit=collected.items.append,
    )


@pytest.mark.podman
class TestDockerSource:
    def test_follows_both_streams_naming_jobs_from_labels(
        self, containers: Containers, podman_socket: str
    ) -> None:
        """stdout and stderr lines arrive in order, named by the `sidecar.job` and
        `sidecar.tuning_job` labels (else the container name and the config's tuning job), with
        the container's id for stop templates; the exit ends the job with its status."""
        group = f"g-{containers.token}"
        collected = Collected()
        source = docker_source(podman_socket, [f"group={group}"], collected)
        source.start()
        try:
            labelled = containers.run(
                "echo one; echo two >&2; echo three; exit 0",
                labels={"group": group, "sidecar.job": "lr-1", "sidecar.tuning_job": "hpo"},
            )
            unlabelled = containers.run(
                "echo alone; exit 3", name=containers.name("unlabelled"), labels={"group": group}
            )
            wait_for(lambda: collected.ended("lr-1"), DEADLINE, what="lr-1 to end")
            wait_for(lambda: collected.ended(unlabelled.name), DEADLINE, what="unlabelled to end")
        finally:
            source.stop()
        # each stream in order; how the engine interleaves the two is its own business
        assert sorted(collected.lines("lr-1")) == [b"one", b"three", b"two"]
        assert [x for x in collected.lines("lr-1") if x != b"two"] == [b"one", b"three"]
        assert collected.lines(unlabelled.name) == [b"alone"]
        chunk = next(i for i in collected.items if isinstance(i, Chunk) and i.job == "lr-1")
        assert chunk.tuning_job == "hpo"
        assert chunk.labels["container_id"] == labelled.id
        assert collected.ended("lr-1")[0].status is JobStatus.COMPLETED
        (failed,) = collected.ended(unlabelled.name)
        assert (failed.tuning_job, failed.status) == ("default-tj", JobStatus.FAILED)

    def test_a_container_created_but_not_yet_started_is_read_once_it_runs(
        self, containers: Containers, podman_socket: str
    ) -> None:
        """Its log stream would end at once: the source must not take that for the job's end."""
        group = f"g-{containers.token}"
        collected = Collected()
        source = docker_source(podman_socket, [f"group={group}"], collected)
        waiting = containers.run(
            "echo late", labels={"group": group, "sidecar.job": "late"}, start=False
        )
        source.start()
        try:
            # the poll that finds `early` has seen `waiting` too, in its created state
            containers.run("echo early", labels={"group": group, "sidecar.job": "early"})
            wait_for(lambda: collected.ended("early"), DEADLINE, what="early to end")
            assert collected.ended("late") == []
            waiting.start()
            wait_for(lambda: collected.ended("late"), DEADLINE, what="late to end")
        finally:
            source.stop()
        assert collected.lines("late") == [b"late"]

    def test_an_engine_that_comes_up_later_is_connected_to(
        self, containers: Containers, podman_socket: str, tmp_path: Path
    ) -> None:
        """No engine at the socket yet (it starts after the sidecar at boot): the source keeps
        polling and reports not running (/readyz); once the socket answers, it follows."""
        late = tmp_path / "late.sock"
        group = f"g-{containers.token}"
        collected = Collected()
        with warnings.catch_warnings():
            # docker-py leaves a socket unclosed per failed connect(): collected below
            warnings.simplefilter("ignore", ResourceWarning)
            source = docker_source(f"unix://{late}", [f"group={group}"], collected)
            source.start()
            try:
                wait_for(lambda: source.failed_polls >= 2, DEADLINE, what="failed polls")
                assert not source.running
                late.symlink_to(podman_socket.removeprefix("unix://"))
                containers.run("echo hello", labels={"group": group, "sidecar.job": "j"})
                wait_for(lambda: collected.ended("j"), DEADLINE, what="j to end")
                assert source.running
            finally:
                source.stop()
            gc.collect()
        assert collected.lines("j") == [b"hello"]
        assert not source.running

    def test_stop_ends_every_follower_of_a_silent_container(
        self, containers: Containers, podman_socket: str
    ) -> None:
        """A container printing nothing (a long epoch) holds an open log stream; stopping the
        source closes it, so no follower thread outlives the source."""
        group = f"g-{containers.token}"
        collected = Collected()
        source = docker_source(podman_socket, [f"group={group}"], collected)
        source.start()
        container = containers.run(
            "echo started; while :; do sleep 0.1; done", labels={"group": group}
        )
        wait_for(lambda: collected.lines(container.name), DEADLINE, what="the first line")
        followers = list(source.followed.values())
        assert followers and all(t.is_alive() for t in followers)
        source.stop()
        assert not any(t.is_alive() for t in followers)
        assert collected.ended(container.name) == []  # still running: not ended by the stop


# -- end to end: `sidecar run` with the docker source and the docker backend -----------------
def sidecar_config(
    tmp_path: Path, url: str, tuning_job: str, *, auto: bool, epoch_regex: bool
) -> Path:
    """The daemon's config: containers labelled `sidecar.tuning_job=<tuning_job>` are the jobs;
    the docker backend stops the container the lines came from."""
    stop = (
        f"stop: {{backend: docker, grace_seconds: 10, docker: "
        f"{{container: '{{container_id}}', host: '{url}'}}}}\n"
        if auto
        else "stop: {backend: none}\n"
    )
    text = (
        f"tuning_job: {tuning_job}\n"
        "objective: {metric: val_loss, type: Minimize}\n"
        "metric_definitions: [{Name: val_loss, Regex: 'val_loss=([0-9.]+)'}]\n"
        + ("epoch: {regex: 'epoch=(\\d+)'}\n" if epoch_regex else "")
        + (
            "early_stopping: {type: Auto, min_jobs: 2}\n"
            if auto
            else "early_stopping: {type: Off}\n"
        )
        + f"sources: [{{docker: {{labels: ['sidecar.tuning_job={tuning_job}'], host: '{url}'}}}}]\n"
        + stop
        + f"store: 'sqlite://{tmp_path}/history.db'\n"
        "http: {host: 127.0.0.1, port: 0}\n"
        "node: test-node\n"
        "log_level: info\n"
    )
    load_config(text, env={})  # a broken config fails here, with its message
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


VALUE = re.compile(r"val_loss=([0-9.]+)")

# Minimize; min_jobs 2. lr-3 is worse than the median from its first epoch; lr-5 diverges at
# its third. The others improve steadily and must be left to finish.
SWEEP: list[tuple[str, list[float]]] = [
    ("lr-1", [1.00, 0.80, 0.65, 0.55, 0.50, 0.46, 0.43, 0.41]),
    ("lr-2", [0.95, 0.78, 0.62, 0.54, 0.49, 0.45, 0.42, 0.40]),
    ("lr-3", [1.60, 1.55, 1.50, 1.45, 1.40, 1.35, 1.30, 1.25]),
    ("lr-4", [0.90, 0.70, 0.60, 0.50, 0.45, 0.42, 0.40, 0.38]),
    ("lr-5", [0.92, 0.75, 2.50, 2.60, 2.70, 2.80, 2.90, 3.00]),
    ("lr-6", [0.88, 0.69, 0.58, 0.49, 0.44, 0.41, 0.39, 0.37]),
]
EXPECTED_STOPS = {"lr-3": 1, "lr-5": 3}


def printed_values(text: str) -> list[float]:
    return [float(v) for v in VALUE.findall(text)]


@pytest.mark.podman
@pytest.mark.slow
class TestSidecarWithContainers:
    def test_stops_exactly_the_losing_containers_as_replay_decides(
        self, containers: Containers, podman_socket: str, tmp_path: Path
    ) -> None:
        """Six trainer containers, one after another; the daemon follows their logs through the
        Engine API and stops the losers (SIGTERM seen, exit 143, epochs left unrun) while the
        others run to completion — and it stops exactly the jobs, at the epochs, that `replay`
        decides on the same lines."""
        tuning_job = f"hpo-{containers.token}"
        config = sidecar_config(tmp_path, podman_socket, tuning_job, auto=True, epoch_regex=True)
        history = History(tmp_path / "history.db", tuning_job)
        daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
        started: dict[str, Any] = {}
        try:
            for job, losses in SWEEP:
                lines = [f"epoch={e} val_loss={v:.2f}" for e, v in enumerate(losses, 1)]
                started[job] = containers.run(
                    TRAINER,
                    "0.25",
                    *lines,
                    name=containers.name(job),
                    labels={"sidecar.tuning_job": tuning_job, "sidecar.job": job},
                )
                containers.wait_exited(started[job])
                # the next trainer starts once the daemon has applied every line of this one
                count = len(printed_values(containers.logs(started[job])))
                wait_for(
                    lambda j=job, n=count: len(history.values(j, "val_loss")) == n,  # type: ignore[misc]
                    DEADLINE,
                    what=f"{job} applied",
                    describe=daemon.output,
                )
                wait_for(
                    lambda j=job: history.status(j) in ("Stopped", "Completed"),  # type: ignore[misc]
                    DEADLINE,
                    what=f"{job} to end",
                    describe=daemon.output,
                )
            assert daemon.terminate() == 0, daemon.output()
        finally:
            daemon.cleanup()

        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "sidecar",
                "status",
                "--store",
                f"sqlite://{tmp_path}/history.db",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        (doc,) = json.loads(status.stdout)["tuning_jobs"]
        live = {j["job"]: (j["status"], j["stopped_at_epoch"]) for j in doc["jobs"]}
        assert [j["job"] for j in sorted(doc["jobs"], key=lambda j: j["order"])] == [
            job for job, _ in SWEEP
        ]

        logs = []
        for job, _ in SWEEP:
            path = tmp_path / "logs" / f"{job}.log"
            path.parent.mkdir(exist_ok=True)
            path.write_text(containers.logs(started[job]))
            logs.append(str(path))
        replayed = subprocess.run(
            [sys.executable, "-m", "sidecar", "replay", "-c", str(config), "--json", *logs],
            capture_output=True,
            text=True,
            check=True,
        )
        offline = {j["job"]: j["stopped_at_epoch"] for j in json.loads(replayed.stdout)["jobs"]}

        assert {job: epoch for job, (_, epoch) in live.items()} == offline
        assert {job: e for job, e in offline.items() if e is not None} == EXPECTED_STOPS
        for job, losses in SWEEP:
            state = containers.state(started[job])
            printed = printed_values(containers.logs(started[job]))
            if job in EXPECTED_STOPS:
                assert live[job] == ("Stopped", EXPECTED_STOPS[job])
                assert state["ExitCode"] == 143, job  # by SIGTERM, through its trap
                assert "got SIGTERM" in containers.logs(started[job])
                assert len(printed) < len(losses), f"{job} ran to the end"
            else:
                assert live[job] == ("Completed", None)
                assert state["ExitCode"] == 0, job
                assert printed == losses

    def test_a_restarted_sidecar_reads_every_line_exactly_once(
        self, containers: Containers, podman_socket: str, tmp_path: Path
    ) -> None:
        """The daemon is stopped (SIGTERM) and later killed (SIGKILL) while two containers
        print; a third runs and finishes while no sidecar runs at all. After each restart every
        container is resumed where its committed offset ends: the store holds each printed value
        exactly once, at its ordinal epoch (a line read twice would add an epoch, a line skipped
        would shift them)."""
        tuning_job = f"restart-{containers.token}"
        config = sidecar_config(tmp_path, podman_socket, tuning_job, auto=False, epoch_regex=False)
        history = History(tmp_path / "history.db", tuning_job)

        def run(job: str, script: str, *args: str) -> Any:
            return containers.run(
                script,
                *args,
                name=containers.name(job),
                labels={"sidecar.tuning_job": tuning_job, "sidecar.job": job},
            )

        def stored(job: str) -> int:
            return len(history.values(job, "val_loss"))

        def running(container: Any) -> bool:
            return bool(containers.state(container)["Status"] == "running")

        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        try:
            daemon.start()
            a, b = run("job-1", ENDLESS, "1"), run("job-2", ENDLESS, "2")
            wait_for(lambda: stored("job-1") >= 5 and stored("job-2") >= 5, DEADLINE)
            assert running(a) and running(b)
            assert daemon.terminate() == 0, daemon.output()

            lines = [f"step={k} val_loss={k}.3" for k in range(1, 21)]
            c = run("job-3", TRAINER, "0.01", *lines)  # runs and ends while no sidecar runs
            containers.wait_exited(c)
            at_restart = stored("job-1")

            daemon.start()
            wait_for(lambda: stored("job-1") >= at_restart + 5, DEADLINE, describe=daemon.output)
            wait_for(lambda: stored("job-3") == 20, DEADLINE, describe=daemon.output)
            assert running(a) and running(b)
            daemon.kill9()
            at_kill = stored("job-2")

            daemon.start()
            wait_for(lambda: stored("job-2") >= at_kill + 5, DEADLINE, describe=daemon.output)
            for container in (a, b):
                container.stop(timeout=10)  # its trap ends it with exit 0: Completed
            for job, container in (("job-1", a), ("job-2", b), ("job-3", c)):
                printed = printed_values(containers.logs(container))
                want = list(enumerate(printed, 1))
                wait_for(
                    lambda j=job: history.status(j) == "Completed",  # type: ignore[misc]
                    DEADLINE,
                    what=f"{job} read to its end",
                    describe=daemon.output,
                )
                assert history.values(job, "val_loss") == want, job
            assert daemon.terminate() == 0, daemon.output()

            # started once more, it skips the containers it read to their end (the poll that
            # finds a new one has seen them), and stops cleanly
            before = {j: history.values(j, "val_loss") for j in ("job-1", "job-2", "job-3")}
            daemon.start()
            run("job-4", TRAINER, "0.01", *lines[:3])
            wait_for(lambda: history.status("job-4") == "Completed", DEADLINE)
            assert daemon.terminate() == 0, daemon.output()
            assert {j: history.values(j, "val_loss") for j in before} == before
            assert history.values("job-4", "val_loss") == [(1, 1.3), (2, 2.3), (3, 3.3)]
        finally:
            daemon.cleanup()
