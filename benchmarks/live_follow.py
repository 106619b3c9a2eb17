"""Following many files as they are written: `sidecar run` against `mtail`, CPU per million lines
and write-to-stored lag (docs/design.md, "Performance targets").

    .venv/bin/python benchmarks/live_follow.py [--files 100] [--rate 50000] [--seconds 30]
        [--metric-share 0.03] [--mtail /usr/bin/mtail] [--tree DIR]

A writer process appends to `--files` logs at a combined `--rate` lines per second for
`--seconds` (`--metric-share` of them `epoch=N val_loss=ID` lines, the rest noise), once with
`sidecar run` following the folder and once with `mtail` following the same files (its program:
the same regex, a counter and a gauge), one tool at a time on the same workload. For each tool:
CPU seconds (user + system, from /proc) while the writer runs and until the tool has caught up,
per million lines written. For the sidecar also the lag from a metric line's write to its value
being in the SQLite store: every metric line's value is a unique id, the writer notes when it
wrote each, a poller notes when each first appears in the store (polling every 50 ms, so the
figures carry up to that much resolution).

Targets: lag p99 under 1 s, and at most half the CPU mtail uses on the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WRITER = r"""
import json, os, random, sys, time
folder, files, rate, seconds, share, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
rng = random.Random(0)
handles = [open(os.path.join(folder, f"job-{i:04d}.log"), "a", buffering=1 << 16) for i in range(files)]
epochs = [0] * files
tick = 0.02
per_tick = rate * tick
written = {}
lines = 0
next_id = 1
start = time.monotonic()
carry = 0.0
while time.monotonic() - start < seconds:
    carry += per_tick
    n, carry = int(carry), carry - int(carry)
    now = time.monotonic()
    for k in range(n):
        i = rng.randrange(files)
        if rng.random() < share:
            epochs[i] += 1
            handles[i].write(f"epoch={epochs[i]} val_loss={next_id}\n")
            written[next_id] = now
            next_id += 1
        else:
            handles[i].write(f"2024-06-01 INFO trainer.py:212] step {k} loss {rng.random():.4f} lr 3e-4 samples/s 812.5\n")
    for h in handles:
        h.flush()
    lines += n
    sleep = start + (lines / rate) - time.monotonic()
    if sleep > 0:
        time.sleep(sleep)
for h in handles:
    h.close()
with open(out, "w") as f:  # a file, not stdout: a pipe would block on a large document
    json.dump({"lines": lines, "written": written, "elapsed": time.monotonic() - start}, f)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # utime, stime, and the children's (cutime, cstime): mtail runs as one process anyway
    return sum(int(f) for f in fields[11:15]) / ticks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(folder: Path, files: int) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"job-{i:04d}.log").write_text("")


