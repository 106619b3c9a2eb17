"""Lines to samples: compiled metric definitions, epochs, and the per-job parse state."""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import regex

from sidecar.definitions import EpochConfig, MetricDefinition, template_fields
from sidecar.lines import decode_line
from sidecar.model import ParseCounts, Sample
from sidecar.prefilter import chunk_safe, required_literal

TAB011 = "#011"
# epochs above this are not epochs (`epoch=99999999999999999999`, JSON `1e300`): a parse error
# (`bad_epoch`), never a value a store could not hold
MAX_EPOCH = 1_000_000_000


@dataclass(frozen=True, slots=True)
class CompiledDefinition:
    """A metric definition compiled once: pattern, groups, and the literal that gates it."""

    name: str
    fields: tuple[str, ...]  # placeholders of a templated name; empty for a plain name
    pattern: regex.Pattern[str]
    value_group: str | int
    epoch_group: str | None
    literal: str | None  # every match contains it: absent means the regex cannot match
    tab011: bool  # match against the line with tabs shown as `#011` (AWS's built-in definitions)
    all_segments: bool
    ambiguous: bool  # several unnamed groups and no `value` group: the first one is used

    @classmethod
    def compile(cls, definition: MetricDefinition) -> CompiledDefinition:
        if definition.regex is None:
            raise ValueError(f"definition {definition.name!r} is kind {definition.kind}, not regex")
        pattern = regex.compile(definition.regex)
        named = pattern.groupindex
        fields = tuple(template_fields(definition.name))
        unnamed = [i for i in range(1, pattern.groups + 1) if i not in named.values()]
        value_group: str | int = "value" if "value" in named else unnamed[0]
        literal = required_literal(definition.regex)
        tab011 = TAB011 in definition.regex
        return cls(
            name=definition.name,
            fields=fields,
            pattern=pattern,
            value_group=value_group,
            epoch_group="epoch" if "epoch" in named else None,
            literal=literal or None,
            tab011=tab011,
            all_segments=definition.segments == "all",
            ambiguous="value" not in named and len(unnamed) > 1,
        )

    def byte_literal(self) -> bytes | None:
        """A literal to look for in the raw bytes; for `#011` definitions, a piece without `#011`."""
        if self.literal is None:
            return None
        if self.tab011:
            piece = max(self.literal.split(TAB011), key=len)
            return piece.encode() if piece else None
        return self.literal.encode()


@dataclass(frozen=True, slots=True)
class BlockScans:
    """The definitions' patterns (in definition order) and the epoch pattern, compiled
    MULTILINE to search a block of lines at once (`JobParser.feed_lines`)."""

    patterns: tuple[regex.Pattern[str], ...]
    epoch: regex.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class JsonDefinition:
    """A `kind: jsonl` definition: the numbers of a line that is a JSON object.

    `Name: '{key}'` names a metric after each numeric key (nested keys joined by `.`); a plain
    Name takes only the value at that (dotted) key.
    """

    name: str
    templated: bool

    @classmethod
    def compile(cls, definition: MetricDefinition) -> JsonDefinition:
        return cls(name=definition.name, templated=bool(template_fields(definition.name)))

    def metrics(self, numbers: Mapping[str, float]) -> Iterable[tuple[str, float]]:
        """(metric name, value) for the numbers of one object (`numbers`: dotted key -> value)."""
        if not self.templated:
            value = numbers.get(self.name)
            return () if value is None else ((self.name, value),)
        if self.name == "{key}":
            return numbers.items()
        return ((self.name.format_map({"key": key}), v) for key, v in numbers.items())


# Top-level keys of a JSON line that give its epoch, in order of preference; never metrics.
JSON_EPOCH_KEYS = ("epoch", "step")


