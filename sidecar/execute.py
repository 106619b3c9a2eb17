"""`sidecar exec`: run a training command as a child, pass its output through, stop it by the rule."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import structlog

from sidecar.app import Consumer
from sidecar.config import Config
from sidecar.decode import LineSplitter
from sidecar.errors import UsageError
from sidecar.model import Chunk, JobEnded, JobStatus
from sidecar.pipeline import Pipeline
from sidecar.stoppers import NoneStopper, StopDispatcher, Stopper
from sidecar.stoppers.signal import SignalStopper, fixed_resolver
from sidecar.store import open_store
from sidecar.telemetry import Telemetry

log = structlog.get_logger("sidecar.exec")
READ_SIZE = 64 * 1024


def _write_all(fd: int, data: bytes) -> bool:
    """Write every byte (pipes take partial writes); False once the reader has gone away."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BrokenPipeError:
            return False
        except InterruptedError:
            continue
        view = view[written:]
    return True


class _StreamPump(threading.Thread):
    """Copies one of the child's pipes to ours byte for byte and hands its lines on."""

    def __init__(
        self,
        source: int,
        sink: int,
        consumer: Consumer,
        *,
        tuning_job: str,
        job: str,
        max_line_bytes: int,
    ) -> None:
        super().__init__(name=f"pump-{sink}", daemon=True)
        self.source, self.sink = source, sink
        self.consumer = consumer
        self.tuning_job, self.job = tuning_job, job
        self.splitter = LineSplitter(max_line_bytes)
        self.last_byte = b"\n"  # of what was passed through: did the child end its last line?

    def run(self) -> None:
        passing = True
        while True:
            try:
                data = os.read(self.source, READ_SIZE)
            except InterruptedError:
                continue
            if not data:
                break
            read_at = time.monotonic()
            if passing:
                passing = _write_all(self.sink, data)
                self.last_byte = data[-1:]
            lines = self.splitter.feed(data)
            if lines:
                self._send(lines, read_at)
        tail = self.splitter.finish()
        if tail:
            self._send(tail, time.monotonic())
        os.close(self.source)

    def _send(self, lines: list[bytes], read_at: float) -> None:
        self.consumer.put(Chunk(self.tuning_job, self.job, lines, read_at))


def run_exec(
    config: Config,
    *,
    job: str,
    argv: Sequence[str],
    tuning_job: str | None = None,
    dry_run: bool = False,
) -> int:
    """Run `argv`; return its exit code, or `early_stopped_exit_code` when the rule stopped it."""
    if not argv:
        raise UsageError("exec needs a command after `--`")
    tuning_job = tuning_job or config.tuning_job
    store = open_store(config.store)
    telemetry = Telemetry()
    no_stop = dry_run or config.stop.backend == "none"
    pipeline = Pipeline(
        config,
        store,
        telemetry,
        submit_stop=lambda request: None,
        backend="none" if no_stop else "signal",
        dry_run=no_stop,
        shared_store=True,  # other `exec`s of this tuning job write the same store
    )
    try:
        child = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0
        )
    except OSError as exc:
        store.close()  # before registering: a command that never ran is no job
        raise UsageError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    try:
        # launch order: when exec starts the job; a name that has run and ended is a new attempt
        key = pipeline.job_key(tuning_job, job, fresh=True)
        pipeline.register(tuning_job, key, name=job)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):  # unsupervised, it must not run on
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        store.close()
        raise
    stopper: Stopper = (
        NoneStopper()
        if no_stop
        else SignalStopper(fixed_resolver(child.pid), grace_seconds=config.stop.grace_seconds)
    )
    dispatcher = StopDispatcher(
        stopper,
        on_result=pipeline.stop_finished,
        on_failure=pipeline.stop_failed,
        marker=config.stop.marker,
    )
    pipeline.submit_stop = dispatcher.submit
    consumer = Consumer(pipeline)
    pipeline.feedback = consumer.put
    consumer.start()

    def forward(signum: int, frame: FrameType | None) -> None:
        del frame
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    assert child.stdout is not None and child.stderr is not None
    pumps = [
        _StreamPump(
            os.dup(pipe.fileno()),
            sink,
            consumer,
            tuning_job=tuning_job,
            job=job,
            max_line_bytes=config.max_line_bytes,
        )
        for pipe, sink in ((child.stdout, sys.stdout.fileno()), (child.stderr, sys.stderr.fileno()))
    ]
    child.stdout.close()
    child.stderr.close()
    for pump in pumps:
        pump.start()
    try:
        code = child.wait()
        for pump in pumps:
            pump.join()
        if pumps[1].last_byte != b"\n" and config.log_level in ("debug", "info"):
            # the sidecar's own log lines (job_ended follows) start on a line of their own
            _write_all(sys.stderr.fileno(), b"\n")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    status = JobStatus.COMPLETED if code == 0 else JobStatus.FAILED
    consumer.put(JobEnded(tuning_job, job, status, f"exit code {code}"))  # mapped to the attempt
    consumer.close(None)  # every line the child wrote is decided on and stored before we look
    dispatcher.close(timeout=config.stop.grace_seconds + 10)
    consumer.drain()  # the stop's outcome: did the signal stop it, or had it already exited?
    state = pipeline.engines[tuning_job].jobs[key]
    stopped = (
        state.decision is not None
        and not state.decision.dry_run
        and state.status is JobStatus.STOPPED
    )
    store.close()
    if stopped:
        return config.early_stopped_exit_code
    return code if code >= 0 else 128 - code
