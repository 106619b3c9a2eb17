"""`sidecar demo`: real trainer processes, the daemon stopping the losers, and a summary."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from prometheus_client import CollectorRegistry

from sidecar.config import Config, validate_config
from sidecar.daemon import Daemon
from sidecar.model import JobEnded, JobStatus
from sidecar.report import table
from sidecar.telemetry import JobSnapshot

# (job, learning rate): a sweep where a few are clearly worse and one diverges
SWEEP = [
    ("lr-0.0300", 0.03),
    ("lr-0.0100", 0.01),
    ("lr-0.0500", 0.05),
    ("lr-0.0010", 0.001),
    ("lr-0.0200", 0.02),
    ("lr-0.5000", 0.5),
    ("lr-0.0003", 0.0003),
    ("lr-0.0400", 0.04),
]
EPOCHS = 12
NUMBER = r"[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf)"


def demo_config(folder: Path, port: int) -> Config:
    """The config the demo runs with (printed at start, so it can be copied)."""
    return validate_config(
        {
            "tuning_job": "demo",
            "objective": {"metric": "val_loss", "type": "Minimize"},
            "metric_definitions": [
                {"Name": "val_loss", "Regex": rf"val_loss=({NUMBER})"},
                {"Name": "train_loss", "Regex": rf"train_loss=({NUMBER})"},
                {"Name": "val_acc", "Regex": rf"val_acc=({NUMBER})"},
            ],
            "epoch": {"regex": r"- epoch (\d+) "},
            "early_stopping": {"type": "Auto", "min_jobs": 3, "start_epoch": 2},
            "sources": [{"path": str(folder / "logs" / "*.log"), "format": "plain"}],
            "stop": {
                "backend": "signal",
                "grace_seconds": 5,
                "signal": {"pid_file": str(folder / "pids" / "{job}.pid")},
            },
            "store": f"sqlite://{folder / 'history.db'}",
            "http": {"host": "127.0.0.1", "port": port},
            "idle_timeout_seconds": 0,
        }
    )


def free_port(preferred: int) -> int:
    """`preferred` when it is free, else any free port."""
    for port in (preferred, 0):
        with contextlib.suppress(OSError), socket.socket() as s:
            s.bind(("127.0.0.1", port))
            return int(s.getsockname()[1])
    return 0


@dataclass(slots=True)
class Trial:
    """One trainer process of the sweep."""

    job: str
    lr: float
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    shown: set[str] = field(default_factory=set)


class Demo:
    """Launches the sweep two at a time beside an in-process daemon and narrates what happens."""

    def __init__(
        self,
        folder: Path,
        *,
        port: int,
        epoch_seconds: float,
        out: TextIO,
        keep: bool = True,
        wait: Callable[[], object] | None = None,
    ) -> None:
        self.wait = wait  # after the sweep: keep serving the page until this returns
        self.folder = folder
        self.keep = keep  # the folder outlives the demo (else the history hint would be a lie)
        self.epoch_seconds = epoch_seconds
        self.out = out
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        (folder / "pids").mkdir(exist_ok=True)
        self.config = demo_config(folder, free_port(port))
        self.daemon = Daemon(self.config, registry=CollectorRegistry())
        self.trials = [Trial(job, lr) for job, lr in SWEEP]

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run(self, parallel: int = 2) -> int:
        thread = threading.Thread(target=self.daemon.serve, kwargs={"install_signals": False})
        thread.start()
        if not self.daemon.started.wait(30):
            self.say("the daemon did not start")
            return 1
        http = self.daemon.http
        self.say(
            f"sidecar demo: {len(self.trials)} training jobs, {EPOCHS} epochs each, minimizing "
            f"val_loss, rule sagemaker (min_jobs 3, start_epoch 2); signal backend.\n"
            f"  logs and history in {self.folder}\n"
            f"  live page at http://127.0.0.1:{http.port if http else '?'}/\n"
            f"  metrics at http://127.0.0.1:{http.port if http else '?'}/metrics\n"
        )
        started = time.monotonic()
        try:
            pending = list(self.trials)
            running: list[Trial] = []
            while pending or running:
                while pending and len(running) < parallel:
                    trial = pending.pop(0)
                    self._launch(trial)
                    running.append(trial)
                self._narrate()
                running = [t for t in running if t.process and t.process.poll() is None]
                time.sleep(0.1)
            self._settle()
            if self.wait is not None:
                self.say(
                    f"the sweep is over; the page stays at http://127.0.0.1:"
                    f"{http.port if http else '?'}/ until you press Enter"
                )
                self.wait()
        finally:
            for trial in self.trials:
                if trial.process and trial.process.poll() is None:
                    trial.process.kill()
                    trial.process.wait()
            self.daemon.should_exit.set()
            thread.join()
        self._summary(time.monotonic() - started)
        return 0

    def _launch(self, trial: Trial) -> None:
        trial.log = self.folder / "logs" / f"{trial.job}.log"
        handle = trial.log.open("wb")
        trial.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecar.demo.trainer",
                "--job",
                trial.job,
                "--lr",
                str(trial.lr),
                "--epochs",
                str(EPOCHS),
                "--seed",
                str(self.trials.index(trial)),
                "--epoch-seconds",
                str(self.epoch_seconds),
                "--pid-file",
                str(self.folder / "pids" / f"{trial.job}.pid"),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the stopper signals the whole group
        )
        handle.close()
        self.say(f"  started   {trial.job}  (pid {trial.process.pid})")
        # launch order is the order the daemon first sees a line: wait for it before the next
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._registered(trial.job):
            time.sleep(0.02)

    def _registered(self, job: str) -> bool:
        return any(s.job == job for s in self._snapshot())

    def _snapshot(self) -> Iterator[JobSnapshot]:
        pipeline = getattr(self.daemon, "pipeline", None)
        return pipeline.snapshot() if pipeline is not None else iter(())

    def _narrate(self) -> None:
        engine = self.daemon.pipeline.engines.get("demo")
        if engine is None:
            return
        for trial in self.trials:
            state = engine.jobs.get(trial.job)
            if state is None:
                continue
            if state.decision is not None and "stopped" not in trial.shown:
                d = state.decision
                trial.shown.add("stopped")
                self.say(
                    f"  STOPPED   {trial.job}  at epoch {d.epoch}: val_loss {d.value:.4f} is worse "
                    f"than the median {d.median:.4f} of {d.compared_jobs} earlier jobs"
                )
            if trial.process and trial.process.poll() is not None and "ended" not in trial.shown:
                trial.shown.add("ended")
                if state.decision is None:
                    self.say(
                        f"  finished  {trial.job}  val_loss {state.latest.get('val_loss', float('nan')):.4f}"
                    )

    def _settle(self) -> None:
        """Let the daemon read every trial's last lines, then tell it the trials ended (the
        daemon's shutdown applies that before the summary, so `status` agrees with it)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._caught_up():
            time.sleep(0.05)
        self._narrate()
        for trial in self.trials:
            if trial.process is None or trial.process.returncode is None:
                continue
            code = trial.process.returncode
            status = JobStatus.COMPLETED if code == 0 else JobStatus.FAILED
            self.daemon.consumer.put(JobEnded("demo", trial.job, status, f"exit code {code}"))

    def _caught_up(self) -> bool:
        engine = self.daemon.pipeline.engines.get("demo")
        if engine is None:
            return False
        for trial in self.trials:
            if trial.log is None or trial.job not in engine.jobs:
                continue
            if engine.epochs(trial.job) < trial.log.read_bytes().count(b"val_loss="):
                return False
        return True

    def _summary(self, seconds: float) -> None:
        engine = self.daemon.pipeline.engines["demo"]
        rows = []
        saved_total = 0
        for trial in self.trials:
            state = engine.jobs.get(trial.job)
            if state is None:
                rows.append([trial.job, f"{trial.lr:g}", "never started", "-", "-", "-"])
                continue
            stopped_at = state.decision.epoch if state.decision else None
            ran = engine.epochs(trial.job)
            saved = EPOCHS - stopped_at if stopped_at is not None else 0
            saved_total += saved
            status = (
                JobStatus.STOPPED.value if stopped_at is not None else JobStatus.COMPLETED.value
            )
            final = state.latest.get("val_loss")
            rows.append(
                [
                    trial.job,
                    f"{trial.lr:g}",
                    status,
                    str(stopped_at or "-"),
                    str(ran),
                    str(saved),
                    f"{final:.4f}" if final is not None else "-",
                ]
            )
        self.say("")
        self.say(
            table(
                [
                    "JOB",
                    "LR",
                    "STATUS",
                    "STOP EPOCH",
                    "EPOCHS RUN",
                    "EPOCHS SAVED",
                    "LAST VAL_LOSS",
                ],
                rows,
            )
        )
        stopped = sum(1 for r in rows if r[2] == "Stopped")
        total = EPOCHS * len(self.trials)
        self.say(
            f"\n{stopped} of {len(self.trials)} jobs stopped early; {saved_total} of {total} epochs "
            f"saved ({100 * saved_total / total:.0f}%) in {seconds:.1f} s."
        )
        if self.keep:
            self.say(f"History: sidecar status --store {self.config.store}")
        else:
            self.say("(logs and history were in a temporary folder: `--dir D` keeps them)")


def run_demo(
    *,
    folder: Path | None,
    port: int,
    epoch_seconds: float,
    out: TextIO = sys.stdout,
    wait: Callable[[], object] | None = None,
) -> int:
    """Run the demo in `folder` (a new temporary one when None)."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        return Demo(folder, port=port, epoch_seconds=epoch_seconds, out=out, wait=wait).run()
    with tempfile.TemporaryDirectory(prefix="sidecar-demo-") as tmp:
        return Demo(
            Path(tmp), port=port, epoch_seconds=epoch_seconds, out=out, keep=False, wait=wait
        ).run()