def json_object(text: str) -> dict[str, Any] | None:
    """`text` as a JSON object (NaN and Infinity accepted), or None when it is not one."""
    if text[:1] != "{" and not text.lstrip().startswith("{"):
        return None  # the cheap test first: most lines of a log are not JSON objects
    stripped = text.strip()
    if not stripped.endswith("}"):
        return None
    try:
        parsed = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def json_numbers(obj: Mapping[str, Any]) -> tuple[dict[str, float], int]:
    """Every number (int or float, not bool) of a JSON object by its dotted key, in document
    order, skipping the top-level epoch keys; and how many numbers were too large for a float."""
    numbers: dict[str, float] = {}
    too_large = 0

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        nonlocal too_large
        for key, value in node.items():
            if isinstance(value, float):
                numbers[prefix + key] = value
            elif isinstance(value, int) and not isinstance(value, bool):
                try:
                    numbers[prefix + key] = float(value)
                except OverflowError:
                    too_large += 1
            elif isinstance(value, dict):
                walk(f"{prefix}{key}.", value)

    walk("", {k: v for k, v in obj.items() if k not in JSON_EPOCH_KEYS})
    return numbers, too_large


def json_epoch(obj: Mapping[str, Any]) -> tuple[bool, int | None]:
    """The epoch a JSON object states (`epoch`, else `step`): (True, epoch or None when it states
    none), or (False, None) when the stated one is not a whole number."""
    for key in JSON_EPOCH_KEYS:
        if key in obj:
            raw = obj[key]
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                return False, None
            if isinstance(raw, float) and (not math.isfinite(raw) or raw != int(raw)):
                return False, None
            return True, int(raw)
    return True, None


def parse_number(text: str) -> float | None:
    """A float in Python's syntax (nan/inf in any case), also as bars print them (`nan.0`)."""
    try:
        return float(text)
    except ValueError:
        pass
    stripped = text.strip().lower().rstrip("0").rstrip(".")
    if stripped.lstrip("+-") in ("nan", "inf", "infinity"):
        return float(stripped)
    return None


def parse_epoch(text: str) -> int | None:
    """An epoch number: an integer, or a float with no fractional part (`3`, `3.0`)."""
    number = parse_number(text)
    if number is None or not math.isfinite(number) or number != int(number):
        return None
    return int(number)


class _Joined:
    """Lines joined by newlines, with where each starts: to find which lines hold a needle with
    one substring search over them all instead of a Python call per line."""

    __slots__ = ("blob", "starts")

    def __init__(self, lines: Sequence[bytes]) -> None:
        self.blob = b"\n".join(lines)
        self.starts = [0]
        self.starts += accumulate(map((1).__add__, map(len, lines)))  # line i: blob[starts[i]:]

    def holding(self, needles: Sequence[bytes]) -> list[int]:
        """The indexes of the lines that contain any of `needles`, in order."""
        hits: set[int] = set()
        find, starts = self.blob.find, self.starts
        for needle in needles:
            pos = find(needle)
            while pos != -1:
                i = bisect_right(starts, pos) - 1
                hits.add(i)
                pos = find(needle, starts[i + 1])  # this line holds it: go on from the next one
        return sorted(hits)


# A block scan's findings, one tuple per (line, what): (line index, order, metric name, value
# text, epoch text); ordered by line, then by `order`: the epoch regex, each definition in turn
# (its matches in line order), the JSON definitions; a line needing terminal decoding is fed alone.
_ALONE, _EPOCH = -2, -1
Found = tuple[int, int, str, str | None, str | None]
# blocks shorter than this go line by line: the block scan's set-up costs more than it saves
MIN_BLOCK_LINES = 8


