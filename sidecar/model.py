"""The wire types that flow one way through the pipeline: samples, decisions, job events."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple


class JobStatus(StrEnum):
    """A training job's state, in SageMaker's words."""

    RUNNING = "Running"
    COMPLETED = "Completed"
    STOPPED = "Stopped"
    FAILED = "Failed"


class Sample(NamedTuple):
    """One metric value a job reported at an epoch (1-based). A named tuple, not a dataclass:
    one is built per value on the parse path, and a tuple is built several times faster."""

    metric: str
    epoch: int
    value: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The evidence of a decision to stop a job at an epoch."""

    tuning_job: str
    job: str
    epoch: int
    value: float
    median: float
    compared_jobs: int
    rule: str
    dry_run: bool = False
    # how the stop ended (`stopped`, `already_exited`, `dry_run`, `refused`, `failed`); None
    # until it has, and always in `replay`, which stops nothing
    outcome: str | None = None
    # what else the rule compared, by name (Optuna's `best_so_far`, `percentile`, the `rung`)
    details: tuple[tuple[str, float], ...] = ()

    def evidence(self) -> dict[str, Any]:
        """The `decision` object of `replay --json` and `status --json` (non-finite numbers
        become null: JSON has no NaN)."""
        doc: dict[str, Any] = {
            "epoch": self.epoch,
            "value": finite_or_none(self.value),
            "median": finite_or_none(self.median),
            "compared_jobs": self.compared_jobs,
        }
        for key, number in self.details:
            doc[key] = finite_or_none(number)
        if self.dry_run:
            doc["dry_run"] = True
        if self.outcome is not None:
            doc["outcome"] = self.outcome
        return doc


@dataclass(frozen=True, slots=True)
class Offset:
    """How far one source file (or container stream) has been applied: the end of the last
    complete line whose values are stored, committed in the same transaction as those values,
    and what a restart needs to resume there."""

    node: str
    file_key: str  # device:inode (a container: docker:<id>)
    fingerprint: str  # of the first bytes: tells a reused inode from the same file
    path: str
    offset: int
    state: Mapping[str, Any] = field(default_factory=dict)  # decoder and parser state (JSON)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Complete lines of one job's log, as a source read them at `read_at` (monotonic seconds),
    with what is to be committed with their values (`offset`) and what the source knows of the
    file besides."""

    tuning_job: str
    job: str
    lines: list[bytes]
    read_at: float
    offset: Offset | None = None  # None for sources without offsets (a child's pipes)
    log_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # extra template values (job_regex groups)
    resume: Mapping[str, Any] = field(default_factory=dict)  # a file's first chunk after a
    # restart: the state stored with its offset
    cut_lines: int = 0  # the file decoder's running counts: lines cut at max_line_bytes,
    bad_records: int = 0  # and records not of the format
    fresh: bool = False  # the file is read from its start, not resumed: a new or truncated file
    rewritten: bool = False  # found rewritten in place while the sidecar was down: a new run


@dataclass(frozen=True, slots=True)
class JobEnded:
    """A job's source ended: its file was deleted, it went idle, or its process exited."""

    tuning_job: str
    job: str
    status: JobStatus
    reason: str


@dataclass(frozen=True, slots=True)
class StopFinished:
    """How the stop of a job ended (a stop backend's outcome, back to the consumer)."""

    tuning_job: str
    job: str
    outcome: str


@dataclass(slots=True)
class ParseCounts:
    """What a parse step counted besides samples: problems by reason, timeouts by metric."""

    errors: dict[str, int] = field(default_factory=dict)
    timeouts: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str, n: int = 1) -> None:
        if n:
            self.errors[reason] = self.errors.get(reason, 0) + n

    def timeout(self, metric: str) -> None:
        self.timeouts[metric] = self.timeouts.get(metric, 0) + 1


def finite_or_none(value: float) -> float | None:
    """JSON-safe number: NaN and infinities become None."""
    return value if math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """A document with every NaN and infinity, at any depth, as None (JSON has neither)."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
