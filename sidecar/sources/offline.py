"""Whole log files to lines: the offline reader behind `replay` and `check`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.errors import InputError
from sidecar.formats import Format, detect_format, make_decoder
from sidecar.model import ParseCounts, Sample
from sidecar.parse import Extractor, JobParser

CHUNK = 1 << 20


@dataclass(slots=True)
class FileStats:
    """What reading one file counted."""

    lines: int = 0
    truncated: int = 0
    bad_records: int = 0
    format: str = ""
    counts: ParseCounts = field(default_factory=ParseCounts)


def read_lines(
    path: Path, *, max_line_bytes: int, stats: FileStats, fmt: Format = "auto"
) -> Iterator[bytes]:
    """Every logical line of a file as raw bytes (both streams), the last one even without `\\n`."""
    for lines in read_batches(path, max_line_bytes=max_line_bytes, stats=stats, fmt=fmt):
        yield from lines


def read_batches(
    path: Path, *, max_line_bytes: int, stats: FileStats, fmt: Format = "auto"
) -> Iterator[list[bytes]]:
    """`read_lines` a chunk's worth at a time."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    with handle:
        first = handle.read(CHUNK)
        if fmt == "auto":
            fmt = detect_format(first)
        stats.format = fmt
        decoder = make_decoder(fmt, max_line_bytes)
        chunk = first
        while chunk:
            lines = decoder.feed_raw(chunk)
            stats.lines += len(lines)
            yield lines
            chunk = handle.read(CHUNK)
        lines = decoder.finish_raw()
        stats.lines += len(lines)
        yield lines
    stats.truncated = decoder.truncated
    stats.bad_records = decoder.errors


def samples_by_line(
    path: Path,
    extractor: Extractor,
    parser: JobParser,
    *,
    max_line_bytes: int,
    stats: FileStats,
    fmt: Format = "auto",
) -> Iterator[list[Sample]]:
    """The samples of each line that yields any, in file order."""
    counts = stats.counts
    feed_lines = parser.feed_lines
    for lines in read_batches(path, max_line_bytes=max_line_bytes, stats=stats, fmt=fmt):
        found, _parsed = feed_lines(lines, counts)
        for _line, samples in found:
            yield samples