def _scan(
    pattern: regex.Pattern[str],
    subject: str,
    index: Sequence[int] | None,
    out: list[Found],
    *,
    order: int,
    definition: CompiledDefinition | None,
    epoch_group: str | int,
    timeout: float,
) -> bool:
    """Append what `pattern` finds in `subject` (lines joined by newlines; line k of it is line
    `index[k]` of the block, or k without `index`) to `out`: the first match of each line, or
    every match for a templated definition. False when the scan cannot stand for line-by-line
    searches: a match holds a newline, or the regex timed out."""
    line = pos = 0
    last = -1
    count, find, append = subject.count, subject.find, out.append
    every = definition is not None and bool(definition.fields)
    value_group = definition.value_group if definition is not None else epoch_group
    epoch_of = definition.epoch_group if definition is not None else None
    try:
        for match in pattern.finditer(subject, timeout=timeout):
            start, end = match.span()
            line += count("\n", pos, start)
            pos = start
            if line == last and not every:
                continue  # a line's search stops at its first match, whatever it holds
            if find("\n", start, end) != -1:
                return False
            last = line
            at = line if index is None else index[line]
            if definition is None:
                append((at, order, "", match.group(value_group), None))
                continue
            value = match.group(value_group)
            if value is None:
                continue
            name = definition.name
            if every:
                groups = {f: match.group(f) for f in definition.fields}
                if any(v is None for v in groups.values()):
                    continue
                name = name.format_map(groups)
            append((at, order, name, value, match.group(epoch_of) if epoch_of else None))
    except TimeoutError:
        return False
    return True


