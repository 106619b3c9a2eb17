"""The daemon: startup (consumers before producers) → main loop → staged shutdown (HTTP last)."""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry

from sidecar.config import Config
from sidecar.errors import ConfigError, SidecarError
from sidecar.model import Chunk, JobEnded, StopFinished
from sidecar.pipeline import Pipeline
from sidecar.stoppers import StopDispatcher, Stopper, template_context
from sidecar.stoppers.factory import make_prober, make_stopper
from sidecar.store import Store, open_store
from sidecar.tail import FileTailer, JobName
from sidecar.telemetry import HttpServer, Telemetry

if TYPE_CHECKING:
    from sidecar.docker_source import DockerLogSource

log = structlog.get_logger("sidecar")

QUEUE_ITEMS = 256
COMMIT_BACKOFF = (0.1, 5.0)

Item = Chunk | JobEnded | StopFinished
# what a second SIGINT prints on its way out: written by the signal handler itself, which may
# not log (structlog's lock may be held by the very code the signal interrupted)
FORCED_EXIT = b'{"event": "forced_exit", "level": "warning", "signal": "SIGINT"}\n'


class Consumer:
    """Owns the queue between sources and the pipeline; its thread is the only decision maker.

    Items are handled as they come and their batches written behind them. When the store fails,
    handling goes on (decisions from memory) while the batches wait, retried with backoff; once
    `max_buffered_values` wait, no more items are taken, the queue fills and the sources block
    (back-pressure): nothing read is ever dropped.
    """

    def __init__(self, pipeline: Pipeline, *, max_items: int = QUEUE_ITEMS) -> None:
        self.pipeline = pipeline
        self.queue: queue.Queue[Item | None] = queue.Queue(max_items)
        self.failing: str | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consumer", daemon=True)
        self._delay = COMMIT_BACKOFF[0]
        self._next_try = 0.0  # monotonic time of the next write attempt after a failure

    def start(self) -> None:
        self._thread.start()

    def put(self, item: Item, *, abandon: Callable[[], bool] = lambda: False) -> bool:
        """Hand an item on, waiting while the queue is full; False if `abandon()` says give up."""
        while True:
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                if abandon() or self._closed.is_set():
                    return False

    def close(self, timeout: float | None) -> bool:
        """No more items: the consumer drains what is queued and ends, within `timeout` seconds
        (None: however long it takes). True when it has; else it is told to stop where it is
        (what it has not written is read again after a restart: nothing is lost)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._thread.is_alive():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                self.queue.put(None, timeout=0.2 if left is None else min(0.2, left))
                break
            except queue.Full:
                continue  # a full queue while the store is down: the consumer may never drain it
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._thread.join(left)
        self._closed.set()
        self._thread.join(1.0)
        return not self._thread.is_alive()

    def drain(self) -> None:
        """After the thread has ended: handle what is still queued (stop outcomes that came in
        while the last stops finished) and write it, on the caller's thread."""
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                try:
                    self.pipeline.handle(item)
                except Exception as exc:  # at shutdown: reported, and read again after a restart
                    log.error("drain_failed", error=f"{type(exc).__name__}: {exc}")
        try:
            self.pipeline.flush()
        except Exception as exc:
            log.error("store_write_failed", error=f"{type(exc).__name__}: {exc}")

    def _failed(self, exc: Exception, what: str) -> None:
        self.failing = str(exc) if isinstance(exc, SidecarError) else f"{type(exc).__name__}: {exc}"
        log.error(
            what,
            error=self.failing,
            retry_in=self._delay,
            buffered_values=self.pipeline.pending_values,
        )
        self._next_try = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, COMMIT_BACKOFF[1])

    def _recovered(self) -> None:
        if self.failing is not None:
            log.info("store_recovered")
        self.failing = None
        self._delay = COMMIT_BACKOFF[0]
        self._next_try = 0.0

    def _flush(self) -> None:
        if not self.pipeline.pending or time.monotonic() < self._next_try:
            return
        try:
            self.pipeline.flush()
        except Exception as exc:  # a store or bug failure must not stop the daemon
            self._failed(exc, "store_write_failed")
        else:
            self._recovered()

    def _handle(self, item: Item) -> bool:
        """Handle one item; a store read it needs failing (a new job's launch order) is retried
        with backoff, blocking the queue. False when closed meanwhile."""
        while True:
            try:
                self.pipeline.handle(item)
                return True
            except Exception as exc:  # a store or bug failure must not stop the daemon
                self._failed(exc, "consumer_retry")
            self._flush_wait()
            if self._closed.is_set():
                return False

    def _flush_wait(self) -> None:
        """Wait for the next write attempt (or close), then make it."""
        self._closed.wait(max(0.0, self._next_try - time.monotonic()))
        self._next_try = min(self._next_try, time.monotonic())
        self._flush()

    def _run(self) -> None:
        while not self._closed.is_set():
            if self.pipeline.buffer_full():
                self._flush_wait()
                continue
            timeout = None
            if self.pipeline.pending:
                timeout = max(0.0, self._next_try - time.monotonic())
            try:
                item = self.queue.get(timeout=timeout)
            except queue.Empty:
                self._flush()
                continue
            if item is None:
                break
            if not self._handle(item):
                return
            self._flush()
        # closing: write what waits, retrying until the close timeout gives up on it
        while self.pipeline.pending and not self._closed.is_set():
            self._flush_wait()


