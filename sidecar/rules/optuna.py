"""Optuna's pruners as rules: `optuna-median`, `optuna-percentile`, `optuna-threshold`.

Each is Optuna's `prune(study, trial)` with a job for a trial and an epoch for a step: the job's
own values are its intermediate values, its last step their greatest epoch, and the Completed jobs
(status Completed: ended without a stop) are Optuna's COMPLETE trials. NaN is handled as Optuna
does: a best-so-far that is NaN (every value NaN) prunes; NaN values of other jobs are ignored
(`nanpercentile`); a percentile that is NaN (too few jobs at the step) never prunes. Infinities
are ordinary numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from sidecar.config import ObjectiveType
from sidecar.model import JobStatus
from sidecar.rule import JobHistory, Verdict
from sidecar.rules.stats import nanmax, nanmin, nanpercentile


def first_in_interval(step: int, steps: Iterable[int], n_warmup_steps: int, interval: int) -> bool:
    """Optuna's `_is_first_in_interval_step`: no value reported since the interval began."""
    nearest_lower = (step - n_warmup_steps) // interval * interval + n_warmup_steps
    second_last = max((s for s in steps if s != step), default=-1)
    return second_last < nearest_lower


def best_so_far(values: Iterable[float], direction: ObjectiveType) -> float:
    """Optuna's `_get_best_intermediate_result_over_steps`."""
    if direction is ObjectiveType.MAXIMIZE:
        return nanmax(values)
    return nanmin(values)


class OptunaPercentileRule:
    """Optuna's `PercentilePruner` (and `MedianPruner`, its 50th percentile): stop when the job's
    best value so far is worse than the given percentile of the Completed jobs' values at its
    last step (the 100 - p percentile when maximizing)."""

    def __init__(
        self,
        *,
        name: str,
        direction: ObjectiveType,
        percentile: float,
        n_startup_trials: int,
        n_warmup_steps: int,
        interval_steps: int,
        n_min_trials: int,
    ) -> None:
        self.name = name
        self.direction = direction
        self.percentile = percentile
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps
        self.n_min_trials = n_min_trials

    def decide(
        self,
        *,
        epoch: int,
        value: float,
        earlier: Iterable[JobHistory],
        job: JobHistory | None = None,
        others: Iterable[JobHistory] = (),
    ) -> Verdict:
        completed = [h for h in others if h is not job and h.status is JobStatus.COMPLETED]
        n = len(completed)
        if n == 0 or n < self.n_startup_trials:
            return _wait(f"{n} Completed jobs, n_startup_trials {self.n_startup_trials}")
        values = job.values if job is not None else {epoch: value}
        step = max(values)
        if step < self.n_warmup_steps:
            return _wait(f"step {step} is before n_warmup_steps {self.n_warmup_steps}")
        if not first_in_interval(step, values, self.n_warmup_steps, self.interval_steps):
            return _wait(f"step {step} is not the first of its interval_steps")
        best = best_so_far(values.values(), self.direction)
        if math.isnan(best):
            return Verdict(True, best, n, reason="every value so far is NaN")
        at_step = [h.values[step] for h in completed if step in h.values]
        q = self.percentile if self.direction is ObjectiveType.MINIMIZE else 100 - self.percentile
        p = math.nan if len(at_step) < self.n_min_trials else nanpercentile(at_step, q)
        details = (("best_so_far", best), ("percentile", self.percentile), ("step", float(step)))
        if math.isnan(p):
            why = f"{len(at_step)} Completed jobs at step {step}, n_min_trials {self.n_min_trials}"
            return Verdict(False, None, len(at_step), compared=False, reason=why)
        stop = best < p if self.direction is ObjectiveType.MAXIMIZE else best > p
        relation = "worse" if stop else "not worse"
        why = (
            f"at step {step}, the best so far {best:.4g} is {relation} than the "
            f"{self.percentile:g}th percentile {p:.4g} of {len(at_step)} Completed jobs"
        )
        return Verdict(stop, p, len(at_step), reason=why, details=details)


class OptunaThresholdRule:
    """Optuna's `ThresholdPruner`: stop when the value at the last step is NaN, below `lower`
    or above `upper` (whatever the objective's direction)."""

    name = "optuna-threshold"

    def __init__(
        self, *, lower: float | None, upper: float | None, n_warmup_steps: int, interval_steps: int
    ) -> None:
        self.lower = lower
        self.upper = upper
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps

    def decide(
        self,
        *,
        epoch: int,
        value: float,
        earlier: Iterable[JobHistory],
        job: JobHistory | None = None,
        others: Iterable[JobHistory] = (),
    ) -> Verdict:
        values = job.values if job is not None else {epoch: value}
        step = max(values)
        if step < self.n_warmup_steps:
            return _wait(f"step {step} is before n_warmup_steps {self.n_warmup_steps}")
        if not first_in_interval(step, values, self.n_warmup_steps, self.interval_steps):
            return _wait(f"step {step} is not the first of its interval_steps")
        latest = values[step]
        if math.isnan(latest):
            return Verdict(True, latest, 0, reason=f"the value at step {step} is NaN")
        if self.lower is not None and latest < self.lower:
            return Verdict(
                True, self.lower, 0, reason=f"{latest:.4g} is below lower {self.lower:g}"
            )
        if self.upper is not None and latest > self.upper:
            return Verdict(
                True, self.upper, 0, reason=f"{latest:.4g} is above upper {self.upper:g}"
            )
        bound = self.lower if self.lower is not None else self.upper
        return Verdict(False, bound, 0, reason=f"{latest:.4g} is within the thresholds")


def _wait(reason: str) -> Verdict:
    return Verdict(False, None, 0, compared=False, reason=reason)