def run_writer(folder: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", WRITER, str(folder), str(args.files), str(args.rate)]
    argv += [str(args.seconds), str(args.metric_share), str(folder.parent / "written.json")]
    return subprocess.Popen(argv, text=True)


def writer_result(folder: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((folder.parent / "written.json").read_text())
    return result


def sidecar_phase(tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    logs = tmp / "logs"
    prepare(logs, args.files)
    db = tmp / "live.db"
    for stale in tmp.glob("live.db*"):
        stale.unlink()
    config = {
        "tuning_job": "live",
        "objective": {"metric": "val_loss", "type": "Minimize"},
        "metric_definitions": [{"Name": "val_loss", "Regex": r"val_loss=([0-9]+)"}],
        "sources": [{"path": str(logs / "*.log"), "format": "plain"}],
        "early_stopping": {"type": "Off"},
        "stop": {"backend": "none"},
        "store": f"sqlite://{db}",
        "http": {"port": free_port(), "host": "127.0.0.1"},
        "log_level": "warning",
        "idle_timeout_seconds": 0,
    }
    cfg = tmp / "live.json"
    cfg.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(args.tree)}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "run", "-c", str(cfg)],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "sidecar.err").open("wb"),
    )
    try:
        deadline = time.monotonic() + 30
        while not db.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # started and idle
        before = cpu_seconds(daemon.pid)
        writer = run_writer(logs, args)
        seen: dict[int, float] = {}
        conn = sqlite3.connect(db, timeout=5)
        last_seq = 0
        result: dict[str, object] | None = None
        while True:
            try:
                rows = conn.execute(
                    "SELECT value, seq FROM metric_values WHERE tuning_job = 'live'"
                    " AND metric = 'val_loss' AND seq > ?",
                    (last_seq,),
                ).fetchall()
            except sqlite3.OperationalError:
                rows = []
            now = time.monotonic()
            for value, seq in rows:
                seen.setdefault(int(value), now)
                last_seq = max(last_seq, int(seq))
            if result is None and writer.poll() is not None:
                result = writer_result(logs)
                catch_up = time.monotonic() + 60
            if result is not None:
                written = result["written"]
                assert isinstance(written, dict)
                if len(seen) >= len(written) or time.monotonic() > catch_up:
                    break
            time.sleep(0.05)
        cpu = cpu_seconds(daemon.pid) - before
        conn.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    assert result is not None
    written = {int(k): float(v) for k, v in result["written"].items()}  # type: ignore[union-attr]
    lags = sorted(seen[k] - t for k, t in written.items() if k in seen)
    missing = len(written) - len(lags)
    return {
        "lines": result["lines"],
        "cpu": cpu,
        "lag_p50": lags[len(lags) // 2] if lags else float("nan"),
        "lag_p99": lags[int(len(lags) * 0.99)] if lags else float("nan"),
        "missing": missing,
        "elapsed": result["elapsed"],
    }


def mtail_phase(tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    logs = tmp / "logs"
    prepare(logs, args.files)
    progs = tmp / "progs"
    progs.mkdir(exist_ok=True)
    (progs / "live.mtail").write_text(
        "gauge val_loss\ncounter val_loss_values\n"
        "/val_loss=(?P<value>[0-9]+)/ {\n  val_loss = float($value)\n  val_loss_values++\n}\n"
    )
    port = free_port()
    daemon = subprocess.Popen(
        [args.mtail, "--progs", str(progs), "--logs", str(logs / "*.log"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "mtail.err").open("wb"),
    )
    try:
        time.sleep(2.0)  # started and idle
        before = cpu_seconds(daemon.pid)
        writer = run_writer(logs, args)
        writer.wait()
        result = writer_result(logs)
        expected = len(result["written"])
        deadline = time.monotonic() + 60
        counted = 0
        while time.monotonic() < deadline:
            counted = mtail_count(port)
            if counted >= expected:
                break
            time.sleep(0.1)
        cpu = cpu_seconds(daemon.pid) - before
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    return {"lines": result["lines"], "cpu": cpu, "counted": counted, "expected": expected}


def mtail_count(port: int) -> int:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as r:
            doc = json.loads(r.read())
    except OSError:
        return 0
    for metric in doc:
        if metric.get("Name") == "val_loss_values":
            return int(sum(lv["Value"]["Value"] for lv in metric.get("LabelValues", [])))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50_000, help="lines per second, in all")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--metric-share", type=float, default=0.03)
    parser.add_argument("--mtail", default=shutil.which("mtail") or "/usr/bin/mtail")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--no-mtail", action="store_true")
    args = parser.parse_args()
    random.seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        side = sidecar_phase(tmp, args)
        peer = None
        if not args.no_mtail and Path(args.mtail).exists():
            peer = mtail_phase(tmp, args)
    lines = int(side["lines"])  # type: ignore[call-overload]
    print(
        f"live follow: {args.files} files, {args.rate:,.0f} lines/s in all for {args.seconds:g} s, "
        f"{args.metric_share:.0%} metric lines"
    )
    print(
        f"{'tool':<10}{'lines':>12}{'CPU s':>10}{'CPU s / M lines':>18}{'lag p50 s':>12}{'lag p99 s':>12}"
    )
    cpu = float(side["cpu"])  # type: ignore[arg-type]
    print(
        f"{'sidecar':<10}{lines:>12,}{cpu:>10.2f}{cpu / lines * 1e6:>18.2f}"
        f"{float(side['lag_p50']):>12.3f}{float(side['lag_p99']):>12.3f}"  # type: ignore[arg-type]
    )
    if side["missing"]:
        print(f"  values never stored within 60 s of the end: {side['missing']}")
    if peer is not None:
        plines = int(peer["lines"])  # type: ignore[call-overload]
        pcpu = float(peer["cpu"])  # type: ignore[arg-type]
        print(
            f"{'mtail':<10}{plines:>12,}{pcpu:>10.2f}{pcpu / plines * 1e6:>18.2f}{'':>12}{'':>12}"
        )
        print(f"  mtail counted {peer['counted']:,} of {peer['expected']:,} values")
        if pcpu > 0:
            ratio = (cpu / lines) / (pcpu / plines)
            verdict = "MET" if ratio <= 0.5 else "NOT MET"
            print(f"sidecar CPU per line / mtail's: {ratio:.2f}; target <= 0.5: {verdict}")
        else:
            print("mtail used no measurable CPU (too little work to compare)")
    p99 = float(side["lag_p99"])  # type: ignore[arg-type]
    print(f"lag p99 {p99:.3f} s; target < 1 s: {'MET' if p99 < 1 else 'NOT MET'}")


if __name__ == "__main__":
    main()