def bind_http(config: Config) -> HttpServer:
    """Bind the HTTP port, or raise ConfigError naming `http.port` / `http.host`."""
    host, port = config.http.host, config.http.port
    try:
        return HttpServer(host, port)
    except socket.gaierror as exc:
        raise ConfigError(
            f"http.host: {host!r} is not an address or a name this host resolves ({exc.strerror})"
        ) from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"http.port: port {port} on {host} is already in use (another sidecar?); "
                "choose another port, or 0 for any free one"
            ) from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise ConfigError(
                f"http.host: {host!r} is not an address of this host ({exc.strerror})"
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"http.port: binding port {port} is not permitted ({exc.strerror}); "
                "ports below 1024 need privileges: choose 1024 or above"
            ) from None
        raise


class Daemon:
    """`sidecar run`: tail `sources`, decide, stop, serve HTTP."""

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
        self.force_exit = False
        self.started = threading.Event()
        self._signals: list[int] = []  # appended by the signal handler, read by the main loop
        self._wake: tuple[int, int] | None = None  # the signal wake-up pipe (read, write)
        self._stopper = stopper
        self._store = store
        self.http: HttpServer | None = None
        self.tailer: FileTailer | None = None
        self.container_sources: list[DockerLogSource] = []

    # lifecycle -----------------------------------------------------------------------------
    def serve(self, *, install_signals: bool = True) -> int:
        restore = self._install_signal_handlers() if install_signals else None
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

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM and SIGINT ask for a graceful exit; a second SIGINT exits at once.

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
                signal.signal(sig, handler)
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
            except (BlockingIOError, OSError) as exc:
                if getattr(exc, "errno", None) not in (errno.EAGAIN, errno.EBADF):
                    raise

    def startup(self) -> None:
        config = self.config
        from sidecar.extras import require_extras

        require_extras(config, dry_run=self.dry_run)
        # the port first: a daemon that cannot serve must fail before it reads or stops anything
        self.http = bind_http(config)
        self.store = self._store or open_store(config.store)
        self.telemetry = Telemetry(self.registry)
        stopper = self._stopper or make_stopper(config, dry_run=self.dry_run)
        # under --dry-run the events still name the configured backend (outcome says dry_run)
        backend = self.config.stop.backend if self.dry_run else stopper.backend
        self.pipeline = Pipeline(
            config,
            self.store,
            self.telemetry,
            submit_stop=lambda request: None,
            backend=backend,
            dry_run=self.dry_run or stopper.backend == "none",
            # another process may write this history (several sidecars on one SQLite file, or
            # nodes on PostgreSQL): catch up on their writes before each decision
            shared_store=not self.store.url.endswith(":memory:"),
        )
        # consumers before producers: the dispatcher and consumer exist before any line is read
        self.dispatcher = StopDispatcher(
            stopper,
            on_result=self.pipeline.stop_finished,
            on_failure=self.pipeline.stop_failed,
            marker=config.stop.marker,
        )
        self.pipeline.submit_stop = self.dispatcher.submit
        for name, _objective in self.store.tuning_jobs():
            self.pipeline.engine(name)
        self.pipeline.engine(config.tuning_job)
        self.consumer = Consumer(self.pipeline)
        self.pipeline.feedback = self.consumer.put
        self.consumer.start()
        self.telemetry.watch(self.pipeline.snapshot)
        self.http.serve(self.telemetry.registry, self.ready)
        offsets = self.store.offsets(self.node)
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
        )
        self.tailer.start()
        for source in config.sources:
            if source.docker is not None:
                from sidecar.docker_source import DockerLogSource

                container_source = DockerLogSource(
                    source.docker,
                    node=self.node,
                    tuning_job=config.tuning_job,
                    max_line_bytes=config.max_line_bytes,
                    offsets=offsets,
                    emit=self._emit,
                )
                container_source.start()
                self.container_sources.append(container_source)
        self.started.set()
        self._warn_about_sources()
        log.info(
            "started",
            tuning_job=config.tuning_job,
            sources=[
                s.path or "docker:" + ",".join(s.docker.labels if s.docker else [])
                for s in config.sources
            ],
            store=self.store.url,
            backend=backend,
            dry_run=self.dry_run,
            http=f"{config.http.host}:{self.http.port}",
            node=self.node,
            polling=bool(self.tailer.watcher and self.tailer.watcher.polling),
        )

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

    def _emit(self, item: Item) -> None:
        self.consumer.put(item, abandon=self.should_exit.is_set)

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
        """Stop reading, drain, finish in-flight stops, close the store, stop HTTP last."""
        log.info("shutting_down")
        self.should_exit.set()
        deadline = time.monotonic() + self.shutdown_timeout
        if self.tailer is not None:
            self.tailer.stop()
        for container_source in self.container_sources:
            container_source.stop()
        consumer = getattr(self, "consumer", None)
        if consumer is not None and not consumer.close(max(0.0, deadline - time.monotonic())):
            log.warning("drain_timeout", queued=consumer.queue.qsize())
        dispatcher = getattr(self, "dispatcher", None)
        if dispatcher is not None and not dispatcher.close(max(0.0, deadline - time.monotonic())):
            log.warning("stops_unfinished_at_shutdown")
        if consumer is not None and not consumer._thread.is_alive():
            consumer.drain()  # the outcomes of the last stops
        if hasattr(self, "store"):
            self.store.close()
        if self.http is not None:
            self.http.stop()
        log.info("stopped")

    def ready(self) -> tuple[bool, str]:
        """Ready when the store answers, the consumer commits and the tailer runs."""
        if not self.started.is_set():
            return False, "starting"
        if self.consumer.failing:
            return False, f"store failing: {self.consumer.failing}"
        if not self.store.ping():
            return False, "store unreachable"
        if self.tailer is None or not self.tailer.running:
            return False, "tailer not running"
        if not all(s.running for s in self.container_sources):
            return False, "container source not running"
        return True, "ready"
