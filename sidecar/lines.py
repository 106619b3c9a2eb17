"""Bytes to lines: splitting on newlines, size limits, and terminal clean-up (\\r, ANSI, backspace)."""

from __future__ import annotations

import re

# CSI sequences (colours, cursor moves, erase), OSC strings (titles, hyperlinks), charset
# designations (`ESC ( B`, which `tput sgr0` emits) and two-byte escapes (`ESC 7`, `ESC =`): what
# Keras, tqdm and
# and transformers write into logs that are not a terminal.
_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -/]+[0-~]|[0-~])")


class LineSplitter:
    """Splits a byte stream into complete lines; keeps the incomplete tail for the next feed.

    `offset` is the stream position just past the last complete line returned, the value a tailer
    commits. A line longer than `max_line_bytes` is cut to that size and counted in `truncated`;
    the bytes past the cut are never buffered, so one endless line cannot exhaust memory.
    """

    def __init__(self, max_line_bytes: int, offset: int = 0) -> None:
        self.max_line_bytes = max_line_bytes
        self.offset = offset
        self.truncated = 0
        self._partial = b""
        self._partial_len = 0  # bytes of the incomplete line seen so far, including dropped ones
        self._dropping = False

    @property
    def pending(self) -> int:
        """Bytes of an incomplete last line held back (waiting for its end)."""
        return self._partial_len

    def feed(self, data: bytes) -> list[bytes]:
        """Complete lines in `data` (without their `\\n`), continuing any earlier partial line."""
        if not data:
            return []
        lines = data.split(b"\n")
        tail = lines.pop()
        limit = self.max_line_bytes
        if lines:
            first = self._partial + lines[0] if self._partial_len else lines[0]
            if self._dropping or len(first) > limit:
                self.truncated += 1
                first = first[:limit]
            lines[0] = first
            self.offset += self._partial_len + len(data) - len(tail)
            self._partial, self._partial_len, self._dropping = b"", 0, False
            if len(lines) > 1 and max(map(len, lines)) > limit:
                for i in range(1, len(lines)):
                    if len(lines[i]) > limit:
                        lines[i] = lines[i][:limit]
                        self.truncated += 1
        if tail:
            self._partial_len += len(tail)
            if not self._dropping:
                self._partial += tail
                if len(self._partial) > limit:
                    self._partial = self._partial[:limit]
                    self._dropping = True
        return lines

    def finish(self) -> list[bytes]:
        """At a stream's true end, the incomplete last line counts as a line."""
        if not self._partial_len:
            return []
        line = self._partial
        if self._dropping:
            self.truncated += 1
        self.offset += self._partial_len
        self._partial, self._partial_len, self._dropping = b"", 0, False
        return [line]


def decode_line(raw: bytes) -> list[str]:
    """A raw line as a terminal would show it, split into its `\\r` redraw segments.

    The last segment is what a terminal shows (and what most definitions match). ANSI escape
    sequences are removed, a backspace erases the character before it, invalid UTF-8 becomes
    U+FFFD; nothing here raises.
    """
    raw = raw.rstrip(b"\r")
    if b"\x1b" in raw:
        raw = _ANSI.sub(b"", raw)
    text = raw.decode("utf-8", "replace")
    segments = ([s for s in text.split("\r") if s] or [""]) if "\r" in text else [text]
    if "\b" in text:
        segments = [apply_backspaces(s) for s in segments]
    return segments


def apply_backspaces(text: str) -> str:
    """Each backspace erases the character before it (and nothing at the start of the text)."""
    out: list[str] = []
    for ch in text:
        if ch == "\b":
            if out:
                out.pop()
        else:
            out.append(ch)
    return "".join(out)