class Extractor:
    """The compiled definitions and epoch settings of one config; immutable and shared by jobs."""

    def __init__(
        self,
        definitions: Sequence[MetricDefinition],
        epoch: EpochConfig,
        *,
        timeout: float,
        max_metrics: int | None = None,
        keep: frozenset[str] = frozenset(),
    ) -> None:
        # a job's distinct metric names are bounded (a `{key}` definition over JSON lines with
        # ever new keys must not grow the store and /metrics without end); `keep` are always taken
        self.max_metrics = max_metrics
        self.keep = keep
        self.definitions = tuple(
            CompiledDefinition.compile(d) for d in definitions if d.kind == "regex"
        )
        self.json_definitions = tuple(
            JsonDefinition.compile(d) for d in definitions if d.kind == "jsonl"
        )
        self.timeout = timeout
        self.epoch_offset = epoch.offset
        self.epoch_pattern = regex.compile(epoch.regex) if epoch.regex else None
        self.epoch_literal = required_literal(epoch.regex) if epoch.regex else None
        self.epoch_group: str | int = 1
        if self.epoch_pattern is not None and "epoch" in self.epoch_pattern.groupindex:
            self.epoch_group = "epoch"
        self._last = tuple(d for d in self.definitions if not d.all_segments)
        self.templated = any(d.fields for d in self._last)
        self._all = tuple(d for d in self.definitions if d.all_segments)
        self._gates = self._byte_gates()
        self._block = self._block_scans()

    def _block_scans(self) -> BlockScans | None:
        """The patterns that scan a block of lines at once, or None when some definition needs
        each line on its own (redrawn bars, a pattern that could see past a line's end)."""
        if self._all:
            return None
        patterns = []
        for d in self._last:
            if not chunk_safe(d.pattern.pattern):
                return None
            patterns.append(regex.compile(d.pattern.pattern, regex.MULTILINE))
        epoch = None
        if self.epoch_pattern is not None:
            if not chunk_safe(self.epoch_pattern.pattern):
                return None
            epoch = regex.compile(self.epoch_pattern.pattern, regex.MULTILINE)
        return BlockScans(tuple(patterns), epoch)

    def any_candidate(self, lines: Sequence[bytes]) -> bool:
        """True when some line of `lines` might match (`might_match`), tested on them at once."""
        gates = self._gates
        if not lines:
            return False
        if gates is None:
            return True
        blob = b"\n".join(lines)
        return any(g in blob for g in (*gates, b"\x1b", b"\x08"))

    def _byte_gates(self) -> tuple[bytes, ...] | None:
        """Literals of which a raw line must contain one to be worth decoding; None: no gate."""
        gates: list[bytes] = [b"{"] if self.json_definitions else []
        for d in self.definitions:
            literal = d.byte_literal()
            if literal is None:
                return None
            gates.append(literal)
        if self.epoch_pattern is not None:
            if not self.epoch_literal:
                return None
            gates.append(self.epoch_literal.encode())
        return tuple(dict.fromkeys(gates))

    def might_match(self, raw: bytes) -> bool:
        """False only when no definition and no epoch regex can match this raw line.

        Escape sequences and backspaces can join text, so such lines always pass the gate.
        """
        gates = self._gates
        if gates is None:
            return True
        for gate in gates:
            if gate in raw:
                return True
        return b"\x1b" in raw or b"\x08" in raw

    def candidates(self, lines: Sequence[bytes]) -> list[int]:
        """The indexes of the lines that `might_match`, in order, found with one substring search
        per gate over the whole batch instead of a Python call per line: most lines of a log are
        skipped without Python ever looking at them."""
        gates = self._gates
        if gates is None:
            return list(range(len(lines)))
        if len(lines) < 16:
            return [i for i, raw in enumerate(lines) if self.might_match(raw)]
        return _Joined(lines).holding((*gates, b"\x1b", b"\x08"))

    def job_parser(
        self,
        *,
        counts: Mapping[str, int] | None = None,
        last_epoch: int | None = None,
        held: Sequence[Sequence[object]] = (),
    ) -> JobParser:
        """Parse state for one job; `counts`, `last_epoch` and `held` (from `JobParser.held`)
        resume it after a restart."""
        parser = JobParser(self, dict(counts or {}), last_epoch)
        for item in held:
            if len(item) == 3 and isinstance(item[0], str) and isinstance(item[2], str):
                epoch = item[1]
                parser._pending[(item[0], epoch if isinstance(epoch, int) else None)] = item[2]
        return parser

    def search_epoch(self, text: str, counts: ParseCounts) -> int | None:
        """The epoch the epoch regex finds in `text` (offset applied), or None."""
        pattern = self.epoch_pattern
        if pattern is None or (self.epoch_literal and self.epoch_literal not in text):
            return None
        try:
            match = pattern.search(text, timeout=self.timeout)
        except TimeoutError:
            counts.timeout("epoch")
            return None
        if match is None:
            return None
        captured = match.group(self.epoch_group)
        epoch = parse_epoch(captured) if captured is not None else None
        if epoch is None:
            counts.error("bad_epoch")
            return None
        return epoch + self.epoch_offset

    def matches(
        self, definition: CompiledDefinition, text: str, counts: ParseCounts
    ) -> Iterable[tuple[str, str, int | None]]:
        """(metric name, value text, epoch or None) for each match of one definition in `text`."""
        if definition.tab011 and "\t" in text:
            text = text.replace("\t", TAB011)
        if definition.literal is not None and definition.literal not in text:
            return ()
        pattern = definition.pattern
        try:
            if not definition.fields:
                match = pattern.search(text, timeout=self.timeout)
                found = [match] if match is not None else []
            else:
                found = list(pattern.finditer(text, timeout=self.timeout))
        except TimeoutError:
            counts.timeout(definition.name)
            return ()
        out: list[tuple[str, str, int | None]] = []
        for match in found:
            value_text = match.group(definition.value_group)
            if value_text is None:
                continue
            name = definition.name
            if definition.fields:
                groups = {f: match.group(f) for f in definition.fields}
                if any(v is None for v in groups.values()):
                    continue
                name = name.format_map(groups)
            epoch: int | None = None
            if definition.epoch_group is not None:
                epoch_text = match.group(definition.epoch_group)
                if epoch_text is not None:
                    parsed = parse_epoch(epoch_text)
                    if parsed is None:
                        counts.error("bad_epoch")
                        continue
                    epoch = parsed + self.epoch_offset
            out.append((name, value_text, epoch))
        return out


