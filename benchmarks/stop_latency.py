"""Line written to SIGTERM received: p50/p99 of the real daemon stopping real processes (docs/design.md, "Performance targets").

    .venv/bin/python benchmarks/stop_latency.py [--trials 200] [--stuck-clients 3]

Starts `sidecar run` (signal backend, pid files, SQLite) on a temporary folder. Each trial starts a
victim process that records `time.monotonic()` when SIGTERM arrives, writes the victim's log with a
first line (the job is registered), then a losing metric line, and measures from just after that
write to the victim's receipt of SIGTERM. CLOCK_MONOTONIC is system-wide on Linux, so the two
processes' readings compare.

The trials run twice, each time on a new daemon and store (the same number of jobs each): first
alone, then with `--stuck-clients` clients of the event
stream (`GET /api/v1/events`) that connect and never read a byte, so the daemon's writes to them
back up (docs/design.md, "Events": bounded per-client queues, a stuck client dropped). Both rows
are printed side by side; every trial of both must end with its SIGTERM (all decisions made).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VICTIM = r"""
import os, signal, sys, time
out = sys.argv[1]
def on_term(signum, frame):
    t = time.monotonic()
    with open(out + ".tmp", "w") as f:
        f.write(repr(t))
    os.replace(out + ".tmp", out)
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    signal.pause()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return path.read_text()
        except FileNotFoundError:
            time.sleep(0.0005)
    raise TimeoutError(path)


def stuck_client(port: int) -> socket.socket:
    """An event-stream client that never reads: a tiny receive buffer, nothing taken from it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
    return sock


def trials(root: Path, count: int) -> list[float]:
    """`count` victims stopped one after another; the latencies in ms, sorted."""
    latencies = []
    for k in range(count):
        job = f"job-{k:04d}"
        got = root / "got" / job
        victim = subprocess.Popen(
            [sys.executable, "-c", VICTIM, str(got), str(root / "pids" / f"{job}.pid")],
            start_new_session=True,
        )
        wait_file(root / "pids" / f"{job}.pid")
        log = root / "logs" / f"{job}.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, b"starting\n")
        time.sleep(0.15)  # the job is registered and its file followed: steady state
        line = f"epoch 1 loss={10 + k}\n".encode()
        os.write(fd, line)
        t0 = time.monotonic()
        t1 = float(wait_file(got))
        os.close(fd)
        victim.wait(timeout=10)
        latencies.append((t1 - t0) * 1000)
    return sorted(latencies)


def row(label: str, latencies: list[float]) -> str:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return (
        f"  {label:<28} {len(latencies):>6}  {q[49]:>8.2f}  {q[89]:>8.2f}  {q[98]:>8.2f}"
        f"  {latencies[-1]:>8.2f}"
    )


def phase(trial_count: int, stuck: int) -> list[float]:
    """One daemon on a new folder and store; `stuck` never-reading event-stream clients
    connected before the first trial. The latencies in ms, sorted."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        (root / "pids").mkdir()
        (root / "got").mkdir()
        port = free_port()
        config = {
            "tuning_job": "bench",
            "objective": {"metric": "loss"},
            "metric_definitions": [{"Name": "loss", "Regex": r"loss=(\S+)"}],
            "early_stopping": {"min_jobs": 1},
            "sources": [{"path": str(root / "logs" / "*.log"), "format": "plain"}],
            "stop": {
                "backend": "signal",
                "grace_seconds": 5,
                "signal": {"pid_file": str(root / "pids" / "{job}.pid")},
            },
            "store": f"sqlite://{root / 'h.db'}",
            "http": {"host": "127.0.0.1", "port": port},
            "log_level": "warning",
        }
        cfg = root / "config.json"
        cfg.write_text(json.dumps(config))
        daemon = subprocess.Popen([sys.executable, "-m", "sidecar", "run", "-c", str(cfg)])
        clients: list[socket.socket] = []
        try:
            (root / "logs" / "base.log").write_text("loss=1.0\n")
            while not (root / "h.db").exists():
                time.sleep(0.01)
            time.sleep(1.0)
            clients = [stuck_client(port) for _ in range(stuck)]
            return trials(root, trial_count)
        finally:
            for sock in clients:
                sock.close()
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200, help="trials in each phase")
    parser.add_argument(
        "--stuck-clients",
        type=int,
        default=3,
        help="event-stream clients that never read, in the second phase (0: no second phase)",
    )
    args = parser.parse_args()
    rows = [("alone", phase(args.trials, 0))]
    if args.stuck_clients:
        label = f"{args.stuck_clients} never-reading SSE clients"
        rows.append((label, phase(args.trials, args.stuck_clients)))
    print("stop latency, line written -> SIGTERM received, ms:")
    print(f"  {'':<28} {'trials':>6}  {'p50':>8}  {'p90':>8}  {'p99':>8}  {'max':>8}")
    for label, latencies in rows:
        print(row(label, latencies))
    made = sum(len(latencies) for _, latencies in rows)
    print(f"  every decision made: {made} of {args.trials * len(rows)} victims stopped")
    print("  target (docs/design.md): p50 <= 5 ms, p99 <= 25 ms")


if __name__ == "__main__":
    main()
