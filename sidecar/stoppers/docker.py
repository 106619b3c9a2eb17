"""The docker backend: stop a container through the Docker (or Podman) Engine API."""

from __future__ import annotations

import math
import threading
from typing import Any

from sidecar.docker_api import LIVE_STATES, docker_client
from sidecar.errors import ConfigError
from sidecar.stoppers import StopError, StopRequest, StopResult
from sidecar.templates import render_template

PROBE_TIMEOUT = 2.0  # seconds for one liveness question to the engine


class DockerStopper:
    """`docker stop` with the grace period: the engine sends the stop signal, then SIGKILL."""

    backend = "docker"

    def __init__(
        self, *, container: str, label: str | None, grace_seconds: float, host: str | None = None
    ) -> None:
        self.container = container
        self.label = label
        self.grace_seconds = grace_seconds
        self.host = host
        self._client: Any = None
        self._probe_client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                # the HTTP request of a stop lasts up to the grace period: allow for it
                self._client = docker_client(self.host, timeout=self.grace_seconds + 60)
            return self._client

    def probe(self, context: dict[str, str]) -> bool | None:
        """Whether the job's container still runs (for file sources: its exit ends the job).
        A short timeout of its own: the tailer asks, and must not wait on a hung engine."""
        import docker.errors

        try:
            with self._lock:
                if self._probe_client is None:
                    self._probe_client = docker_client(self.host, timeout=PROBE_TIMEOUT)
                client = self._probe_client
            if self.label:
                found = client.containers.list(
                    all=True, filters={"label": f"{self.label}={context['job']}"}
                )
            else:
                found = [client.containers.get(render_template(self.container, context))]
        except docker.errors.NotFound:
            return False
        except (docker.errors.DockerException, OSError, ConfigError):
            with self._lock:  # a fresh connection next time; this one's sockets closed now
                broken, self._probe_client = self._probe_client, None
            if broken is not None:
                broken.close()
            return None  # the engine cannot say now
        return any(c.status in LIVE_STATES for c in found)

    def stop(self, request: StopRequest) -> StopResult:
        import docker.errors

        try:
            client = self.client()
            if self.label:
                selector = f"{self.label}={request.context['job']}"
                targets = client.containers.list(filters={"label": selector})
            else:
                name = render_template(self.container, request.context)
                try:
                    targets = [client.containers.get(name)]
                except docker.errors.NotFound:
                    return StopResult.ALREADY_EXITED
            running = [c for c in targets if c.status in LIVE_STATES]
            if not running:
                return StopResult.ALREADY_EXITED
            for container in running:
                try:
                    # returns once the container has exited: SIGKILL comes after the timeout
                    container.stop(timeout=math.ceil(self.grace_seconds))
                except docker.errors.NotFound:
                    continue
        # OSError: requests' connection errors and timeouts derive from it
        except (docker.errors.DockerException, OSError) as exc:
            raise StopError(f"Docker API: {exc}") from None
        return StopResult.STOPPED
