"""Katib's `medianstop` early stopping (v1beta1) as a rule: `katib-median`.

Katib's service (pkg/earlystopping/v1beta1/medianstop/service.py) averages each Succeeded
trial's first `start_step` objective values, and takes the mean of those averages (a mean,
despite the name) once `min_trials_required` trials have succeeded. The metrics collector
(pkg/metricscollector/v1beta1/file-metricscollector/rules.go) then stops a trial when its best
value so far is strictly worse than that value, from its `start_step`-th report on. Sums are
plain left-to-right float sums, as in the service. NaN: the best so far starts as the first value
(even NaN) and only a strictly better value replaces it, so a NaN never replaces a number and
every comparison with NaN is false (no stop).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from sidecar.config import ObjectiveType
from sidecar.model import JobStatus
from sidecar.rule import JobHistory, Verdict


def katib_best(values: Iterable[float], direction: ObjectiveType) -> float:
    """The collector's `optimalObjValue` after these values, in order."""
    best = math.nan
    for v in values:
        if (
            math.isnan(best)
            or (direction is ObjectiveType.MAXIMIZE and v > best)
            or (direction is ObjectiveType.MINIMIZE and v < best)
        ):
            best = v
    return best


def first_steps_average(history: JobHistory, start_step: int) -> float:
    """The service's average of a trial's first `start_step` values (in epoch order)."""
    first = [history.values[e] for e in sorted(history.values)[:start_step]]
    total = 0.0
    for v in first:
        total += v
    return total / len(first)


class KatibMedianRule:
    """`katib-median`: see the module docstring."""

    name = "katib-median"

    def __init__(self, *, direction: ObjectiveType, min_trials_required: int, start_step: int):
        self.direction = direction
        self.min_trials_required = min_trials_required
        self.start_step = start_step
        # the Succeeded jobs' first-steps averages, kept up to date by `changed`; and their mean
        self._averages: dict[JobHistory, float] | None = None
        self._mean: tuple[float, int] | None = None
        self._bests: dict[JobHistory, tuple[int, int, float]] = {}  # job -> (values, last, best)

    def changed(self, history: JobHistory) -> None:
        averages = self._averages
        if averages is None:
            return
        before = averages.pop(history, None)
        if history.status is JobStatus.COMPLETED and history.values:
            averages[history] = first_steps_average(history, self.start_step)
        if before is not None or history in averages:
            self._mean = None

    def _best(self, job: JobHistory | None, values: dict[int, float]) -> float:
        """`katib_best` of the job's values in epoch order, carried on from the last decision
        when the only change is one value at a later epoch (the usual case: one new epoch)."""
        last = max(values)
        if job is not None:
            known = self._bests.get(job)
            if known is not None and known[0] == len(values) - 1 and known[1] < last:
                best = katib_best((known[2], values[last]), self.direction)
                self._bests[job] = (len(values), last, best)
                return best
        best = katib_best((values[e] for e in sorted(values)), self.direction)
        if job is not None:
            self._bests[job] = (len(values), last, best)
        return best

    def _target(self, job: JobHistory | None, others: Iterable[JobHistory]) -> tuple[float, int]:
        """(the mean of the Succeeded jobs' averages, how many), `job` itself left out."""
        if self._averages is None:
            self._averages = {
                h: first_steps_average(h, self.start_step)
                for h in others
                if h.status is JobStatus.COMPLETED and h.values
            }
        if job is not None and job in self._averages:
            rest = sorted((h for h in self._averages if h is not job), key=lambda h: h.order)
            return (sum(self._averages[h] for h in rest) / len(rest) if rest else math.nan), len(
                rest
            )
        if self._mean is None:
            ordered = sorted(self._averages, key=lambda h: h.order)  # the order they succeeded
            n = len(ordered)
            self._mean = (sum(self._averages[h] for h in ordered) / n if n else math.nan), n
        return self._mean

    def decide(
        self,
        *,
        epoch: int,
        value: float,
        earlier: Iterable[JobHistory],
        job: JobHistory | None = None,
        others: Iterable[JobHistory] = (),
    ) -> Verdict:
        target, n = self._target(job, others)
        if n < self.min_trials_required:
            why = f"{n} Succeeded jobs, min_trials_required {self.min_trials_required}"
            return Verdict(False, None, n, compared=False, reason=why)
        values = job.values if job is not None else {epoch: value}
        reports = len(values)
        if reports < self.start_step:
            why = f"report {reports} is before start_step {self.start_step}"
            return Verdict(False, target, n, compared=False, reason=why)
        best = self._best(job, values)
        stop = best < target if self.direction is ObjectiveType.MAXIMIZE else best > target
        relation = "worse" if stop else "not worse"
        why = f"the best so far {best:.4g} is {relation} than the mean {target:.4g} of {n} jobs"
        return Verdict(stop, target, n, reason=why, details=(("best_so_far", best),))
