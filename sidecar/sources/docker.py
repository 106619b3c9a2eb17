"""Containers' stdout/stderr through the Docker (or Podman) Engine API: a producer like the tailer.

Containers are chosen by label and found by polling (new ones within a second); one created but
not yet started is left for a later poll (its log stream would end at once). Each is followed
on its own thread; the docker client reads a log stream without a timeout (an epoch may print
nothing for hours), so stop() shuts the open streams down itself. The position committed with a container's values is the byte offset of its last
complete line in the engine's log stream; after a restart the stream is read again from the start
and that many bytes are skipped, so nothing is applied twice and nothing is missed (engines' log
timestamps are too coarse on some versions to resume by time exactly).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from typing import Any

import structlog

from sidecar.config import DockerSourceConfig
from sidecar.docker_api import LIVE_STATES, docker_client
from sidecar.lines import LineSplitter
from sidecar.model import Chunk, JobEnded, JobStatus, Offset
from sidecar.sources import Emit

log = structlog.get_logger("sidecar.docker")

DISCOVER_SECONDS = 1.0  # how often the engine is asked for new containers


class DockerLogSource:
    """Follows every container matching `source.labels`, including ones started later."""

    def __init__(
        self,
        source: DockerSourceConfig,
        *,
        node: str,
        tuning_job: str,
        max_line_bytes: int,
        offsets: Mapping[str, Offset],
        emit: Emit,
        client: Any = None,
    ) -> None:
        self.source = source
        self.node = node
        self.tuning_job = tuning_job
        self.max_line_bytes = max_line_bytes
        self.offsets = dict(offsets)
        self.emit = emit
        self.client: Any = client  # connected by the discovery thread: the engine may be late
        self.followed: dict[str, threading.Thread] = {}  # by container id, while followed
        self.finished: set[str] = set()  # container ids whose log was read to its end
        self.streams: dict[str, Any] = {}  # open log streams, closed by stop() to end followers
        self.progress: dict[str, int] = {}  # bytes of complete lines handed on, per container
        self.reachable = False  # the engine answered the last poll
        self.failed_polls = 0  # polls failed in a row
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._discover, name="docker-source", daemon=True)

    @property
    def running(self) -> bool:
        """Following containers: started, not stopped, and the engine answered the last poll
        (what /readyz reports)."""
        return self._thread.is_alive() and self.reachable

    def start(self) -> None:
        self._thread.start()

    name = "docker"

    def stop(self, deadline: float | None = None) -> bool:
        """Stop following by `deadline` (monotonic seconds); True when every thread ended."""
        end = time.monotonic() + 10 if deadline is None else deadline
        self._stop.set()
        self._thread.join(timeout=max(0.1, end - time.monotonic()))
        for stream in list(self.streams.values()):
            try:
                stream.close()  # shuts the socket down: a follower waiting on it returns
            except Exception as exc:  # closing is best effort at shutdown
                log.debug("docker_stream_close_failed", error=str(exc))
        for thread in list(self.followed.values()):
            thread.join(timeout=max(0.1, min(5.0, end - time.monotonic())))
        if self.client is not None:
            try:
                self.client.close()
            except Exception as exc:  # closing is best effort at shutdown
                log.debug("docker_close_failed", error=str(exc))
        return not self._thread.is_alive() and not any(
            t.is_alive() for t in list(self.followed.values())
        )

    def _discover(self) -> None:
        while not self._stop.is_set():
            containers = self._list()
            for container in sorted(containers, key=lambda c: c.attrs.get("Created", "")):
                if (
                    container.id in self.followed
                    or container.id in self.finished
                    or container.status == "created"
                ):
                    continue
                if self._stored_state(container.id).get("done"):
                    self.finished.add(container.id)
                    continue
                thread = threading.Thread(
                    target=self._follow,
                    args=(container,),
                    name=f"docker-{container.short_id}",
                    daemon=True,
                )
                self.followed[container.id] = thread
                thread.start()
            self._stop.wait(DISCOVER_SECONDS)

    def _list(self) -> list[Any]:
        """The labelled containers; none while the engine is unreachable (it may be starting or
        restarting: the next poll tries again; the first failure and the recovery are logged)."""
        try:
            if self.client is None:
                self.client = docker_client(self.source.host)
            containers: list[Any] = self.client.containers.list(
                all=True, filters={"label": list(self.source.labels)}
            )
        except Exception as exc:
            event = log.debug if self.failed_polls else log.warning
            event("docker_engine_unreachable", host=self.source.host, error=str(exc))
            self.failed_polls += 1
            self.reachable = False
            return []
        if self.failed_polls:
            log.info(
                "docker_engine_reachable", host=self.source.host, failed_polls=self.failed_polls
            )
        self.failed_polls = 0
        self.reachable = True
        return containers

    def _stored_state(self, container_id: str) -> dict[str, Any]:
        stored = self.offsets.get(f"docker:{container_id}")
        if stored is None:
            return {}
        state: dict[str, Any] = dict(stored.state)
        return state

    def _names(self, container: Any) -> tuple[str, str, dict[str, str]]:
        labels: dict[str, str] = container.labels or {}
        name = str(container.name).lstrip("/")
        job = labels.get(self.source.job_label) or name
        tuning_job = labels.get(self.source.tuning_job_label) or self.tuning_job
        return tuning_job, job, {"container_id": container.id, "container": name}

    def _follow(self, container: Any) -> None:
        key = f"docker:{container.id}"
        stored = self.offsets.get(key)
        skip = self.progress.get(key, stored.offset if stored is not None else 0)
        tuning_job, job, labels = self._names(container)
        splitter = LineSplitter(self.max_line_bytes, offset=skip)
        seen = 0
        fresh = [skip == 0]  # a container followed from its first byte: a run starts

        def send(lines: list[bytes], read_at: float, *, done: bool = False) -> None:
            path = f"docker://{labels['container']}"
            offset = Offset(
                node=self.node,
                file_key=key,
                fingerprint=container.id,
                path=path,
                offset=splitter.offset,
                state={"done": True} if done else {},
            )
            chunk = Chunk(
                tuning_job,
                job,
                lines,
                read_at,
                offset=offset,
                log_path=path,
                labels=labels,
                cut_lines=splitter.truncated,
                fresh=fresh[0],
            )
            if lines:
                fresh[0] = False
            self.emit(chunk)

        try:
            stream = self.client.api.logs(
                container.id, stream=True, follow=True, stdout=True, stderr=True
            )
            self.streams[key] = stream
            if self._stop.is_set():  # stop() may have closed the streams before this one opened
                return
            for frame in stream:
                if self._stop.is_set():
                    return
                start = max(0, skip - seen)  # bytes applied before a restart are skipped
                seen += len(frame)
                if start >= len(frame):
                    continue
                lines = splitter.feed(frame[start:])
                if lines:
                    send(lines, time.monotonic())
                    self.progress[key] = splitter.offset
        except Exception as exc:
            if not self._stop.is_set():
                log.warning("docker_follow_failed", container=labels["container"], error=str(exc))
                self.followed.pop(container.id, None)  # rediscovered and resumed next poll
            return
        finally:
            opened = self.streams.pop(key, None)
            if opened is not None:
                with contextlib.suppress(Exception):  # already shut down by stop()
                    opened.close()  # the connection is the stream's own: not pooled, not reused
        if self._stop.is_set():
            return
        import docker.errors

        try:
            container.reload()
            running = container.status in LIVE_STATES
            code = int(container.attrs.get("State", {}).get("ExitCode", 0))
        except docker.errors.NotFound:  # removed as it exited (`--rm`): its log has ended
            running, code = False, 0
        except Exception as exc:  # the engine is unreachable: look again at the next poll
            log.warning("docker_inspect_failed", container=labels["container"], error=str(exc))
            running = True
        if running:  # the stream broke (engine restart, a restart policy): follow again
            self.followed.pop(container.id, None)
            return
        send(splitter.finish(), time.monotonic(), done=True)
        self.finished.add(container.id)
        self.followed.pop(container.id, None)
        status = JobStatus.COMPLETED if code == 0 else JobStatus.FAILED
        self.emit(JobEnded(tuning_job, job, status, f"container exited with {code}"))
