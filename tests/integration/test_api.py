"""The HTTP API of a real `sidecar run`: the read documents, thresholds from the rule's own
verdicts, the live event stream to two clients, and token-guarded push (docs/api.md)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, replay_stops, wait_for, write_curve_logs

TOKEN = "s3cret-token-of-the-test-0123456789"
CURVES = {
    "a": [1.0, 0.8, 0.6, 0.5],
    "b": [0.9, 0.7, 0.5, 0.4],
    "c": [1.5, 1.4, 1.3, 1.2],
    "d": [2.0, 1.9, 1.8, 1.7],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, tmp: Path, *, token: bool = True) -> None:
        self.port = free_port()
        self.logs = tmp / "logs"
        self.logs.mkdir()
        token_line = ""
        if token:
            (tmp / "token").write_text(TOKEN + "\n")
            token_line = f", token_file: '{tmp / 'token'}'"
        config = tmp / "config.yaml"
        config.write_text(
            f"tuning_job: api\nobjective: {{metric: val_loss}}\n"
            "metric_definitions: [{Name: val_loss, Regex: 'val_loss=(\\S+)'}]\n"
            "epoch: {regex: '^epoch (\\d+)'}\n"
            "early_stopping: {min_jobs: 1}\n"
            f"sources: [{{path: '{self.logs}/*.log'}}]\n"
            f"store: 'sqlite://{tmp / 'h.db'}'\n"
            "stop: {backend: none}\n"
            f"http: {{host: 127.0.0.1, port: {self.port}{token_line}}}\n"
            "idle_timeout_seconds: 0\nlog_level: info\n"
        )
        self.config = config
        self.process = DaemonProcess(config, tmp / "daemon.log")

    @contextlib.contextmanager
    def running(self) -> Iterator[Daemon]:
        """The daemon started and ready; terminated at the end."""
        self.process.start()
        try:
            wait_for(self.ready, 30, describe=self.process.output)
            yield self
        finally:
            self.process.terminate()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(data) if "json" in kind else data.decode()

    def ready(self) -> bool:
        try:
            return self.request("GET", "/readyz")[0] == 200
        except OSError:
            return False


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with Daemon(tmp_path).running() as d:
        yield d


def write_sweep(d: Daemon) -> None:
    for job, values in CURVES.items():
        (d.logs / f"{job}.log").write_text(
            "".join(f"epoch {e} val_loss={v}\n" for e, v in enumerate(values, 1))
        )


def stopped(d: Daemon) -> dict[str, int]:
    status, doc = d.request("GET", "/api/v1/tuning-jobs/api")
    if status != 200:
        return {}
    return {j["job"]: j["decision"]["epoch"] for j in doc["jobs"] if j["decision"]}


class SseClient(threading.Thread):
    """Reads `GET /api/v1/events` and keeps every decision event, in order."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.decisions: list[tuple[str, int]] = []
        self.kinds: set[str] = set()
        self.connected = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", "/api/v1/events")
        response = conn.getresponse()
        assert response.getheader("Content-Type") == "text/event-stream"
        kind = None
        while True:
            line = response.fp.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text == ": connected":
                self.connected.set()
            if text.startswith("event: "):
                kind = text[7:]
                self.kinds.add(kind)
            elif text.startswith("data: ") and kind == "decision":
                data = json.loads(text[6:])
                self.decisions.append((data["job"], data["epoch"]))


def test_read_documents_thresholds_and_events_to_two_clients(daemon: Daemon) -> None:
    clients = [SseClient(daemon.port), SseClient(daemon.port)]
    for c in clients:
        c.start()
        assert c.connected.wait(10)
    write_sweep(daemon)
    wait_for(lambda: len(stopped(daemon)) == 2, 30, describe=daemon.process.output)
    status, listing = daemon.request("GET", "/api/v1/tuning-jobs")
    assert status == 200
    (tj,) = listing["tuning_jobs"]
    assert set(tj) == {"name", "objective", "rule", "counts", "best", "completion"}
    assert tj["name"] == "api" and tj["best"] == {"job": "b", "value": 0.4}
    assert tj["counts"]["Stopped"] == 2 and tj["completion"] is None
    status, detail = daemon.request("GET", "/api/v1/tuning-jobs/api")
    assert detail["rule"] == tj["rule"] and detail["completion"] is None  # from the live engine
    cli = subprocess.run(
        [sys.executable, "-m", "sidecar", "status", "-c", str(daemon.config), "--json", "--values"],
        capture_output=True,
        text=True,
        check=True,
    )
    (from_status,) = json.loads(cli.stdout)["tuning_jobs"]
    # every threshold is the median rule's own figure, recomputed here from the values
    ordered = sorted(detail["jobs"], key=lambda j: j["order"])
    for k, job in enumerate(ordered):
        for epoch, threshold in job["thresholds"]:
            averages = []
            for earlier in ordered[:k]:
                cut = earlier["decision"]["epoch"] if earlier["decision"] else None
                series = [v for e, v in earlier["values"]["val_loss"] if cut is None or e <= cut]
                if len(series) >= epoch:
                    averages.append(sum(series[:epoch]) / epoch)
            if not averages:
                assert threshold is None, (job["job"], epoch)  # nothing to compare with
            else:
                assert threshold == pytest.approx(statistics.median(averages)), (job["job"], epoch)
    for job, expected in zip(detail["jobs"], from_status["jobs"], strict=True):
        thresholds = job.pop("thresholds")
        why = job.pop("why_not_stopped")
        assert (why is None) == (job["decision"] is not None)
        assert job == expected  # one element of `status --json --values`, plus thresholds
        if job["decision"]:
            at = dict(thresholds)[job["decision"]["epoch"]]
            assert at == job["decision"]["median"]  # what the rule compared it with
    wait_for(lambda: all(len(c.decisions) == 2 for c in clients), 10)
    assert clients[0].decisions == clients[1].decisions
    assert {job for job, _ in clients[0].decisions} == set(stopped(daemon))
    assert {"value", "decision", "job"} <= clients[0].kinds
    assert daemon.request("GET", "/api/v1/tuning-jobs/nope")[0] == 404


