"""Log file formats to logical lines: plain, Docker json-file, CRI (kubelet, podman), auto-detect.

Pure and incremental: a decoder takes the bytes of a file as they arrive and returns complete
logical lines. `offset` is where a restart must resume (the end of the last physical line fully
consumed) and `state()` is what must be saved with it: the continuation chunks of a logical line
that has not ended yet (a Docker record without its `\\n`, CRI `P` chunks), per stream.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sidecar.lines import LineSplitter

Format = Literal["plain", "docker-json", "cri", "auto"]
FORMATS: tuple[Format, ...] = ("plain", "docker-json", "cri", "auto")


@dataclass(frozen=True, slots=True)
class LogicalLine:
    """One line as the program wrote it, with the stream it went to."""

    stream: str
    raw: bytes


class Decoder(Protocol):
    """Bytes of one file in, logical lines out; resumable from (offset, state)."""

    errors: int  # physical lines that are not valid records of the format (counted, skipped)

    @property
    def offset(self) -> int: ...

    @property
    def truncated(self) -> int: ...

    def feed(self, data: bytes) -> list[LogicalLine]: ...

    def finish(self) -> list[LogicalLine]: ...

    def feed_raw(self, data: bytes) -> list[bytes]: ...

    def finish_raw(self) -> list[bytes]: ...

    def state(self) -> dict[str, Any]: ...


class PlainDecoder:
    """Plain text: a logical line is a physical line."""

    name: Format = "plain"

    def __init__(self, max_line_bytes: int, *, offset: int = 0, stream: str = "stdout") -> None:
        self._split = LineSplitter(max_line_bytes, offset)
        self.stream = stream
        self.errors = 0

    @property
    def offset(self) -> int:
        return self._split.offset

    @property
    def truncated(self) -> int:
        return self._split.truncated

    def feed(self, data: bytes) -> list[LogicalLine]:
        stream = self.stream
        return [LogicalLine(stream, raw) for raw in self._split.feed(data)]

    def finish(self) -> list[LogicalLine]:
        return [LogicalLine(self.stream, raw) for raw in self._split.finish()]

    def feed_raw(self, data: bytes) -> list[bytes]:
        """`feed`'s lines as bytes only: no object per line."""
        return self._split.feed(data)

    def finish_raw(self) -> list[bytes]:
        return self._split.finish()

    def state(self) -> dict[str, Any]:
        return {}


