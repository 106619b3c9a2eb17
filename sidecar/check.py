"""`sidecar check`: what each metric definition extracts from sample logs, and what looks wrong."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.config import Objective
from sidecar.definitions import EpochConfig, MetricDefinition, template_fields
from sidecar.formats import Format
from sidecar.lines import decode_line
from sidecar.model import ParseCounts, Sample
from sidecar.parse import Extractor
from sidecar.report import printable
from sidecar.sources.offline import FileStats, read_lines

SHOWN = 5


@dataclass(slots=True)
class DefinitionReport:
    """What one definition matched across the logs."""

    definition: MetricDefinition
    ambiguous: bool
    lines_by_log: dict[str, int] = field(default_factory=dict)
    first_by_log: dict[str, list[Sample]] = field(default_factory=dict)
    metrics: dict[str, int] = field(default_factory=dict)
    counts: ParseCounts = field(default_factory=ParseCounts)

    @property
    def matched_lines(self) -> int:
        return sum(self.lines_by_log.values())


@dataclass(slots=True)
class CheckReport:
    """The whole report: per-definition findings, the warnings drawn from them, and notes (worth
    knowing, not wrong: a preset's definition for a metric these logs do not print)."""

    definitions: list[DefinitionReport]
    warnings: list[str]
    truncated_lines: int = 0
    notes: list[str] = field(default_factory=list)


def check_logs(
    definitions: Sequence[MetricDefinition],
    epoch: EpochConfig,
    objective: Objective | None,
    logs: Sequence[Path],
    *,
    timeout: float,
    max_line_bytes: int,
    fmt: Format = "auto",
    from_preset: int = 0,
) -> CheckReport:
    """Run each definition on its own over every log (one pass per log) and collect findings.

    The first `from_preset` definitions come from a preset, not from the user: one that matches
    nothing is a note, not a warning (a preset covers metrics that a given log may not print).
    """
    extractors = [Extractor([d], epoch, timeout=timeout) for d in definitions]
    reports = [
        DefinitionReport(d, ambiguous=any(c.ambiguous for c in e.definitions))
        for d, e in zip(definitions, extractors, strict=True)
    ]
    truncated = 0
    for log in logs:
        parsers = [e.job_parser() for e in extractors]
        stats = FileStats()
        for raw in read_lines(log, max_line_bytes=max_line_bytes, stats=stats, fmt=fmt):
            segments: list[str] | None = None
            for extractor, parser, report in zip(extractors, parsers, reports, strict=True):
                if not extractor.might_match(raw):
                    continue
                if segments is None:
                    segments = decode_line(raw)
                _add(report, log.name, parser.feed(segments, report.counts))
        for parser, report in zip(parsers, reports, strict=True):
            _add(report, log.name, parser.finish(report.counts))  # values settled at the end
        truncated += stats.truncated
    notes: list[str] = []
    warnings = _warnings(reports, objective, logs, from_preset=from_preset, notes=notes)
    return CheckReport(reports, warnings, truncated, notes)


def _add(report: DefinitionReport, log: str, samples: Sequence[Sample]) -> None:
    """Count the samples that one line (or the end of a log) gave one definition."""
    if not samples:
        return
    report.lines_by_log[log] = report.lines_by_log.get(log, 0) + 1
    first = report.first_by_log.setdefault(log, [])
    for sample in samples:
        report.metrics[sample.metric] = report.metrics.get(sample.metric, 0) + 1
        if len(first) < SHOWN:
            first.append(sample)


def _warnings(
    reports: Sequence[DefinitionReport],
    objective: Objective | None,
    logs: Sequence[Path],
    *,
    from_preset: int,
    notes: list[str],
) -> list[str]:
    warnings: list[str] = []
    unmatched_preset: list[str] = []
    if not reports:
        warnings.append("no metric definitions: set `metric_definitions` or `preset`")
    for i, report in enumerate(reports, 1):
        label = f"definition [{i}] {report.definition.name!r}"
        if report.ambiguous:
            warnings.append(
                f"{label}: its Regex has several capture groups and none named `value`; "
                "the first group is used as the value (name it (?P<value>...) to be explicit)"
            )
        if logs and report.matched_lines == 0:
            if i <= from_preset and (
                objective is None or report.definition.name != objective.metric
            ):
                unmatched_preset.append(f"[{i}] {report.definition.name}")
            else:
                warnings.append(f"{label}: matched nothing in the given logs")
        for metric, n in sorted(report.counts.timeouts.items()):
            warnings.append(
                f"{label}: the regex timed out on {n} line(s) (metric {metric}); those lines "
                "were skipped: simplify the regex or raise `regex_timeout_seconds`"
            )
        for reason, n in sorted(report.counts.errors.items()):
            hint = (
                " (is the epoch 0-based? set `epoch.offset: 1`)"
                if reason == "epoch_below_1"
                else ""
            )
            warnings.append(f"{label}: {n} match(es) skipped: {reason}{hint}")
    if unmatched_preset:
        notes.append(
            f"{len(unmatched_preset)} of the preset's {from_preset} definition(s) matched nothing "
            f"in the given logs (metrics these logs do not print): {', '.join(unmatched_preset)}"
        )
    if objective is not None:
        metric = objective.metric
        plain = [r for r in reports if not template_fields(r.definition.name)]
        templated = [r for r in reports if template_fields(r.definition.name)]
        if logs:
            if not any(metric in r.metrics for r in reports):
                seen = sorted({m for r in reports for m in r.metrics})
                warnings.append(
                    f"objective metric {metric!r} was not extracted from the given logs"
                    + (f" (metrics found: {', '.join(seen)})" if seen else "")
                )
        elif not templated and not any(r.definition.name == metric for r in plain):
            warnings.append(f"objective metric {metric!r} has no metric definition with that Name")
    return warnings


def render(report: CheckReport, *, header: str) -> str:
    """The report as text."""
    lines = [header, ""]
    for i, r in enumerate(report.definitions, 1):
        source = f"/{r.definition.regex}/" if r.definition.regex is not None else "(JSON lines)"
        lines.append(f"[{i}] {r.definition.name}  {source}")
        if r.metrics and template_fields(r.definition.name):
            names = ", ".join(f"{m} ({n})" for m, n in sorted(r.metrics.items()))
            lines.append(f"    metrics: {names}")
        for log, n in r.lines_by_log.items():
            shown = " ".join(
                f"({s.epoch}, {s.value:g})"
                if not template_fields(r.definition.name)
                else f"{s.metric}@{s.epoch}={s.value:g}"
                for s in r.first_by_log.get(log, [])
            )
            lines.append(f"    {log}: {n} line(s) matched; first: {shown}")
        lines.append("")
    if report.truncated_lines:
        lines.append(f"note: {report.truncated_lines} line(s) longer than max_line_bytes were cut")
    if report.notes:
        lines.append("notes:")
        lines += [f"  - {n}" for n in report.notes]
    if report.warnings:
        lines.append("warnings:")
        lines += [f"  ! {w}" for w in report.warnings]
    else:
        lines.append("no problems found")
    return "\n".join(printable(line) for line in lines)
