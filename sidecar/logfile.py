"""Whole log files to parse units: the offline reader behind `replay` and `check`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.decode import LineSplitter, decode_line
from sidecar.errors import InputError
from sidecar.model import ParseCounts, Sample
from sidecar.parse import Extractor, JobParser

CHUNK = 1 << 20


@dataclass(slots=True)
class FileStats:
    """What reading one file counted."""

    lines: int = 0
    truncated: int = 0
    counts: ParseCounts = field(default_factory=ParseCounts)


def read_lines(path: Path, *, max_line_bytes: int, stats: FileStats) -> Iterator[bytes]:
    """Every line of a file as raw bytes, the last one even without its newline."""
    splitter = LineSplitter(max_line_bytes)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    with handle:
        while chunk := handle.read(CHUNK):
            lines = splitter.feed(chunk)
            stats.lines += len(lines)
            yield from lines
        tail = splitter.finish()
        stats.lines += len(tail)
        yield from tail
    stats.truncated = splitter.truncated


def samples_by_line(
    path: Path, extractor: Extractor, parser: JobParser, *, max_line_bytes: int, stats: FileStats
) -> Iterator[list[Sample]]:
    """The samples of each line that yields any, in file order."""
    gate = extractor.might_match
    counts = stats.counts
    feed = parser.feed
    for raw in read_lines(path, max_line_bytes=max_line_bytes, stats=stats):
        if not gate(raw):
            continue
        samples = feed(decode_line(raw), counts)
        if samples:
            yield samples