class _Joiner:
    """Per-stream continuation buffers, bounded by `max_line_bytes`.

    A logical line that grows past the bound (CRI `P` chunks that never get their `F`) is cut
    there and handed on at once, counted; its further chunks are dropped until its end. So the
    pending state a restart needs never holds more than one bounded partial line per stream,
    however long the line goes on."""

    def __init__(
        self,
        max_line_bytes: int,
        pending: Mapping[str, str] | None = None,
        dropping: list[str] | None = None,
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.truncated = 0
        self._parts: dict[str, bytes] = {
            stream: base64.b64decode(text) for stream, text in (pending or {}).items()
        }
        self._dropping: set[str] = set(dropping or ())

    def add(
        self, stream: str, chunk: bytes, *, final: bool, counted: bool = False
    ) -> LogicalLine | None:
        """`counted`: the record was already cut (and counted) as a physical line."""
        if stream in self._dropping:  # the rest of a line already cut and handed on
            if final:
                self._dropping.discard(stream)
            return None
        joined = self._parts.pop(stream, b"") + chunk
        if len(joined) > self.max_line_bytes:
            if not counted:
                self.truncated += 1
            if not final:
                self._dropping.add(stream)
            return LogicalLine(stream, joined[: self.max_line_bytes])
        if not final:
            self._parts[stream] = joined
            return None
        return LogicalLine(stream, joined)

    def flush(self) -> list[LogicalLine]:
        out = [LogicalLine(s, b) for s, b in self._parts.items()]
        self._parts.clear()
        self._dropping.clear()
        return out

    def state(self) -> dict[str, Any]:
        """`pending` partial lines (base64) and the streams whose line is being dropped."""
        doc: dict[str, Any] = {}
        if self._parts:
            doc["pending"] = {
                s: base64.b64encode(b).decode("ascii") for s, b in self._parts.items()
            }
        if self._dropping:
            doc["dropping"] = sorted(self._dropping)
        return doc


class _RecordDecoder:
    """What the Docker and CRI decoders share: records split on newlines, each turned into (part of)
    a logical line by `_record`, partial lines joined per stream and kept in `state`."""

    _split: LineSplitter
    _join: _Joiner
    errors: int

    @property
    def offset(self) -> int:
        return self._split.offset

    @property
    def truncated(self) -> int:
        return self._split.truncated + self._join.truncated

    def feed(self, data: bytes) -> list[LogicalLine]:
        out: list[LogicalLine] = []
        for record in self._split.feed(data):
            self._record(record, out)
        return out

    def _record(self, record: bytes, out: list[LogicalLine]) -> None:
        raise NotImplementedError

    def finish(self) -> list[LogicalLine]:
        out: list[LogicalLine] = []
        for record in self._split.finish():
            self._record(record, out)
        return out + self._join.flush()

    def feed_raw(self, data: bytes) -> list[bytes]:
        return [line.raw for line in self.feed(data)]

    def finish_raw(self) -> list[bytes]:
        return [line.raw for line in self.finish()]

    def state(self) -> dict[str, Any]:
        return self._join.state()


class DockerJsonDecoder(_RecordDecoder):
    """Docker's json-file driver: `{"log": "...\\n", "stream": "stdout", "time": "..."}` per line.

    A record whose `log` lacks the final `\\n` (Docker splits lines at 16 KiB) continues in the
    stream's next record.
    """

    name: Format = "docker-json"

    def __init__(
        self, max_line_bytes: int, *, offset: int = 0, state: Mapping[str, Any] | None = None
    ) -> None:
        # a record carries JSON escapes and metadata besides the text: allow it some room
        self._split = LineSplitter(max_line_bytes * 2 + 4096, offset)
        self._join = _Joiner(
            max_line_bytes, (state or {}).get("pending"), (state or {}).get("dropping")
        )
        self.errors = 0

    def _record(self, record: bytes, out: list[LogicalLine]) -> None:
        if not record.strip():
            return
        try:
            doc = json.loads(record)
            text = doc["log"]
            stream = str(doc.get("stream", "stdout"))
        except (ValueError, KeyError, TypeError):
            self.errors += 1
            return
        if not isinstance(text, str):
            self.errors += 1
            return
        chunk = text.encode("utf-8", "surrogatepass")
        final = chunk.endswith(b"\n")
        line = self._join.add(stream, chunk[:-1] if final else chunk, final=final)
        if line is not None:
            out.append(line)


class CriDecoder(_RecordDecoder):
    """The CRI log format (kubelet, CRI-O, podman's k8s-file): `<time> <stream> <P|F> <text>`.

    `P` chunks of a stream are joined until its `F` chunk. Timestamps may end in `Z` or carry a
    numeric offset (`2024-01-02T03:04:05.123456789+00:00`, as podman's conmon writes them); they are
    not used. A line without the tag field (older CRI-O) counts as a full line.
    """

    name: Format = "cri"

    def __init__(
        self, max_line_bytes: int, *, offset: int = 0, state: Mapping[str, Any] | None = None
    ) -> None:
        self._split = LineSplitter(max_line_bytes + 256, offset)
        self._join = _Joiner(
            max_line_bytes, (state or {}).get("pending"), (state or {}).get("dropping")
        )
        self.errors = 0

    def _record(self, record: bytes, out: list[LogicalLine]) -> None:
        parts = record.split(b" ", 3)
        if len(parts) < 3 or not parts[0][:4].isdigit() or parts[1] not in (b"stdout", b"stderr"):
            if record.strip():
                self.errors += 1
            return
        stream = parts[1].decode("ascii")
        if parts[2] in (b"P", b"F") or (parts[2][:1] in (b"P", b"F") and b":" in parts[2]):
            final = parts[2][:1] == b"F"
            text = parts[3] if len(parts) > 3 else b""
        else:  # no tag field: the rest is the text of a full line
            final = True
            text = record.split(b" ", 2)[2]
        cut = len(record) >= self._split.max_line_bytes  # the splitter cut and counted it
        line = self._join.add(stream, text, final=final, counted=cut)
        if line is not None:
            out.append(line)


def detect_format(head: bytes) -> Format:
    """Guess a file's format from its first complete line."""
    line = head.split(b"\n", 1)[0].strip()
    if line.startswith(b"{") and b'"log"' in line:
        try:
            doc = json.loads(line)
        except ValueError:
            return "plain"
        if isinstance(doc, dict) and isinstance(doc.get("log"), str):
            return "docker-json"
    parts = line.split(b" ", 3)
    if (
        len(parts) >= 3
        and parts[1] in (b"stdout", b"stderr")
        and len(parts[0]) >= 19
        and parts[0][:4].isdigit()
        and parts[0][4:5] == b"-"
        and b"T" in parts[0]
    ):
        return "cri"
    return "plain"


def make_decoder(
    fmt: Format,
    max_line_bytes: int,
    *,
    offset: int = 0,
    state: Mapping[str, Any] | None = None,
) -> PlainDecoder | DockerJsonDecoder | CriDecoder:
    """A decoder for a concrete format (`auto` must be resolved with `detect_format` first)."""
    if fmt == "docker-json":
        return DockerJsonDecoder(max_line_bytes, offset=offset, state=state)
    if fmt == "cri":
        return CriDecoder(max_line_bytes, offset=offset, state=state)
    return PlainDecoder(max_line_bytes, offset=offset)
