"""Memory and idle CPU of the daemon following 1,000 files with 1,000 jobs' history (docs/design.md, "Performance targets").

    .venv/bin/python benchmarks/footprint.py [--files 1000] [--epochs 30] [--idle-seconds 20]
        [--layout flat|dirs] [--max-watches N] [--deadline 300] [--tree DIR] [--keep DIR]

Target: RSS <= 80 MB; idle CPU <= 0.2 % of a core.

Writes `--files` training logs (a few noise lines and `--epochs` metric lines each) into a
temporary folder, then starts a real `sidecar run` (SQLite store, stop backend `none`, HTTP on a
free port) whose one source glob matches all of them: `logs/*.log` (`--layout flat`, one folder,
one inotify watch) or `logs/*/train.log` (`--layout dirs`, a folder per job as on a Kubernetes node,
a recursive watch: one inotify watch per folder). It waits (polling the SQLite store, up to
`--deadline` seconds) until every job is registered and every value is stored, lets the daemon
settle, then reads from /proc/PID:

- VmRSS and VmHWM (peak) from `status`, open file descriptors, threads;
- CPU time (utime + stime from `stat`) over an idle window of `--idle-seconds`, nothing written;
- after the window, one more epoch is appended to every file and applied (the daemon still follows
  all of them), and the memory is read again.

The inotify limits (`fs.inotify.max_user_watches`, `max_user_instances`) and the open-files limit
are printed, and the daemon's log is searched for `polling_fallback` (inotify limit hit: the
tailer then polls every 0.25 s) and `open_failed`. `--max-watches N` runs the daemon in a user
namespace of its own (`unshare -U -r`) whose `user.max_inotify_watches` is N, to measure the
polling fallback (`--layout dirs` needs a watch per folder) without touching the host's limits.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TUNING_JOB = "footprint"
RSS_TARGET_MB = 80.0
IDLE_TARGET_PERCENT = 0.2  # of one core
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOISE = [
    "INFO trainer.py:212] step {s}/5000 loss {x:.4f} lr 3.00e-04",
    "INFO data.py:88] loaded shard {s} of 512",
    "Epoch {e}: 100%|##########| 1000/1000 [00:15<00:00, 64.2it/s, loss={x:.3f}]",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_int(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "n/a"


def log_path(root: Path, layout: str, k: int) -> Path:
    name = f"job-{k:04d}"
    if layout == "dirs":
        return root / "logs" / name / "train.log"
    return root / "logs" / f"{name}.log"


def epoch_lines(rng: random.Random, quality: float, epoch: int) -> str:
    noise = "".join(
        NOISE[rng.randrange(len(NOISE))].format(s=rng.randrange(5000), e=epoch, x=rng.random())
        + "\n"
        for _ in range(3)
    )
    loss = quality * 2.0 / (1 + epoch) + rng.random() * 0.05
    return noise + f"epoch={epoch} val_loss={loss:.5f} val_acc={1 - loss / 3:.5f}\n"


def status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def kib(value: str) -> float:
    """`123456 kB` -> MB."""
    return int(value.split(maxsplit=1)[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory(pid: int) -> tuple[float, float, int, int]:
    """(VmRSS MB, VmHWM MB, open fds, threads)."""
    st = status(pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return kib(st["VmRSS"]), kib(st["VmHWM"]), fds, int(st["Threads"])


def stored(db: Path) -> tuple[int, int]:
    """(jobs, metric values) in the store, (0, 0) before the schema exists."""
    if not db.exists():
        return 0, 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            (jobs,) = conn.execute(
                "SELECT count(*) FROM jobs WHERE tuning_job = ?", (TUNING_JOB,)
            ).fetchone()
            (values,) = conn.execute(
                "SELECT count(*) FROM metric_values WHERE tuning_job = ?", (TUNING_JOB,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created yet, or busy
        return 0, 0
    return int(jobs), int(values)


def wait_stored(
    daemon: subprocess.Popen[bytes], db: Path, jobs: int, values: int, deadline: float
) -> float:
    """Seconds until the store holds `jobs` jobs and `values` values."""
    t0 = time.monotonic()
    seen = (0, 0)
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            sys.exit(f"the daemon exited with {daemon.returncode}")
        seen = stored(db)
        if seen[0] >= jobs and seen[1] >= values:
            return time.monotonic() - t0
        time.sleep(0.2)
    sys.exit(f"deadline passed: {seen[0]} of {jobs} jobs, {seen[1]} of {values} values stored")


def events(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of history per job")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--layout", choices=("flat", "dirs"), default="flat")
    parser.add_argument(
        "--max-watches",
        type=int,
        help="run the daemon with this inotify watch limit (a user namespace of its own)",
    )
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds to catch up")
    parser.add_argument(
        "--keep", type=Path, help="work in this (new) folder and keep it: logs, store, daemon.log"
    )
    parser.add_argument(
        "--tree",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the sidecar checkout to run (default: this one)",
    )
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    watches = read_int("/proc/sys/fs/inotify/max_user_watches")
    instances = read_int("/proc/sys/fs/inotify/max_user_instances")
    print(
        f"limits: fs.inotify.max_user_watches {watches}, max_user_instances {instances}, "
        f"open files {soft} (hard {hard})"
    )
    if soft < args.files + 64:
        print(
            f"  warning: the daemon keeps every followed file open; {args.files} files need "
            f"more than the soft limit of {soft} descriptors (raise `ulimit -n`)"
        )

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        if args.keep:
            root.mkdir(parents=True)  # must be new: old logs would change the counts
        rng = random.Random(0)
        qualities = [0.5 + rng.random() for _ in range(args.files)]
        t0 = time.perf_counter()
        for k in range(args.files):
            path = log_path(root, args.layout, k)
            path.parent.mkdir(parents=True, exist_ok=True)
            text = f"starting job-{k:04d}\n" + "".join(
                epoch_lines(rng, qualities[k], e) for e in range(1, args.epochs + 1)
            )
            path.write_text(text)
        size = sum(log_path(root, args.layout, k).stat().st_size for k in range(args.files))
        glob = "logs/*/train.log" if args.layout == "dirs" else "logs/*.log"
        print(
            f"wrote {args.files} logs ({glob}), {args.epochs} epochs x 2 metrics each, "
            f"{size / 1e6:.1f} MB, in {time.perf_counter() - t0:.1f} s"
        )
        db = root / "history.db"
        config = {
            "tuning_job": TUNING_JOB,
            "objective": {"metric": "val_loss", "type": "Minimize"},
            "metric_definitions": [
                {"Name": "val_loss", "Regex": r"val_loss=([-+0-9.eE]+|nan|inf)"},
                {"Name": "val_acc", "Regex": r"val_acc=([-+0-9.eE]+|nan|inf)"},
            ],
            "epoch": {"regex": r"^epoch=(\d+)"},
            "sources": [
                {
                    "path": str(root / glob),
                    "format": "plain",
                    "job": "{parent}" if args.layout == "dirs" else "{stem}",
                }
            ],
            "stop": {"backend": "none"},
            "store": f"sqlite://{db}",
            "http": {"host": "127.0.0.1", "port": free_port()},
            "log_level": "info",
        }
        cfg = root / "config.json"
        cfg.write_text(json.dumps(config, indent=2))
        daemon_log = root / "daemon.log"
        env = {**os.environ, "PYTHONPATH": str(args.tree)}
        with daemon_log.open("wb") as err:
            started = time.monotonic()
            argv = [sys.executable, "-m", "sidecar", "run", "-c", str(cfg)]
            if args.max_watches is not None:  # unshare and sh exec: the pid stays the daemon's
                limit = f"echo {args.max_watches} > /proc/sys/user/max_inotify_watches"
                argv = ["unshare", "-U", "-r", "sh", "-c", f'{limit} && exec "$@"', "sh", *argv]
            daemon = subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                cwd=root,  # not a checkout: `-m` puts the current folder first on sys.path
            )
        try:
            values = args.files * args.epochs * 2
            catch_up = wait_stored(daemon, db, args.files, values, started + args.deadline)
            time.sleep(2.0)  # the reconcile after the catch-up, pending writes, GC settle
            rss, hwm, fds, threads = memory(daemon.pid)

            c0, w0 = cpu_seconds(daemon.pid), time.monotonic()
            time.sleep(args.idle_seconds)
            c1, w1 = cpu_seconds(daemon.pid), time.monotonic()
            idle_percent = (c1 - c0) / (w1 - w0) * 100

            # one more epoch in every file: every file is still followed
            t1 = time.monotonic()
            for k in range(args.files):
                with log_path(root, args.layout, k).open("a") as f:
                    f.write(epoch_lines(rng, qualities[k], args.epochs + 1))
            more = wait_stored(daemon, db, args.files, values + args.files * 2, t1 + args.deadline)
            time.sleep(1.0)
            rss2, hwm2, fds2, threads2 = memory(daemon.pid)
            total_cpu = cpu_seconds(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                code = daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                code = daemon.wait()

        logged = events(daemon_log)
        start_events = [e for e in logged if e.get("event") == "started"]
        polling = bool(start_events and start_events[0].get("polling"))
        fallbacks = [e for e in logged if e.get("event") == "polling_fallback"]
        open_failed = sum(1 for e in logged if e.get("event") == "open_failed")
        warnings: dict[str, int] = {}
        for e in logged:
            if e.get("level") in ("warning", "error") and e.get("event") != "polling_fallback":
                warnings[str(e.get("event"))] = warnings.get(str(e.get("event")), 0) + 1

    print()
    print(
        f"footprint of `sidecar run`, {args.files} files ({args.layout}), {args.files} jobs x "
        f"{args.epochs} epochs x 2 metrics of history (PYTHONPATH={args.tree})"
    )
    if args.max_watches is not None:
        print(f"  inotify watch limit for the daemon: {args.max_watches} (its own user namespace)")
    print(f"  caught up (every job and value stored) {catch_up:.1f} s after start")
    print(
        f"  settled:        RSS {rss:6.1f} MB   peak (VmHWM) {hwm:6.1f} MB   "
        f"{fds} fds   {threads} threads"
    )
    print(f"  idle CPU over {w1 - w0:.1f} s: {c1 - c0:.2f} s = {idle_percent:.2f} % of one core")
    print(
        f"  +1 epoch in every file, applied in {more:.1f} s: RSS {rss2:6.1f} MB   "
        f"peak {hwm2:6.1f} MB   {fds2} fds   {threads2} threads"
    )
    print(f"  CPU used in all: {total_cpu:.1f} s; exit code after SIGTERM: {code}")
    print(
        f"  file events: {'POLLING (inotify unavailable or limit hit)' if polling or fallbacks else 'inotify'}"
        + (f"; polling_fallback: {fallbacks[0].get('reason')}" if fallbacks else "")
    )
    if open_failed:
        print(f"  open_failed: {open_failed} file(s) could not be opened")
    if warnings:
        print(
            "  other warnings/errors logged: " + ", ".join(f"{k} x{v}" for k, v in warnings.items())
        )
    print()
    resident, peak = max(rss, rss2), max(hwm, hwm2)
    print(
        f"RSS <= {RSS_TARGET_MB:.0f} MB: {'MET' if resident <= RSS_TARGET_MB else 'NOT MET'} "
        f"({resident:.1f} MB); peak during the catch-up {peak:.1f} MB "
        f"({'also' if peak <= RSS_TARGET_MB else 'not'} within it)"
    )
    print(
        f"idle CPU <= {IDLE_TARGET_PERCENT:g} % of a core: "
        f"{'MET' if idle_percent <= IDLE_TARGET_PERCENT else 'NOT MET'} ({idle_percent:.2f} %)"
    )


if __name__ == "__main__":
    main()
