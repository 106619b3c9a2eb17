"""How the sidecar's costs grow: replay time and RSS with lines, decision time with jobs in
history and epochs per job, idle CPU with followed files (issue 12's scaling table).

    .venv/bin/python benchmarks/scaling.py [--lines 1000000 3000000 10000000]
        [--jobs 1 100 1000 10000 100000] [--epochs 10 100 1000] [--files 1 100 1000 10000]
        [--idle-seconds 10] [--results FILE]

- lines: `sidecar replay` of one log (5 % metric lines, `parse_throughput.make_log`) as a whole
  process: wall seconds, lines/s, peak RSS (GNU time). Replay streams values to the store in
  bounded batches, so RSS should stay flat while the log grows.
- jobs, epochs: one decision (`TuningJobEngine.observe` of a new objective value at the last
  epoch) with that many earlier jobs in the engine, each with that many epochs: the first
  decision (running averages computed) and the median of 20 steady ones (cached), in
  microseconds (`rule_decisions.measure`, the sagemaker rule).
- files: `sidecar run` following that many idle files (written once, then silent): the CPU share
  of a core it uses while idle, over `--idle-seconds` (after it has read them all).

Figures, not assertions: the table is printed (and written to --results) for the closing note
and docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import parse_throughput
import rule_decisions

TREE = Path(__file__).resolve().parent.parent


def replay_row(lines: int, tmp: Path) -> str:
    log = tmp / "job-001.log"
    parse_throughput.make_log(log, lines, 0.05)
    cfg = tmp / "config.json"
    cfg.write_text(json.dumps(parse_throughput.sidecar_config(tmp)))
    parse_throughput.warm(log)
    db = tmp / "replay.db"
    argv = [sys.executable, "-m", "sidecar", "replay", "-c", str(cfg)]
    argv += ["--store", f"sqlite://{db}", str(log)]
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    wall, _cpu_seconds, rss = parse_throughput.timed(argv, tmp / "replay.txt", env)
    log.unlink()
    for stale in tmp.glob("replay.db*"):
        stale.unlink()
    peak = f"{rss / 1024:.0f}" if rss else "n/a"
    return f"| {lines:,} lines | {wall:.2f} s | {lines / wall:,.0f} lines/s | {peak} MB |"


def decision_row(jobs: int, epochs: int) -> str:
    first, steady = rule_decisions.measure("sagemaker", jobs, epochs, repeat=20)  # ms
    return f"| {jobs:,} jobs x {epochs:,} epochs | {first * 1e3:,.0f} us | {steady * 1e3:,.0f} us |"


def idle_row(files: int, idle_seconds: float, tmp: Path) -> str:
    logs = tmp / "logs"
    logs.mkdir()
    for i in range(files):
        (logs / f"job-{i:05d}.log").write_text(f"epoch=1 val_loss={0.5 + i / (files * 10):.4f}\n")
    cfg = {
        "tuning_job": "idle",
        "objective": {"metric": "val_loss", "type": "Minimize"},
        "metric_definitions": [{"Name": "val_loss", "Regex": r"val_loss=([0-9.]+)"}],
        "sources": [{"path": str(logs / "*.log")}],
        "stop": {"backend": "none"},
        "store": f"sqlite://{tmp / 'idle.db'}",
        "http": {"port": 0},
        "log_level": "warning",
        "idle_timeout_seconds": 0,
    }
    path = tmp / "idle.json"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "run", "-c", str(path)],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while _stored(tmp / "idle.db") < files and time.monotonic() < deadline:
            time.sleep(0.5)
        before = _cpu(proc.pid)
        time.sleep(idle_seconds)
        share = (_cpu(proc.pid) - before) / idle_seconds
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(logs)
    return f"| {files:,} files | {share:.2%} of a core |"


def _stored(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM metric_values").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, nargs="*", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--jobs", type=int, nargs="*", default=[1, 100, 1000, 10_000, 100_000])
    parser.add_argument("--epochs", type=int, nargs="*", default=[10, 100])
    parser.add_argument("--files", type=int, nargs="*", default=[1, 100, 1000, 10_000])
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    out = [
        f"Scaling (`benchmarks/scaling.py`), {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores"
    ]
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        if args.lines:
            out += ["", "| replay of | wall | rate | peak RSS |", "|---|---|---|---|"]
            for n in args.lines:
                out.append(replay_row(n, tmp))
                print(out[-1], flush=True)
        if args.jobs and args.epochs:
            out += ["", "| history | first decision | steady decision |", "|---|---|---|"]
            for epochs in args.epochs:
                for jobs in args.jobs:
                    if jobs * epochs > 20_000_000:
                        continue  # beyond this machine's memory for the engine's history
                    out.append(decision_row(jobs, epochs))
                    print(out[-1], flush=True)
        if args.files:
            out += ["", "| followed, idle | CPU |", "|---|---|"]
            for n in args.files:
                out.append(idle_row(n, args.idle_seconds, tmp))
                for stale in tmp.glob("idle.db*"):
                    stale.unlink()
                print(out[-1], flush=True)
    text = "\n".join(out) + "\n"
    print()
    print(text)
    if args.results:
        with args.results.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
