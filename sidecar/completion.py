"""When a tuning job is complete: SageMaker's TuningJobCompletionCriteria, pure.

`target_objective_value`: a job's objective value at least that good (finite) completes it.
`max_jobs_not_improving: N`: N jobs in a row, in the order they ended, whose last objective
value did not improve the best last value so far by at least 1 % (of its magnitude); the first
job to end with a value sets the best. A job that ended without a value does not improve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sidecar.config import CompletionCriteria, ObjectiveType

IMPROVEMENT = 0.01  # SageMaker: a job improves on the best by at least 1 %


@dataclass(frozen=True, slots=True)
class Completion:
    """Why and where a tuning job completed: the job, and the epoch of the value that did it
    (for `max_jobs_not_improving`, the last epoch of the N-th job that did not improve)."""

    reason: str  # target_objective_value | max_jobs_not_improving
    job: str
    at: int

    def doc(self) -> dict[str, Any]:
        return {"reason": self.reason, "job": self.job, "at": self.at}


def reaches_target(value: float, criteria: CompletionCriteria, direction: ObjectiveType) -> bool:
    target = criteria.target_objective_value
    if target is None or not math.isfinite(value):
        return False
    return value <= target if direction is ObjectiveType.MINIMIZE else value >= target


def improves(last: float | None, best: float | None, direction: ObjectiveType) -> bool:
    """Whether a job's last value improves the best last value so far by at least 1 %."""
    if last is None or not math.isfinite(last):
        return False
    if best is None:
        return True
    margin = IMPROVEMENT * abs(best)
    if direction is ObjectiveType.MINIMIZE:
        return last < best and best - last >= margin
    return last > best and last - best >= margin


class CompletionTracker:
    """The criteria applied as values come and jobs end; `complete` once it is, for good."""

    __slots__ = ("best", "complete", "criteria", "direction", "streak")

    def __init__(self, criteria: CompletionCriteria, direction: ObjectiveType) -> None:
        self.criteria = criteria
        self.direction = direction
        self.complete: Completion | None = None
        self.best: float | None = None
        self.streak = 0

    @property
    def active(self) -> bool:
        c = self.criteria
        return c.target_objective_value is not None or c.max_jobs_not_improving is not None

    def value(self, job: str, epoch: int, value: float) -> Completion | None:
        """An objective value; the Completion when it is the one that completes the tuning job."""
        if self.complete is None and reaches_target(value, self.criteria, self.direction):
            self.complete = Completion("target_objective_value", job, epoch)
            return self.complete
        return None

    def ended(self, job: str, last: tuple[int, float] | None) -> Completion | None:
        """A job ended with this last (epoch, value); the Completion when it completes it."""
        value = last[1] if last is not None else None
        if improves(value, self.best, self.direction):
            self.best = value
            self.streak = 0
        else:
            self.streak += 1
        n = self.criteria.max_jobs_not_improving
        if self.complete is None and n is not None and self.streak >= n:
            self.complete = Completion("max_jobs_not_improving", job, last[0] if last else 0)
            return self.complete
        return None
