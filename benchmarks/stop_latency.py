"""Line written to SIGTERM received: p50/p99 of the real daemon stopping real processes (docs/design.md, "Performance targets").

    .venv/bin/python benchmarks/stop_latency.py [--trials 200]

Starts `sidecar run` (signal backend, pid files, SQLite) on a temporary folder. Each trial starts a
victim process that records `time.monotonic()` when SIGTERM arrives, writes the victim's log with a
first line (the job is registered), then a losing metric line, and measures from just after that
write to the victim's receipt of SIGTERM. CLOCK_MONOTONIC is system-wide on Linux, so the two
processes' readings compare.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        (root / "pids").mkdir()
        (root / "got").mkdir()
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
            "http": {"host": "127.0.0.1", "port": free_port()},
            "log_level": "warning",
        }
        cfg = root / "config.json"
        cfg.write_text(json.dumps(config))
        daemon = subprocess.Popen([sys.executable, "-m", "sidecar", "run", "-c", str(cfg)])
        try:
            (root / "logs" / "base.log").write_text("loss=1.0\n")
            while not (root / "h.db").exists():
                time.sleep(0.01)
            time.sleep(1.0)
            latencies = []
            for k in range(args.trials):
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
            latencies.sort()
            q = statistics.quantiles(latencies, n=100, method="inclusive")
            print(f"stop latency, line written -> SIGTERM received, {len(latencies)} trials:")
            print(
                f"  p50 {q[49]:.2f} ms   p90 {q[89]:.2f} ms   p99 {q[98]:.2f} ms   max {latencies[-1]:.2f} ms"
            )
            print("  target (docs/design.md): p50 <= 5 ms, p99 <= 25 ms")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)


if __name__ == "__main__":
    main()
