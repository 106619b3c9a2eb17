"""What the stores exchange with the sidecar: the records, the Store protocol, value encodings."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from sidecar.config import Objective
from sidecar.model import Decision, JobStatus, Offset


@dataclass(frozen=True, slots=True)
class ValueRow:
    """One metric value of one job, unique per (tuning job, job, metric, epoch)."""

    tuning_job: str
    job: str
    metric: str
    epoch: int
    value: float


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """A job's new status, with the decision when it was stopped."""

    tuning_job: str
    job: str
    status: JobStatus
    decision: Decision | None = None


@dataclass(frozen=True, slots=True)
class ShadowDecision:
    """A shadow rule's decision on a job (`early_stopping.shadow`): recorded, never acted on."""

    tuning_job: str
    job: str
    rule: str  # the shadow's label: its rule's name (`name#2` for a second one of that name)
    decision: Decision


@dataclass(slots=True)
class Batch:
    """Everything one step applies, committed in one transaction (values with their offsets).

    `registrations`: jobs (tuning job, job) first seen while the store was down, registered by
    the writer before the rest; their tuning jobs must exist (`Store.ensure_tuning_job`)."""

    values: list[ValueRow] = field(default_factory=list)
    updates: list[JobUpdate] = field(default_factory=list)
    offsets: list[Offset] = field(default_factory=list)
    registrations: list[tuple[str, str]] = field(default_factory=list)
    shadows: list[ShadowDecision] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.values or self.updates or self.offsets or self.registrations or self.shadows
        )


@dataclass(slots=True)
class StoredJob:
    """A job as read back from the store."""

    name: str
    order: int
    status: JobStatus
    decision: Decision | None
    values: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


class Store(Protocol):
    """What the sidecar needs from a history store.

    Every method raises StoreError (never a driver's exception) when the store cannot do it;
    writes are idempotent, so a caller may retry one that failed."""

    url: str

    def ensure_tuning_job(self, name: str, objective: Objective) -> None:
        """Create the tuning job if it is new (its objective is kept from the first writer)."""
        ...

    def register_job(self, tuning_job: str, job: str) -> int:
        """The job's launch order, assigning the next one if the job is new: later than every
        job registered before, the same for every caller, whichever process or node registered
        it. (SQLite counts 1, 2, 3 per tuning job; PostgreSQL takes orders from one sequence,
        with gaps.) The tuning job must exist."""
        ...

    def apply(self, batch: Batch) -> None:
        """Write values (replacing a stored epoch's), status changes and offsets in one
        transaction: all or nothing. The tuning jobs of its values and updates must exist."""
        ...

    def tuning_jobs(self) -> list[tuple[str, Objective]]:
        """Every tuning job with its objective, by name."""
        ...

    def load_jobs(self, tuning_job: str, *, metrics: set[str] | None = None) -> list[StoredJob]:
        """A tuning job's jobs in launch order, with values of `metrics` (None: all)."""
        ...

    def load_job(self, tuning_job: str, job: str) -> StoredJob | None:
        """One job with every metric's values, or None when it is not registered."""
        ...

    def shadow_decisions(self, tuning_job: str) -> dict[str, dict[str, Decision]]:
        """The shadow rules' decisions, by job, then by shadow label."""
        ...

    def changes(
        self, tuning_job: str, metric: str, since: int, *, others_only: bool = False
    ) -> tuple[int, list[StoredJob]]:
        """Jobs changed after write cursor `since` (0: all), with only their changed `metric`
        values, and the cursor to pass next time. Lets a process follow others' writes.

        `others_only`: the caller needs only what other connections wrote; a store that can tell
        cheaply that none committed since its last answer may then answer `(since, [])`."""
        ...

    def offsets(self, node: str) -> dict[str, Offset]:
        """This node's file offsets, by file key."""
        ...

    def ping(self) -> bool:
        """True when the store answers."""
        ...

    def close(self) -> None:
        """Release connections; further calls are errors."""
        ...


def decision_to_json(decision: Decision | None) -> str | None:
    """Serialise a decision for a TEXT column (Python's JSON, which keeps NaN and infinities)."""
    if decision is None:
        return None
    return json.dumps(
        {
            "epoch": decision.epoch,
            "value": decision.value,
            "median": decision.median,
            "compared_jobs": decision.compared_jobs,
            "rule": decision.rule,
            "dry_run": decision.dry_run,
            "outcome": decision.outcome,
            **({"details": [list(d) for d in decision.details]} if decision.details else {}),
        }
    )


def decision_from_json(tuning_job: str, job: str, text: str | None) -> Decision | None:
    """Read back what `decision_to_json` wrote."""
    if not text:
        return None
    doc: dict[str, Any] = json.loads(text)
    return Decision(
        tuning_job=tuning_job,
        job=job,
        epoch=int(doc["epoch"]),
        value=float(doc["value"]),
        median=float(doc["median"]),
        compared_jobs=int(doc["compared_jobs"]),
        rule=str(doc.get("rule", "sagemaker")),
        dry_run=bool(doc.get("dry_run", False)),
        outcome=doc.get("outcome"),
        details=tuple((str(k), float(v)) for k, v in doc.get("details", ())),
    )


def to_column(value: float) -> float | None:
    """SQL REAL cannot hold NaN portably: NULL stands for NaN (values are never otherwise NULL)."""
    return None if math.isnan(value) else value


def from_column(value: float | None) -> float:
    """Inverse of `to_column`."""
    return math.nan if value is None else float(value)


def state_json(offset: Offset) -> str:
    """An offset's state as the JSON text a store's table holds."""
    return json.dumps(dict(offset.state), sort_keys=True)
