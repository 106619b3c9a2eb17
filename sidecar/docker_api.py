"""The Docker (or Podman) Engine API client, shared by the docker source and the docker backend."""

from __future__ import annotations

import math
from typing import Any

from sidecar.errors import ConfigError
from sidecar.extras import install_hint

# states in which a container still has (or may get) processes to stop
LIVE_STATES = ("running", "restarting", "paused", "created")


def docker_client(host: str | None, *, timeout: float = 60.0) -> Any:
    """A `docker.DockerClient` for `host`, or from DOCKER_HOST (else the local socket).

    `timeout` bounds each API call in seconds (log streams are read without one)."""
    try:
        import docker
    except ImportError:
        raise ConfigError(
            f"the docker backend and source need the docker extra: {install_hint('docker')}"
        ) from None
    seconds = math.ceil(timeout)
    if host:
        return docker.DockerClient(base_url=host, timeout=seconds)
    return docker.from_env(timeout=seconds)
