"""`sidecar check`: what each metric definition extracts from sample logs, and what looks wrong."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.config import EpochConfig, MetricDefinition, Objective, template_fields
from sidecar.decode import decode_line
from sidecar.formats import Format
from sidecar.logfile import FileStats, read_lines
from sidecar.model import ParseCounts, Sample
from sidecar.parse import Extractor

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
    """The whole report: per-definition findings and the warnings drawn from them."""

    definitions: list[DefinitionReport]
    warnings: list[str]
    truncated_lines: int = 0


def check_logs(
    definitions: Sequence[MetricDefinition],
    epoch: EpochConfig,
    objective: Objective | None,
    logs: Sequence[Path],
    *,
    timeout: float,
    max_line_bytes: int,
    fmt: Format = "auto",
) -> CheckReport:
    """Run each definition on its own over every log (one pass per log) and collect findings."""
    extractors = [Extractor([d], epoch, timeout=timeout) for d in definitions]
    reports = [
        DefinitionReport(d, ambiguous=e.definitions[0].ambiguous)
        for d, e in zip(definitions, extractors, strict=True)
    ]
    truncated = 0
    for log in logs:
        parsers = [e.new_job() for e in extractors]
        stats = FileStats()
        for raw in read_lines(log, max_line_bytes=max_line_bytes, stats=stats, fmt=fmt):
            segments: list[str] | None = None
            for extractor, parser, report in zip(extractors, parsers, reports, strict=True):
                if not extractor.might_match(raw):
                    continue
                if segments is None:
                    segments = decode_line(raw)
                samples = parser.feed(segments, report.counts)
                if not samples:
                    continue
                report.lines_by_log[log.name] = report.lines_by_log.get(log.name, 0) + 1
                first = report.first_by_log.setdefault(log.name, [])
                for sample in samples:
                    report.metrics[sample.metric] = report.metrics.get(sample.metric, 0) + 1
                    if len(first) < SHOWN:
                        first.append(sample)
        truncated += stats.truncated
    return CheckReport(reports, _warnings(reports, objective, logs), truncated)


def _warnings(
    reports: Sequence[DefinitionReport],
    objective: Objective | None,
    logs: Sequence[Path],
) -> list[str]:
    warnings: list[str] = []
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
        lines.append(f"[{i}] {r.definition.name}  /{r.definition.regex}/")
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
    if report.warnings:
        lines.append("warnings:")
        lines += [f"  ! {w}" for w in report.warnings]
    else:
        lines.append("no problems found")
    return "\n".join(lines)