def _line_then_order(found: Found) -> tuple[int, int]:
    return found[0], found[1]


class JobParser:
    """One job's parse state: the last epoch seen, each metric's value count (ordinal epochs), and
    the values of redrawn bars (`segments: all`) that have not settled yet."""

    def __init__(
        self, extractor: Extractor, counts: dict[str, int], last_epoch: int | None
    ) -> None:
        self.extractor = extractor
        self.value_counts = counts
        self.last_epoch = last_epoch
        # (metric, epoch or None) -> value text: the newest redraw's value, not yet settled
        self._pending: dict[tuple[str, int | None], str] = {}

    def feed(self, segments: Sequence[str], counts: ParseCounts) -> list[Sample]:
        """Samples from one decoded line (its `\\r` segments, the last being what a terminal shows).

        A `segments: all` value is held until a later segment or line shows another epoch (a
        newer one for the same epoch replaces it) or `finish` is called at the end of the log: a
        bar can show an epoch's label with stale values and the right ones only on a later line.
        A value with no epoch at all settles at the end of its line.
        """
        ex = self.extractor
        samples: list[Sample] = []
        text = segments[-1]
        if ex._all:
            pending = self._pending
            for segment in segments:
                epoch = ex.search_epoch(segment, counts)
                if epoch is not None:
                    self.last_epoch = epoch
                    if pending:
                        self._settle(samples, counts, keep=epoch)
                for definition in ex._all:
                    for name, value_text, own_epoch in ex.matches(definition, segment, counts):
                        if own_epoch is not None and pending:
                            self._settle(samples, counts, keep=own_epoch)
                        key = (name, own_epoch if own_epoch is not None else self.last_epoch)
                        pending.pop(key, None)  # a newer segment for the same epoch replaces it
                        pending[key] = value_text
            if pending:
                self._settle(samples, counts, keep=None, only_epochless=True)
        else:
            epoch = ex.search_epoch(text, counts)
            if epoch is not None:
                self.last_epoch = epoch
        for definition in ex._last:
            for name, value_text, own_epoch in ex.matches(definition, text, counts):
                epoch = own_epoch if own_epoch is not None else self.last_epoch
                self._emit(samples, name, value_text, epoch, counts)
        if ex.json_definitions:
            self._feed_json(samples, text, counts)
        return samples

    def feed_lines(
        self, lines: Sequence[bytes], counts: ParseCounts, *, timeouts: int | None = None
    ) -> tuple[list[tuple[int, list[Sample]]], int]:
        """The samples of each line of `lines` (raw, without `\\n`) that yields any, as (index,
        samples) in order, and how many lines were parsed: all of them, unless regex timeouts
        reached `timeouts` in all (the rest is to be fed later).

        The same samples and counts as `feed(decode_line(raw))` for each line in turn; found by
        one search per pattern over the whole block where that is exact (docs/design.md,
        "Parsing a chunk at once"), else line by line.
        """
        found = self._scan_block(lines)
        if found is None:
            return self._feed_each(lines, counts, timeouts)
        ex = self.extractor
        json_order = len(ex._last)
        out: list[tuple[int, list[Sample]]] = []
        i, n = 0, len(found)
        while i < n:
            line = found[i][0]
            samples: list[Sample] = []
            alone = False
            while i < n and found[i][0] == line:
                _, order, name, value, epoch_text = found[i]
                i += 1
                if order == _ALONE:
                    alone = True
                    samples.extend(self.feed(decode_line(lines[line]), counts))
                elif order == _EPOCH:
                    epoch = parse_epoch(value) if value is not None else None
                    if epoch is None:
                        counts.error("bad_epoch")
                    else:
                        self.last_epoch = epoch + ex.epoch_offset
                elif order == json_order:
                    self._feed_json(samples, lines[line].decode(), counts)
                elif value is not None:
                    at = self.last_epoch
                    if epoch_text is not None:
                        parsed = parse_epoch(epoch_text)
                        if parsed is None:
                            counts.error("bad_epoch")
                            continue
                        at = parsed + ex.epoch_offset
                    self._emit(samples, name, value, at, counts)
            if samples:
                out.append((line, samples))
            if (
                alone
                and timeouts is not None
                and sum(counts.timeouts.values()) >= timeouts
                and line + 1 < len(lines)
            ):
                return out, line + 1
        return out, len(lines)

    def _feed_each(
        self, lines: Sequence[bytes], counts: ParseCounts, timeouts: int | None
    ) -> tuple[list[tuple[int, list[Sample]]], int]:
        """`feed_lines` one candidate line at a time."""
        out: list[tuple[int, list[Sample]]] = []
        feed = self.feed
        for i in self.extractor.candidates(lines):
            samples = feed(decode_line(lines[i]), counts)
            if samples:
                out.append((i, samples))
            if (
                timeouts is not None
                and sum(counts.timeouts.values()) >= timeouts
                and i + 1 < len(lines)
            ):
                return out, i + 1
        return out, len(lines)

    def _scan_block(self, lines: Sequence[bytes]) -> list[Found] | None:
        """What the block scans find in `lines`, sorted by line; None when the block must go
        line by line (too short, not UTF-8, a pattern that cannot scan blocks, a match across
        lines, a timeout).

        A pattern with a required literal scans only the lines holding it (found by one
        substring search), joined: the regex engine never walks the rest of the block."""
        ex = self.extractor
        scans = ex._block
        if scans is None or len(lines) < MIN_BLOCK_LINES:
            return None
        joined = _Joined(lines)
        found: list[Found] = []
        alone: list[int] = []
        if b"\r" in joined.blob or b"\x1b" in joined.blob or b"\x08" in joined.blob:
            # lines a terminal would redraw or colour: blanked here, fed alone in their turn
            alone = joined.holding((b"\r", b"\x1b", b"\x08"))
            blanked = list(lines)
            for i in alone:
                blanked[i] = b""
            lines = blanked
            joined = _Joined(lines)
            found.extend((i, _ALONE, "", None, None) for i in alone)
        whole: list[str] = []  # the block decoded, once, for patterns without a literal

        def subject(literal: bytes | None, tab011: bool) -> tuple[str, list[int] | None] | None:
            if literal is not None:
                index: list[int] | None = joined.holding((literal,))
                if not index:
                    return "", index
                raw = b"\n".join([lines[i] for i in index])
            else:
                index, raw = None, joined.blob
            if index is None and whole:
                text = whole[0]
            else:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    return None  # decoding each line alone (U+FFFD) is the exact answer
                if index is None:
                    whole.append(text)
            if tab011 and "\t" in text:
                text = text.replace("\t", TAB011)
            return text, index

        timeout = ex.timeout
        jobs: list[tuple[int, regex.Pattern[str], CompiledDefinition | None, bytes | None, bool]]
        jobs = []
        if scans.epoch is not None:
            epoch_literal = ex.epoch_literal.encode() if ex.epoch_literal else None
            jobs.append((_EPOCH, scans.epoch, None, epoch_literal, False))
        for order, (d, pattern) in enumerate(zip(ex._last, scans.patterns, strict=True)):
            jobs.append((order, pattern, d, d.byte_literal(), d.tab011))
        for order, pattern, definition, literal, tab011 in jobs:
            got = subject(literal, tab011)
            if got is None:
                return None
            text, index = got
            if not text:
                continue
            if definition is not None and tab011 and (definition.literal or "") not in text:
                continue  # the literal with its `#011`s is not there
            if not _scan(
                pattern,
                text,
                index,
                found,
                order=order,
                definition=definition,
                epoch_group=ex.epoch_group,
                timeout=timeout,
            ):
                return None
        if ex.json_definitions:
            got = subject(b"{", False)
            if got is None:
                return None
            text, index = got
            order = len(ex._last)
            pos, line = 0, 0
            find, count = text.find, text.count
            while (hit := find("{", pos)) != -1:
                line += count("\n", pos, hit)
                found.append((line if index is None else index[line], order, "", None, None))
                end = find("\n", hit)
                if end == -1:
                    break
                pos, line = end + 1, line + 1
        if alone:
            skip = set(alone)
            found = [f for f in found if f[1] == _ALONE or f[0] not in skip]
        if ex.templated:
            found.sort(key=_line_then_order)  # stable: a templated line's matches keep their order
        else:
            found.sort()  # (line, order) is unique per finding: plain tuple order is the same
        return found

    def held(self) -> list[list[object]]:
        """The redrawn-bar values not settled yet, `[metric, epoch, text]`: saved with the file
        offset, since the lines they came from are before it and will not be read again."""
        return [[name, epoch, text] for (name, epoch), text in self._pending.items()]

    def finish(self, counts: ParseCounts) -> list[Sample]:
        """At the end of the job's log: the redrawn-bar values still waiting to settle."""
        samples: list[Sample] = []
        self._settle(samples, counts, keep=None)
        return samples

    def _settle(
        self,
        samples: list[Sample],
        counts: ParseCounts,
        *,
        keep: int | None,
        only_epochless: bool = False,
    ) -> None:
        """Emit the pending values, except those at epoch `keep` (or, with `only_epochless`,
        those that have an epoch)."""
        if only_epochless:
            settled = [key for key in self._pending if key[1] is None]
        elif keep is None:
            settled = list(self._pending)
        else:
            settled = [key for key in self._pending if key[1] != keep]
        for key in settled:
            self._emit(samples, key[0], self._pending.pop(key), key[1], counts)

    def _feed_json(self, samples: list[Sample], text: str, counts: ParseCounts) -> None:
        ex = self.extractor
        obj = json_object(text)
        if obj is None:
            return  # not a JSON object: an ordinary log line, not an error
        valid, epoch = json_epoch(obj)
        if not valid:
            counts.error("bad_epoch")
            return
        try:
            numbers, too_large = json_numbers(obj)
        except RecursionError:
            return
        counts.error("bad_number", too_large)
        if epoch is not None:
            epoch += ex.epoch_offset
        else:
            epoch = self.last_epoch
        for definition in ex.json_definitions:
            for name, value in definition.metrics(numbers):
                self._record(samples, name, value, epoch, counts)

    def _emit(
        self,
        samples: list[Sample],
        name: str,
        value_text: str,
        epoch: int | None,
        counts: ParseCounts,
    ) -> None:
        value = parse_number(value_text)
        if value is None:
            counts.error("bad_number")
            return
        self._record(samples, name, value, epoch, counts)

    def record(self, name: str, value: float, epoch: int, counts: ParseCounts) -> Sample | None:
        """A value given with its epoch (pushed over HTTP): the same checks and bookkeeping as a
        value read from a line (epoch bounds, the metric cap); None when it is not kept."""
        out: list[Sample] = []
        self._record(out, name, value, epoch, counts)
        return out[0] if out else None

    def _record(
        self,
        samples: list[Sample],
        name: str,
        value: float,
        epoch: int | None,
        counts: ParseCounts,
    ) -> None:
        if epoch is None:
            epoch = self.value_counts.get(name, 0) + 1
        if epoch < 1:
            counts.error("epoch_below_1")
            return
        if epoch > MAX_EPOCH:
            counts.error("bad_epoch")
            return
        known = self.value_counts
        limit = self.extractor.max_metrics
        if (
            limit is not None
            and name not in known
            and len(known) >= limit
            and name not in self.extractor.keep
        ):
            counts.error("too_many_metrics")
            return
        known[name] = max(known.get(name, 0), epoch)
        samples.append(Sample(name, epoch, value))
