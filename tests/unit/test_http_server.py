"""The daemon's HTTP server on real sockets: routes, health endpoints, and every bound a client
controls (connections, half-open heads, read deadline, head and body sizes, garbage).

Each test serves a Router on 127.0.0.1, a free port, and stops the server after; clients are
raw sockets so that what goes on the wire (partial heads, absurd headers, binary) is exactly
what the test says. Every test also checks that no exception escaped onto the server's event
loop (the loop's exception handler records them): a bad request is answered, not crashed on.
"""

from __future__ import annotations

import contextlib
import random
import resource
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sidecar.http.health import add_health_routes
from sidecar.http.server import MAX_HEAD, HttpServer, Request, Response, Router, bind, text
from tests.helpers import wait_for

DEADLINE = 30.0  # seconds any wait may take before the test fails: generous, never a threshold
PARTIAL_HEAD = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"  # no blank line: the head never ends


@dataclass
class Served:
    """A running server, its readiness (settable) and what escaped onto its event loop."""

    server: HttpServer
    readiness: list[tuple[bool, str]]
    escaped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        return exchange(self.port, raw)

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        return self.request(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())

    def assert_nothing_escaped(self) -> None:
        """No exception reached the event loop's handler (each would be a request not answered)."""
        shown = [f"{c.get('message')}: {c.get('exception')!r}" for c in self.escaped]
        assert not shown, shown


