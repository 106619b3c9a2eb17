"""A small HTTP/1.1 server on asyncio: routes to handlers, bounded in every way a client controls.

One event-loop thread holds every connection, so idle or half-open sockets cost no thread: a
listen backlog of 512, at most `max_connections` at once, a deadline to send the request head and
body, a cap on head and body sizes, and a deadline for each write (a client that stops reading is
dropped). At the cap, a new connection closes the oldest one still sending its request head
(hundreds of half-open sockets must not keep a scrape out); only when none is, it is answered 503. Handlers that compute (metrics, snapshots)
run on a small thread pool so the loop keeps accepting; streaming handlers (Server-Sent Events)
run on the loop. Every response closes its connection except a stream, which ends when the
client or the server goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from sidecar.errors import ConfigError

log = structlog.get_logger("sidecar.http")

BACKLOG = 512
MAX_CONNECTIONS = 512
READ_TIMEOUT = 10.0  # seconds to send the request line, headers and body
WRITE_TIMEOUT = 10.0  # seconds a response write may wait for the client to read
MAX_HEAD = 64 * 1024
MAX_BODY = 1 << 20  # the API's push bodies are at most 1 MiB
# after refusing a request whose body was not read (413, a bad head): what the client still
# sends is read and dropped for this long and this much, so that closing does not reset the
# connection before the client has read the refusal (a reset discards it on the client's side)
LINGER_SECONDS = 1.0
LINGER_BYTES = 4 << 20
WORKERS = 4


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the handlers see it."""

    method: str
    path: str  # percent-decoded
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # names in lower case
    body: bytes = b""
    params: Mapping[str, str] = field(default_factory=dict)  # from the route's {placeholders}


@dataclass(slots=True)
class Response:
    """A response: a body, or a `stream` of chunks written as they come (Server-Sent Events)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: AsyncIterator[bytes] | None = None


def text(status: int, message: str) -> Response:
    return Response(status, (message.rstrip("\n") + "\n").encode())


SyncHandler = Callable[[Request], Response]
AsyncHandler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    parts: tuple[str, ...]  # literal segments, or `{name}` for one captured segment
    handler: SyncHandler | AsyncHandler
    asynchronous: bool


class Router:
    """Methods and paths to handlers; `{name}` captures one path segment."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: SyncHandler) -> None:
        """A handler that computes: run on the server's thread pool."""
        self.routes.append(Route(method, _split(path), handler, False))

    def add_async(self, method: str, path: str, handler: AsyncHandler) -> None:
        """A handler that waits (a stream): run on the event loop."""
        self.routes.append(Route(method, _split(path), handler, True))

    def resolve(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """(route, captured params, methods allowed at this path)."""
        segments = _split(path)
        allowed: list[str] = []
        for route in self.routes:
            params = _match(route.parts, segments)
            if params is None:
                continue
            if route.method == method:
                return route, params, []
            allowed.append(route.method)
        return None, {}, allowed


def _split(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p)


def _match(parts: tuple[str, ...], segments: tuple[str, ...]) -> dict[str, str] | None:
    if len(parts) != len(segments):
        return None
    params: dict[str, str] = {}
    for part, segment in zip(parts, segments, strict=True):
        if part.startswith("{") and part.endswith("}"):
            params[part[1:-1]] = segment
        elif part != segment:
            return None
    return params


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or ConfigError naming `http.host` / `http.port`: a daemon that
    cannot serve must say so before it reads or stops anything."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"http.host: {host!r} is not an address or a name this host resolves ({exc.strerror})"
        ) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
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
    sock.setblocking(False)
    return sock


