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
from dataclasses import dataclass
from types import FrameType

import structlog

from sidecar.assemble import Parts, assemble
from sidecar.config import Config
from sidecar.errors import UsageError
from sidecar.extras import require_extras
from sidecar.model import Decision, JobEnded, JobStatus
from sidecar.pipeline import Publish
from sidecar.sources.pipe import StreamPump, write_all
from sidecar.status import completion_in_store
from sidecar.stoppers import NoneStopper, Stopper
from sidecar.stoppers.signal import SignalStopper, fixed_resolver
from sidecar.store import open_store
from sidecar.telemetry import Telemetry

log = structlog.get_logger("sidecar.exec")


@dataclass(frozen=True, slots=True)
class Executed:
    """How a command run by `execute` ended: its exit code (or -1 when it never started, the
    tuning job being complete), whether the rule stopped it, and the decision."""

    code: int
    stopped: bool
    decision: Decision | None = None
    not_started: bool = False


def run_exec(
    config: Config,
    *,
    job: str,
    argv: Sequence[str],
    tuning_job: str | None = None,
    dry_run: bool = False,
) -> int:
    """Run `argv`; return its exit code, or `early_stopped_exit_code` when the rule stopped it
    (or the tuning job is complete and it was not started)."""
    outcome = execute(config, job=job, argv=argv, tuning_job=tuning_job, dry_run=dry_run)
    if outcome.stopped or outcome.not_started:
        return config.early_stopped_exit_code
    return outcome.code if outcome.code >= 0 else 128 - outcome.code


def execute(
    config: Config,
    *,
    job: str,
    argv: Sequence[str],
    tuning_job: str | None = None,
    dry_run: bool = False,
    publish: Publish | None = None,
) -> Executed:
    """`run_exec`'s work: `publish` gets the live events (each objective value, as the API's
    stream has them); signals are forwarded to the child only from the main thread (an Optuna
    study's worker threads run trials too)."""
    if not argv:
        raise UsageError("exec needs a command after `--`")
    require_extras(config, dry_run=True)  # the store's extra; exec stops with signals only
    tuning_job = tuning_job or config.tuning_job
    store = open_store(config.store)
    no_stop = dry_run or config.stop.backend == "none"
    try:
        done = completion_in_store(store, tuning_job, config.objective, config.early_stopping)
    except BaseException:
        store.close()
        raise
    if done is not None:
        # a launcher loop runs `exec` per job: a complete tuning job launches no more
        store.close()
        log.warning(
            "tuning_job_complete",
            tuning_job=tuning_job,
            job=job,
            reason=done.reason,
            completed_by=done.job,
            at=done.at,
            hint="the command was not started",
        )
        return Executed(-1, False, not_started=True)
    try:
        child = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0
        )
    except OSError as exc:
        store.close()  # before registering: a command that never ran is no job
        raise UsageError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    stopper: Stopper = (
        NoneStopper()
        if no_stop
        else SignalStopper(fixed_resolver(child.pid), grace_seconds=config.stop.grace_seconds)
    )
    parts = Parts()
    try:
        decider = assemble(
            config,
            store=store,
            stopper=stopper,
            telemetry=Telemetry(max_metric_series=config.max_metric_series),
            parts=parts,
            backend="none" if no_stop else "signal",
            dry_run=no_stop,
            shared_store=True,  # other `exec`s of this tuning job write the same store
            publish=publish,
        )
        # launch order: when exec starts the job; a name that has run and ended is a new attempt
        key = decider.pipeline.job_key(tuning_job, job, fresh=True)
        decider.pipeline.register(tuning_job, key, name=job)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):  # unsupervised, it must not run on
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        parts.stop(time.monotonic() + 10)
        store.close()
        raise

    def forward(signum: int, frame: FrameType | None) -> None:
        del frame
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    previous = (
        {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    assert child.stdout is not None and child.stderr is not None
    pumps = [
        StreamPump(
            os.dup(pipe.fileno()),
            sink,
            decider.consumer.put,
            tuning_job=tuning_job,
            job=job,
            max_line_bytes=config.max_line_bytes,
        )
        for pipe, sink in ((child.stdout, sys.stdout.fileno()), (child.stderr, sys.stderr.fileno()))
    ]
    child.stdout.close()
    child.stderr.close()
    for pump in pumps:
        parts.start(pump)
    try:
        code = child.wait()
        for pump in pumps:
            pump.join()
        if pumps[1].last_byte != b"\n" and config.log_level in ("debug", "info"):
            # the sidecar's own log lines (job_ended follows) start on a line of their own
            write_all(sys.stderr.fileno(), b"\n")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    status = JobStatus.COMPLETED if code == 0 else JobStatus.FAILED
    decider.consumer.put(JobEnded(tuning_job, job, status, f"exit code {code}"))
    # every line the child wrote is decided on, its stop's outcome known, and all stored
    parts.stop(time.monotonic() + config.stop.grace_seconds + 30)
    state = decider.pipeline.engines[tuning_job].jobs[key]
    stopped = (
        state.decision is not None
        and not state.decision.dry_run
        and state.status is JobStatus.STOPPED
    )
    return Executed(code, stopped, state.decision)