def push(d: Daemon, job: str, body: object, token: str = TOKEN) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return d.request(
        "POST",
        f"/api/v1/tuning-jobs/api/jobs/{job}/values",
        raw,
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def test_pushed_values_decide_as_log_lines_would(daemon: Daemon, tmp_path: Path) -> None:
    answers = {}
    for job, values in CURVES.items():
        for e, v in enumerate(values, 1):
            status, answer = push(
                daemon, job, {"values": [{"metric": "val_loss", "epoch": e, "value": v}]}
            )
            assert status == 200, answer
            if answer["stop"]:
                answers[job] = answer["decision"]["epoch"]
                break
    expected = replay_stops(daemon.config, write_curve_logs(tmp_path, CURVES))
    assert expected and answers == expected
    assert TOKEN not in daemon.process.output(100_000)  # never logged


@pytest.mark.parametrize(
    ("body", "token", "status"),
    [
        (
            {"values": [{"metric": "val_loss", "epoch": 1, "value": 0.5}]},
            "wrong-token-xxxxxxxxxx",
            401,
        ),
        (b"{not json", TOKEN, 400),
        ({"values": [{"metric": "val_loss", "epoch": 0, "value": 0.5}]}, TOKEN, 400),
        ({"values": [{"metric": "val_loss", "epoch": 1, "value": "x"}]}, TOKEN, 400),
        (b"x" * (1 << 20 | 1), TOKEN, 413),
    ],
)
def test_bad_pushes_are_refused_and_store_nothing(
    daemon: Daemon, body: object, token: str, status: int
) -> None:
    code, answer = push(daemon, "bad", body, token)
    assert code == status, answer
    _, detail = daemon.request("GET", "/api/v1/tuning-jobs/api")
    assert all(j["job"] != "bad" for j in detail.get("jobs", []))


def test_a_refused_oversized_body_is_read_by_the_client_sending_it(daemon: Daemon) -> None:
    """413 comes before the body is read; the daemon then reads and drops what the client still
    sends before closing, so the client finishes sending and reads the 413 (closing on unread
    data resets the connection, and a reset loses the answer on the client's side)."""
    body = b"x" * (3 << 20)
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/tuning-jobs/api/jobs/big/values HTTP/1.1\r\nHost: t\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        sock.sendall(body)  # raises BrokenPipeError when the daemon closes without reading
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_without_a_token_file_every_post_is_405(tmp_path: Path) -> None:
    with Daemon(tmp_path, token=False).running() as d:
        assert (
            push(d, "a", {"values": [{"metric": "val_loss", "epoch": 1, "value": 1.0}]})[0] == 405
        )


def test_the_daemon_survives_a_thousand_garbage_requests(daemon: Daemon) -> None:
    payloads = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x00\xff" * 50,
        b"POST /api/v1/x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
    ]
    for i in range(1000):
        with (
            socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as s,
            contextlib.suppress(OSError),  # the server may close first: that is its answer
        ):
            s.sendall(payloads[i % len(payloads)])
            s.shutdown(socket.SHUT_WR)  # done sending: the server answers or closes at once
            s.recv(1024)
    assert daemon.process.alive()
    assert daemon.request("GET", "/api/v1/tuning-jobs")[0] == 200


def test_a_client_that_never_reads_does_not_hold_up_decisions(daemon: Daemon) -> None:
    """An event stream opened and never read: every decision is still made."""
    stuck = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        many = {f"j{k:03d}": [1.0 + k / 100, 0.9 + k / 100, 0.8 + k / 100] for k in range(60)}
        for job, values in many.items():
            (daemon.logs / f"{job}.log").write_text(
                "".join(f"epoch {e} val_loss={v}\n" for e, v in enumerate(values, 1))
                + "x" * 2000
                + "\n"
            )

        def all_decided() -> bool:  # every job read to its end or stopped
            status, doc = daemon.request("GET", "/api/v1/tuning-jobs/api")
            jobs = doc.get("jobs", []) if status == 200 else []
            return len(jobs) == len(many) and all(j["decision"] or j["epochs"] == 3 for j in jobs)

        wait_for(all_decided, 60, describe=daemon.process.output)
        assert stopped(daemon)  # the rule did stop jobs meanwhile
    finally:
        stuck.close()
