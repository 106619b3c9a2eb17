"""`sidecar run`: capture signals → startup → main loop → shutdown, over an ordered list of parts.

Startup binds the HTTP port first (a daemon that cannot serve fails before it reads or stops
anything), then assembles the decision path (sidecar/assemble.py), then starts the sources.
Shutdown stops the parts in reverse, each within what is left of `shutdown_timeout`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

import structlog
from prometheus_client import CollectorRegistry

from sidecar.assemble import Decider, Parts, assemble
from sidecar.config import Config, config_warnings
from sidecar.consumer import Consumer
from sidecar.http.api import Api, read_token
from sidecar.http.events import EventHub
from sidecar.http.health import add_health_routes
from sidecar.http.server import HttpServer, Router, bind
from sidecar.model import Chunk, JobEnded
from sidecar.pipeline import Pipeline
from sidecar.sources.docker import DockerLogSource
from sidecar.sources.files import FileTailer, JobName
from sidecar.stoppers import Stopper
from sidecar.stoppers.factory import make_prober, make_stopper
from sidecar.store import Store, open_store
from sidecar.telemetry import Telemetry
from sidecar.templates import template_context

log = structlog.get_logger("sidecar")

# what a second SIGINT prints on its way out: written by the signal handler itself, which may
# not log (structlog's lock may be held by the very code the signal interrupted)
FORCED_EXIT = b'{"event": "forced_exit", "level": "warning", "signal": "SIGINT"}\n'


class Daemon:
    """`sidecar run`: follow `sources`, decide, stop, serve HTTP."""

    def __init__(
        self,
        config: Config,
        *,
        dry_run: bool = False,
        registry: CollectorRegistry | None = None,
        stopper: Stopper | None = None,
        store: Store | None = None,
        watch: bool = True,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        self.registry = registry
        self.watch = watch
        self.shutdown_timeout = shutdown_timeout
        self.node = config.node or socket.gethostname()
        self.should_exit = threading.Event()
        self.started = threading.Event()
        self.parts = Parts()
        self.http: HttpServer | None = None
        self.tailer: FileTailer | None = None
        self.container_sources: list[DockerLogSource] = []
        self.decider: Decider | None = None
        self._stopper = stopper
        self._store = store
        self._signals: list[int] = []  # appended by the signal handler, read by the main loop
        self._wake: tuple[int, int] | None = None  # the signal wake-up pipe (read, write)

    # the parts, for tests and the demo ---------------------------------------------------------
    @property
    def pipeline(self) -> Pipeline:
        assert self.decider is not None, "the daemon has not started"
        return self.decider.pipeline

    @property
    def consumer(self) -> Consumer:
        assert self.decider is not None, "the daemon has not started"
        return self.decider.consumer

    # lifecycle ---------------------------------------------------------------------------------
    def serve(self, *, install_signals: bool = True, keep_handlers: bool = False) -> int:
        """Run until asked to stop. `keep_handlers` (the CLI, about to exit): leave the signal
        handlers in place after shutdown, so a signal that comes after it (GNU timeout's
        second SIGTERM) cannot kill the exiting process by the default action."""
        restore = self._install_signal_handlers(keep=keep_handlers) if install_signals else None
        try:
            self.startup()
            self.main_loop()
        finally:
            try:
                self.shutdown()
            finally:
                if restore is not None:
                    restore()
        return 0

    def _install_signal_handlers(self, *, keep: bool = False) -> Callable[[], None]:
        """SIGTERM and SIGINT ask for a graceful exit; a SIGINT after either exits at once.

        The handler only records the signal (the wake-up pipe wakes the main loop): it runs on
        the main thread between any two bytecodes, possibly inside a logger's or an Event's lock,
        so taking any lock there (logging, `Event.set`) can deadlock the daemon for good."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        self._wake = (read_end, write_end)
        previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        signalled = [False]

        def handle(signum: int, frame: FrameType | None) -> None:
            del frame
            if signum == signal.SIGINT and signalled[0]:
                # every write is a committed transaction: exiting now loses nothing already read
                os.write(2, FORCED_EXIT)
                os._exit(130)
            signalled[0] = True
            self._signals.append(signum)

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                # kept (the CLI's run is ending): a late signal is ignored, not the default
                # action, which the interpreter puts back as it exits and which would kill
                # the process mid-exit (-SIGINT instead of the exit code)
                signal.signal(sig, signal.SIG_IGN if keep else handler)
            signal.set_wakeup_fd(previous_fd)
            self._wake = None
            os.close(read_end)
            os.close(write_end)

        return restore

    def request_exit(self) -> None:
        """Ask the main loop to end (from any thread, never from a signal handler)."""
        self.should_exit.set()
        if self._wake is not None:
            try:
                os.write(self._wake[1], b"\0")
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EBADF):
                    raise

    def startup(self) -> None:
        config = self.config
        from sidecar.extras import require_extras

        require_extras(config, dry_run=self.dry_run)
        # the port first: a daemon that cannot serve must fail before it reads or stops anything
        sock = bind(config.http.host, config.http.port)
        telemetry = Telemetry(self.registry, max_metric_series=config.max_metric_series)
        self.telemetry = telemetry
        token = read_token(config.http.token_file)
        router = Router()
        add_health_routes(router, telemetry.registry, self.ready)
        hub = EventHub()
        self.http = HttpServer(sock, router)
        self.parts.start(self.http)
        store = self._store or open_store(config.store)
        self.store = store
        stopper = self._stopper or make_stopper(config, dry_run=self.dry_run)
        # under --dry-run the events still name the configured backend (outcome says dry_run)
        backend = config.stop.backend if self.dry_run else stopper.backend
        self.decider = assemble(
            config,
            store=store,
            stopper=stopper,
            telemetry=telemetry,
            parts=self.parts,
            backend=backend,
            dry_run=self.dry_run or stopper.backend == "none",
            # another process may write this history (several sidecars on one SQLite file, or
            # nodes on PostgreSQL): catch up on their writes before deciding
            shared_store=not store.url.endswith(":memory:"),
            publish=hub.publish,
        )
        pipeline = self.decider.pipeline
        Api(
            config, pipeline, store, hub, token=token, submit=self.decider.consumer.inbox.put
        ).routes(router)
        for name, _objective in store.tuning_jobs():
            pipeline.engine(name)
        pipeline.engine(config.tuning_job)
        telemetry.watch(pipeline.snapshot)
        self._start_sources(stopper)
        self.started.set()
        self._warn_about_sources()
        for warning in config_warnings(config):
            log.warning("config_warning", warning=warning)
        log.info(
            "started",
            tuning_job=config.tuning_job,
            sources=[
                s.path or "docker:" + ",".join(s.docker.labels if s.docker else [])
                for s in config.sources
            ],
            store=store.url,
            backend=backend,
            dry_run=self.dry_run,
            http=f"{config.http.host}:{self.http.port}",
            node=self.node,
            polling=bool(self.tailer and self.tailer.watcher and self.tailer.watcher.polling),
        )

    def _start_sources(self, stopper: Stopper) -> None:
        config = self.config
        store = self.store
        offsets = store.offsets(self.node)
        prober = make_prober(config, stopper)
        probe = None
        if prober is not None:

            def probe(name: JobName, path: str, labels: dict[str, str]) -> bool | None:
                context = template_context(
                    job=name.job, tuning_job=name.tuning_job, log_path=path, extra=labels
                )
                return prober.probe(context)

        self.tailer = FileTailer(
            [s for s in config.sources if s.path is not None],
            node=self.node,
            tuning_job=config.tuning_job,
            max_line_bytes=config.max_line_bytes,
            offsets=offsets,
            emit=self._emit,
            idle_timeout=config.idle_timeout_seconds,
            watch=self.watch,
            probe=probe,
            regex_timeout=config.regex_timeout_seconds,
            telemetry=self.telemetry,
        )
        self.parts.start(self.tailer)
        for source in config.sources:
            if source.docker is not None:
                container_source = DockerLogSource(
                    source.docker,
                    node=self.node,
                    tuning_job=config.tuning_job,
                    max_line_bytes=config.max_line_bytes,
                    offsets=offsets,
                    emit=self._emit,
                )
                self.parts.start(container_source)
                self.container_sources.append(container_source)

    def _warn_about_sources(self) -> None:
        """A daemon with nothing to read says so instead of idling silently."""
        config = self.config
        if not config.sources:
            log.warning(
                "no_sources",
                hint="`sources` is empty: nothing is read; add a glob of log files "
                "(sources: [{path: /var/log/training/*.log}]) or a docker source",
            )
            return
        globs = [s.path for s in config.sources if s.path is not None]
        if globs and self.tailer is not None and not self.tailer.files:
            log.warning(
                "no_files_matched",
                globs=globs,
                hint="no file matches the sources' globs yet; files that appear later are "
                "picked up (`sidecar check -c CONFIG` lists what they match)",
            )

    def _emit(self, item: Chunk | JobEnded) -> None:
        assert self.decider is not None
        self.decider.consumer.put(item, abandon=self.should_exit.is_set)

    def main_loop(self) -> None:
        while not self.should_exit.is_set():
            if self._wake is None:
                self.should_exit.wait(1.0)
            else:
                try:
                    ready, _, _ = select.select([self._wake[0]], [], [], 1.0)
                except InterruptedError:
                    ready = []
                if ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake[0], 512)
            while self._signals:
                signum = self._signals.pop(0)
                log.info("signal_received", signal=signal.Signals(signum).name)
                self.should_exit.set()

    def shutdown(self) -> None:
        """Stop reading, drain, finish in-flight stops, write, close the store, stop HTTP last."""
        if not self.parts.started:
            return  # startup failed before anything ran (a config error says why)
        log.info("shutting_down")
        self.should_exit.set()
        self.parts.stop(time.monotonic() + self.shutdown_timeout)
        log.info("stopped")

    def ready(self) -> tuple[bool, str]:
        """Ready when the store answers, the writes commit and the sources run."""
        if not self.started.is_set() or self.decider is None:
            return False, "starting"
        writes = self.decider.writes
        if writes.failing:
            return False, f"store failing: {writes.failing}"
        if not self.decider.consumer.alive:
            return False, "consumer not running"
        if not self.store.ping():
            return False, "store unreachable"
        if self.tailer is None or not self.tailer.running:
            return False, "tailer not running"
        if self.tailer.unreadable:
            return False, f"files cannot be followed: {self.tailer.unreadable}"
        if not all(s.running for s in self.container_sources):
            return False, "container source not running"
        return True, "ready"