class HttpServer:
    """Serves a Router on a bound socket, from `start()` until `stop(deadline)`."""

    name = "http"

    def __init__(
        self,
        sock: socket.socket,
        router: Router,
        *,
        max_connections: int = MAX_CONNECTIONS,
        read_timeout: float = READ_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        max_body: int = MAX_BODY,
    ) -> None:
        self.sock = sock
        self.router = router
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_body = max_body
        self.port = int(sock.getsockname()[1])
        self.connections = 0
        self.refused = 0  # connections answered 503 because `max_connections` were busy
        self.evicted = 0  # half-open connections closed to make room for new ones
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="http-worker")
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # connections still sending their request head, oldest first: what room is made from
        self._reading: dict[asyncio.Task[None], None] = {}

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self, deadline: float) -> bool:
        """Close the listener and every connection (streams end), then the loop's thread."""
        loop = self.loop
        if loop is not None and self._thread.is_alive() and self._stopping is not None:
            loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(max(0.1, deadline - time.monotonic()))
        else:
            self.sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        return not self._thread.is_alive()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._client, sock=self.sock, limit=MAX_HEAD)
        self._ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=2.0)

    # one connection ------------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        try:
            if self.connections > self.max_connections and not self._evict():
                self.refused += 1
                await self._send(writer, text(503, "too many connections"))
                return
            if task is not None:
                self._reading[task] = None
            try:
                request = await asyncio.wait_for(self._read(reader), self.read_timeout)
            except TimeoutError:
                await self._send(writer, text(408, "request timeout"))
                return
            except _BadRequestError as exc:
                await self._send(writer, text(exc.status, exc.message))
                await self._linger(reader, writer)
                return
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            finally:
                if task is not None:
                    self._reading.pop(task, None)
            response = await self._dispatch(request)
            await self._send(writer, response, head_only=request.method == "HEAD")
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            pass
        finally:
            self.connections -= 1
            if task is not None:
                self._tasks.discard(task)
                self._reading.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close, then drop what the client still sends (bounded in time and bytes)."""
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
            deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
            dropped = 0
            while dropped < LINGER_BYTES:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return
                chunk = await asyncio.wait_for(reader.read(64 * 1024), left)
                if not chunk:
                    return  # the client is done
                dropped += len(chunk)

    def _evict(self) -> bool:
        """Close the oldest connection still sending its head; False when there is none."""
        for task in self._reading:
            del self._reading[task]
            self.evicted += 1
            task.cancel()
            return True
        return False

    async def _read(self, reader: asyncio.StreamReader) -> Request:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise _BadRequestError(431, "request head too large") from None
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise _BadRequestError(400, "malformed request line") from None
        if not version.startswith("HTTP/1."):
            raise _BadRequestError(505, "HTTP/1.x only")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequestError(400, "malformed header line")
            headers[name.lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _BadRequestError(411, "a body needs Content-Length (chunked is not accepted)")
        body = b""
        length_text = headers.get("content-length", "0") or "0"
        if not (length_text.isascii() and length_text.isdigit()):
            raise _BadRequestError(400, "Content-Length must be a number of bytes")
        if len(length_text) > 18:
            raise _BadRequestError(413, f"body over {self.max_body} bytes")
        length = int(length_text)
        if length > self.max_body:
            raise _BadRequestError(413, f"body over {self.max_body} bytes")
        if length:
            body = await reader.readexactly(length)
        try:
            parts = urlsplit(target)
        except ValueError:
            raise _BadRequestError(400, "malformed request target") from None
        return Request(
            method=method.upper(),
            path=unquote(parts.path) or "/",
            query=parse_qs(parts.query),
            headers=headers,
            body=body,
        )

    async def _dispatch(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        route, params, allowed = self.router.resolve(method, request.path)
        if route is None:
            if allowed:
                response = text(405, f"method {request.method} not allowed here")
                response.headers.append(("Allow", ", ".join(sorted(set(allowed)))))
                return response
            return text(404, f"not found: {request.path}")
        routed = Request(
            request.method, request.path, request.query, request.headers, request.body, params
        )
        try:
            if route.asynchronous:
                return await route.handler(routed)  # type: ignore[no-any-return,misc]
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._pool, route.handler, routed)
            return result  # type: ignore[return-value]
        except Exception:
            log.exception("http_handler_failed", path=request.path)
            return text(500, "internal error (logged)")

    async def _send(
        self, writer: asyncio.StreamWriter, response: Response, *, head_only: bool = False
    ) -> None:
        reason = (
            HTTPStatus(response.status).phrase
            if response.status in HTTPStatus._value2member_map_
            else ""
        )
        head = [f"HTTP/1.1 {response.status} {reason}", f"Content-Type: {response.content_type}"]
        head += [f"{k}: {v}" for k, v in response.headers]
        if response.stream is None:
            head += [f"Content-Length: {len(response.body)}", "Connection: close"]
        else:
            head += ["Cache-Control: no-cache", "Connection: close"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if response.stream is None:
            if not head_only:
                writer.write(response.body)
            await asyncio.wait_for(writer.drain(), self.write_timeout)
            return
        await asyncio.wait_for(writer.drain(), self.write_timeout)
        async for chunk in response.stream:
            writer.write(chunk)
            # a client that stops reading: its buffer fills, the drain times out, it is dropped
            await asyncio.wait_for(writer.drain(), self.write_timeout)


class _BadRequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
