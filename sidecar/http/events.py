"""Live events for `GET /api/v1/events` (Server-Sent Events): published from the deciding thread,
delivered on the server's event loop through one bounded queue per client.

Publishing never blocks and never waits for a client: an event is handed to the loop with
`call_soon_threadsafe`, and a client whose queue is full (it stopped reading) is dropped, its
stream ended. The deciding thread pays one dictionary copy per event and nothing per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from sidecar.model import json_safe

CLIENT_QUEUE = 1000  # events held for one client; past this it is too slow and is dropped
HEARTBEAT_SECONDS = 15.0  # a comment line this often: proxies keep the stream, dead peers show
RETRY_MILLISECONDS = 2000  # how soon a browser's EventSource reconnects after the daemon restarts
MAX_CLIENTS = 64

_DROP = object()


class EventHub:
    """The subscribers and the loop that serves them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: set[asyncio.Queue[object]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0  # clients dropped for not reading

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """From any thread: `event: kind`, `data: <json>` to every client."""
        with self._lock:
            loop, clients = self._loop, list(self._clients)
        if loop is None or not clients:
            return
        frame = f"event: {kind}\ndata: {json.dumps(json_safe(data), separators=(',', ':'))}\n\n"
        with contextlib.suppress(RuntimeError):  # the loop has closed: the server is stopping
            loop.call_soon_threadsafe(self._deliver, clients, frame.encode())

    def _deliver(self, clients: list[asyncio.Queue[object]], frame: bytes) -> None:
        for q in clients:
            try:
                q.put_nowait(frame)
            except asyncio.QueueFull:
                self._remove(q)
                self.dropped += 1
                q.get_nowait()  # make room for the marker that ends its stream
                q.put_nowait(_DROP)

    def _remove(self, q: asyncio.Queue[object]) -> None:
        with self._lock:
            self._clients.discard(q)

    def full(self) -> bool:
        with self._lock:
            return len(self._clients) >= MAX_CLIENTS

    async def stream(self) -> AsyncIterator[bytes]:
        """One client's stream: the retry hint, then events and heartbeats until it is dropped
        or goes away."""
        q: asyncio.Queue[object] = asyncio.Queue(CLIENT_QUEUE)
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._clients.add(q)
        try:
            yield f"retry: {RETRY_MILLISECONDS}\n: connected\n\n".encode()
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if item is _DROP:
                    return
                assert isinstance(item, bytes)
                yield item
        finally:
            self._remove(q)