def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw` on a new connection, read until the server closes it; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(raw)
        data = read_to_eof(sock)
    return parse_response(data)


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset after its response counts as the close)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = lines[0].split(" ", 2)
    assert version == "HTTP/1.1", lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), headers, body


def failing_handler(request: Request) -> Response:
    raise RuntimeError(f"handler bug at {request.path}")


def echo_handler(request: Request) -> Response:
    return Response(200, request.body, "application/octet-stream")


@contextlib.contextmanager
def serving(**options: Any) -> Iterator[Served]:
    """An HttpServer with the health routes, /boom (its handler raises) and POST /echo."""
    registry = CollectorRegistry()
    Gauge("corpus_answer", "A gauge the test looks for.", registry=registry).set(42)
    readiness = [(True, "ready")]
    router = Router()
    add_health_routes(router, registry, lambda: readiness[0])
    router.add("GET", "/boom", failing_handler)
    router.add("POST", "/echo", echo_handler)
    server = HttpServer(bind("127.0.0.1", 0), router, **options)
    served = Served(server, readiness)
    server.start()
    try:
        loop = server.loop
        assert loop is not None
        installed = threading.Event()

        def install() -> None:
            loop.set_exception_handler(lambda _loop, context: served.escaped.append(context))
            installed.set()

        loop.call_soon_threadsafe(install)
        assert installed.wait(DEADLINE)
        yield served
    finally:
        assert server.stop(time.monotonic() + DEADLINE)


@pytest.fixture
def served() -> Iterator[Served]:
    """A server with the default bounds."""
    with serving() as running:
        yield running


def ensure_descriptors(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to `needed` if it is lower; skip when the hard limit forbids."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@contextlib.contextmanager
def held_connections(port: int, count: int, payload: bytes) -> Iterator[list[socket.socket]]:
    """`count` connections that each sent `payload` and then hold on; all closed after."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            sockets.append(sock)
            sock.sendall(payload)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed this connection (EOF or reset), without blocking."""
    poller = select.poll()  # not select(): descriptors past 1024 are expected here
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(65536, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


# routes --------------------------------------------------------------------------------------
class TestRoutes:
    def test_metrics_is_the_registry_in_the_prometheus_text_format(self, served: Served) -> None:
        """GET /metrics answers 200 with the registry's exposition text and its content type."""
        status, headers, body = served.get("/metrics")
        assert status == 200
        assert headers["content-type"] == CONTENT_TYPE_LATEST
        assert b"corpus_answer 42.0" in body
        assert int(headers["content-length"]) == len(body)
        assert headers["connection"] == "close"
        served.assert_nothing_escaped()

    def test_healthz_is_200_ok(self, served: Served) -> None:
        """GET /healthz answers 200 `ok` whatever the readiness."""
        served.readiness[0] = (False, "starting")
        assert served.get("/healthz")[::2] == (200, b"ok\n")

    def test_readyz_follows_readiness_and_says_why_not(self, served: Served) -> None:
        """GET /readyz is 200 while ready, 503 with the reason while not, 200 again after."""
        assert served.get("/readyz")[::2] == (200, b"ready\n")
        served.readiness[0] = (False, "store unreachable")
        assert served.get("/readyz")[::2] == (503, b"store unreachable\n")
        served.readiness[0] = (True, "")
        assert served.get("/readyz")[::2] == (200, b"ready\n")

    @pytest.mark.parametrize("path", ["/", "/nope", "/metrics/extra", "/healthz/x/y"])
    def test_unknown_path_is_404(self, served: Served, path: str) -> None:
        """A path no route has is 404 naming the path."""
        status, _, body = served.get(path)
        assert status == 404
        assert path.encode() in body

    @pytest.mark.parametrize(("method", "path"), [("POST", "/metrics"), ("DELETE", "/healthz")])
    def test_wrong_method_on_a_known_path_is_405_with_allow(
        self, served: Served, method: str, path: str
    ) -> None:
        """A known path asked with a method it has no route for is 405 with an Allow header."""
        status, headers, _ = served.get(path, method)
        assert status == 405
        assert headers["allow"] == "GET"

    def test_head_answers_the_get_headers_without_a_body(self, served: Served) -> None:
        """HEAD is GET's status and headers (its Content-Length too) with no body."""
        _, got, body = served.get("/metrics")
        status, headers, empty = served.get("/metrics", "HEAD")
        assert status == 200
        assert empty == b""
        assert int(headers["content-length"]) == len(body) > 0
        assert headers["content-type"] == got["content-type"]

    def test_query_string_does_not_change_the_route(self, served: Served) -> None:
        """`/healthz?verbose=1` is /healthz."""
        assert served.get("/healthz?verbose=1")[0] == 200

    def test_body_within_content_length_reaches_the_handler(self, served: Served) -> None:
        """A POST body of Content-Length bytes is read and handed to the handler."""
        payload = bytes(range(256)) * 4
        head = f"POST /echo HTTP/1.1\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        assert served.request(head + payload)[::2] == (200, payload)

    def test_handler_exception_is_a_logged_500_and_the_server_serves_on(
        self, served: Served
    ) -> None:
        """A handler that raises gives 500, is logged with its path and traceback, and the
        server answers the next requests."""
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                status, _, body = served.get("/boom")
                assert status == 500
                assert b"internal error" in body
                assert b"handler bug" not in body  # the exception's text stays in the log
        failures = [e for e in logs if e["event"] == "http_handler_failed"]
        assert [e["path"] for e in failures] == ["/boom"] * 3
        assert all(e.get("exc_info") for e in failures)
        assert served.get("/healthz")[0] == 200
        served.assert_nothing_escaped()


# load ----------------------------------------------------------------------------------------
class TestConnections:
    def test_200_concurrent_clients_are_all_answered(self, served: Served) -> None:
        """200 clients asking /metrics at the same moment all get 200 and the whole page."""
        clients = 200
        ensure_descriptors(2 * clients + 256)
        start = threading.Barrier(clients)
        results: list[tuple[int, bool] | BaseException] = []

        def client() -> None:
            try:
                start.wait(DEADLINE)
                status, _, body = served.get("/metrics")
                results.append((status, b"corpus_answer 42.0" in body))
            except BaseException as exc:  # reported below, not lost in a thread
                results.append(exc)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
        assert not any(thread.is_alive() for thread in threads)
        assert results == [(200, True)] * clients
        assert served.server.refused == 0
        served.assert_nothing_escaped()

    def test_800_half_open_connections_do_not_keep_a_scrape_out(self) -> None:
        """With 800 connections holding a partial head and a cap of 512, the oldest half-open
        ones are evicted (counted), the others stay open, and a fresh GET /metrics gets 200."""
        held, cap = 800, 512
        ensure_descriptors(held + cap + 256)
        with (
            serving(max_connections=cap, read_timeout=3600) as served,
            held_connections(served.port, held, PARTIAL_HEAD) as sockets,
        ):
            server = served.server
            wait_for(lambda: server.evicted >= held - cap, what=f"{held - cap} are evicted")
            status, _, body = served.get("/metrics")
            assert status == 200
            assert b"corpus_answer 42.0" in body
            assert server.evicted >= held - cap
            assert server.refused == 0
            # the server closed exactly as many connections as it counts evicted, the oldest
            wait_for(
                lambda: sum(map(closed_by_server, sockets)) == server.evicted,
                what="the evicted connections are closed",
            )
            closed = [i for i, sock in enumerate(sockets) if closed_by_server(sock)]
            assert closed == list(range(len(closed)))
            assert len(closed) < held  # the newer ones are still held while the scrape got in
            served.assert_nothing_escaped()

    def test_at_the_cap_with_none_half_open_a_new_connection_is_503(self) -> None:
        """When every connection is past its head (handlers busy), the next one is answered
        503 and counted as refused; once they finish, requests are served again."""
        release = threading.Event()
        busy = threading.Semaphore(0)

        def slow(request: Request) -> Response:
            del request
            busy.release()
            release.wait(DEADLINE)
            return text(200, "done")

        with serving(max_connections=2) as served:
            served.server.router.add("GET", "/slow", slow)
            answers: list[int] = []
            threads = [
                threading.Thread(target=lambda: answers.append(served.get("/slow")[0]))
                for _ in range(2)
            ]
            try:
                for thread in threads:
                    thread.start()
                for _ in threads:
                    assert busy.acquire(timeout=DEADLINE)
                status, _, body = served.get("/healthz")
                assert (status, body) == (503, b"too many connections\n")
                assert served.server.refused == 1
            finally:
                release.set()
                for thread in threads:
                    thread.join(DEADLINE)
            assert answers == [200, 200]
            assert served.get("/healthz")[0] == 200
            served.assert_nothing_escaped()

    def test_half_open_connection_is_closed_after_the_read_timeout(self) -> None:
        """A client that never finishes its head is closed by the server once read_timeout
        passes (answered 408 first, if anything)."""
        with (
            serving(read_timeout=0.5) as served,
            held_connections(served.port, 1, PARTIAL_HEAD) as (sock,),
        ):
            sock.settimeout(DEADLINE)
            data = read_to_eof(sock)
            assert data == b"" or parse_response(data)[0] == 408, data
            assert served.get("/healthz")[0] == 200
            served.assert_nothing_escaped()

    def test_partial_body_is_closed_after_the_read_timeout(self) -> None:
        """A body shorter than its Content-Length is a read timeout too, not a hang."""
        with (
            serving(read_timeout=0.5) as served,
            held_connections(
                served.port, 1, b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort"
            ) as (sock,),
        ):
            sock.settimeout(DEADLINE)
            data = read_to_eof(sock)
            assert data == b"" or parse_response(data)[0] == 408, data
            served.assert_nothing_escaped()


# malformed requests --------------------------------------------------------------------------
MALFORMED = [
    pytest.param(
        b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * (MAX_HEAD + 1024) + b"\r\n\r\n",
        431,
        id="head-over-64KiB",
    ),
    pytest.param(
        b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEAD // 8 + 16) + b"\r\n",
        431,
        id="many-headers-over-64KiB",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\n", 413, id="body-over-cap"
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nContent-Length: " + b"9" * 1000 + b"\r\n\r\n",
        413,
        id="body-1000-digit-length",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, id="chunked-body"
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
        411,
        id="chunked-among-codings",
    ),
    pytest.param(b"GARBAGE\r\n\r\n", 400, id="request-line-one-word"),
    pytest.param(b"GET /metrics\r\n\r\n", 400, id="request-line-without-version"),
    pytest.param(b"GET  /metrics HTTP/1.1\r\n\r\n", 400, id="request-line-double-space"),
    pytest.param(b"GET /metrics HTTP/2.0\r\n\r\n", 505, id="http-2-version"),
    pytest.param(b"GET /metrics SPDY/3\r\n\r\n", 505, id="not-http"),
    pytest.param(b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400, id="header-no-colon"),
    pytest.param(b"GET /metrics HTTP/1.1\r\n: empty-name\r\n\r\n", 400, id="header-empty-name"),
    pytest.param(b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400, id="header-space-in-name"),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400, id="content-length-word"
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, id="content-length-negative"
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\nx", 400, id="content-length-list"
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400, id="content-length-hex"
    ),
]


class TestMalformedRequests:
    @pytest.mark.parametrize(("raw", "expected"), MALFORMED)
    def test_malformed_request_gets_its_4xx_and_the_server_serves_on(
        self, served: Served, raw: bytes, expected: int
    ) -> None:
        """A head too large (431), a body over the cap (413, without waiting for the body),
        chunked (411), a malformed line or length (400), another protocol (505): answered at
        once, then the next request is served."""
        status, headers, _ = served.request(raw)
        assert status == expected
        assert headers["connection"] == "close"
        assert served.get("/healthz")[0] == 200
        served.assert_nothing_escaped()

    def test_body_over_the_cap_is_refused_without_reading_it(self) -> None:
        """A Content-Length over max_body is 413 at once: the server does not wait for (nor
        read) the body it would refuse, though the read deadline is long."""
        with serving(max_body=1024, read_timeout=3600) as served:
            raw = b"POST /echo HTTP/1.1\r\nContent-Length: 1025\r\n\r\n"
            assert served.request(raw)[0] == 413
            ok = b"POST /echo HTTP/1.1\r\nContent-Length: 1024\r\n\r\n" + b"y" * 1024
            assert served.request(ok)[::2] == (200, b"y" * 1024)
            served.assert_nothing_escaped()

    @pytest.mark.parametrize(
        "length",
        [b"\xb2", b"\xb9\xb2\xb3", b"9" * 5000],
        ids=["superscript-two", "superscripts", "5000-digits"],
    )
    def test_content_length_that_int_refuses_is_400_or_413(
        self, served: Served, length: bytes
    ) -> None:
        """A Content-Length `isdigit` accepts but `int` does not is still answered (400/413)."""
        try:
            status, _, _ = served.request(
                b"POST /echo HTTP/1.1\r\nContent-Length: " + length + b"\r\n\r\n"
            )
        finally:
            assert served.get("/healthz")[0] == 200
        assert status in (400, 413)
        served.assert_nothing_escaped()

    @pytest.mark.parametrize(
        "target", [b"http://[", b"//[::1/metrics"], ids=["open-bracket", "authority"]
    )
    def test_target_urlsplit_refuses_is_400(self, served: Served, target: bytes) -> None:
        """A request target that is no URL is answered 400."""
        try:
            status, _, _ = served.request(b"GET " + target + b" HTTP/1.1\r\n\r\n")
        finally:
            assert served.get("/healthz")[0] == 200
        assert status == 400
        served.assert_nothing_escaped()


def garbage(rng: random.Random, index: int) -> bytes:
    """The `index`-th payload of a seeded corpus: random bytes, partial lines, absurd headers,
    binary protocols, truncated bodies, nonsense around a valid request."""
    junk = rng.randbytes(rng.randint(0, 2048))
    line = b"GET /metrics HTTP/1.1\r\n"
    kinds: list[Callable[[], bytes]] = [
        lambda: junk,
        lambda: junk + b"\r\n\r\n",
        lambda: junk.replace(b"\r\n\r\n", b"") + b" / HTTP/1.1\r\n\r\n",
        lambda: line[: rng.randint(0, len(line))],
        lambda: line + b"Host: x\r\n" * rng.randint(0, 5) + junk[:64],
        lambda: (
            line
            + b"".join(f"X-{i}: {i}\r\n".encode() for i in range(rng.randint(1, 3000)))
            + b"\r\n"
        ),
        lambda: line + b"X: " + b"\xff" * rng.randint(1, 70_000) + b"\r\n\r\n",
        lambda: (
            line
            + b"Content-Length: "
            + str(rng.randint(1, 10**6)).encode()
            + b"\r\n\r\n"
            + junk[: rng.randint(0, 10)]
        ),
        lambda: line + b"Content-Length: " + str(10 ** rng.randint(7, 300)).encode() + b"\r\n\r\n",
        lambda: line + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        lambda: (
            rng.choice([b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"PRI * HTTP/2.0"])
            + b"\r\n\r\nSM\r\n\r\n"
            + junk
        ),
        lambda: (
            rng.choice([b"GET", b"\x00", b"OPTIONS", b"get", b"PROPFIND", b"G\x7fT"])
            + b" "
            + rng.choice(
                [b"/", b"*", b"/%ff%fe", b"/%00", b"/" + b"a/" * 500, b"/healthz/../metrics"]
            )
            + b" HTTP/1."
            + rng.choice([b"0", b"1", b"9", b"1x"])
            + b"\r\n\r\n"
        ),
        lambda: b"\r\n" * rng.randint(1, 100),
        lambda: b"GET /healthz HTTP/1.1\r\n\r\n" + junk,  # a valid request, then junk
    ]
    return kinds[index % len(kinds)]()


def send_garbage(port: int, payload: bytes) -> bytes:
    """One connection: the payload, then end-of-input (so a partial head ends at once, not at the
    read deadline), then what the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)


class TestGarbage:
    def test_1000_garbage_payloads_leave_the_server_serving(self, served: Served) -> None:
        """1,000 seeded garbage payloads, each on its own connection: every answer is a complete
        HTTP/1.1 response (or a close), no exception escapes, and /healthz is 200 after."""
        rng = random.Random(20240601)
        payloads = [garbage(rng, i) for i in range(1000)]
        answered = 0
        for payload in payloads:
            data = send_garbage(served.port, payload)
            if data:
                status, _, _ = parse_response(data)
                assert 200 <= status <= 599, (payload[:100], data[:100])
                answered += 1
        assert answered > 0
        assert served.server._thread.is_alive()
        assert served.get("/healthz")[::2] == (200, b"ok\n")
        assert served.get("/metrics")[0] == 200
        served.assert_nothing_escaped()


# lifecycle -----------------------------------------------------------------------------------
class TestStop:
    def test_stop_returns_true_and_releases_the_port(self) -> None:
        """stop(deadline) returns True; the port refuses connections and can be bound again."""
        with serving() as served:
            port = served.port
            assert served.get("/healthz")[0] == 200
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE),
        ):
            pass
        again = bind("127.0.0.1", port)
        again.close()

    def test_stop_closes_held_connections(self) -> None:
        """Connections still sending their head when the server stops are closed, and stop
        returns True within its deadline."""
        with (
            serving(read_timeout=3600) as served,
            held_connections(served.port, 50, PARTIAL_HEAD) as sockets,
        ):
            wait_for(lambda: served.server.connections == 50, what="the 50 are accepted")
            assert served.server.stop(time.monotonic() + DEADLINE)
            wait_for(lambda: all(map(closed_by_server, sockets)), what="all 50 are closed")
