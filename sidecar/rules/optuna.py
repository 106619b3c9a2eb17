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
from collections.abc import Callable, Iterable, Mapping

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


class OptunaSuccessiveHalvingRule:
    """Optuna's `SuccessiveHalvingPruner` (asynchronous successive halving, stop-only).

    Rung r's promotion step is `min_resource * reduction_factor ** (min_early_stopping_rate + r)`.
    At each decision the job climbs the rungs its last step has reached: at each, its value is
    that rung's value (a NaN value stops it first), compared with the rung values of every other
    job that reached the rung: it goes on only when it is in the top 1 / reduction_factor of them
    (the best one while fewer than reduction_factor have), and, with `bootstrap_count`, only once
    more than that many values are at the rung.

    Optuna keeps rung values in trial attributes; here they are derived from each job's stored
    values (docs/rules.md): the value at the first epoch at or past each promotion step, for the
    rungs the job climbed, up to the one its stop decision names (`rung` in its evidence). So a
    restart, another node's history and `replay` give the same rung values. `min_resource: auto`
    is Optuna's estimate at its first decision after a job Completed: the last epoch of the first
    Completed job (launch order) with values, // 100, at least 1; jobs launched up to that one
    climbed no rung (Optuna had no min_resource while they ran).
    """

    name = "optuna-successive-halving"

    def __init__(
        self,
        *,
        direction: ObjectiveType,
        min_resource: int | None,
        reduction_factor: int,
        min_early_stopping_rate: int,
        bootstrap_count: int,
    ) -> None:
        self.direction = direction
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        self.min_early_stopping_rate = min_early_stopping_rate
        self.bootstrap_count = bootstrap_count
        self._rungs: dict[JobHistory, tuple[tuple[object, ...], list[float]]] = {}
        # a wrapper that asks this rule only at some steps (`patience`): Optuna records rung
        # values only when the pruner is asked, so the derivation asks the same question
        self.gate: Callable[[Mapping[int, float]], bool] | None = None

    def promotion_step(self, min_resource: int, rung: int) -> int:
        return int(min_resource * self.reduction_factor ** (self.min_early_stopping_rate + rung))

    def _min_resource(self, others: Iterable[JobHistory]) -> tuple[int, int] | None:
        """(min_resource, the launch order up to which jobs climbed no rung) or None (not yet)."""
        if self.min_resource is not None:
            return self.min_resource, 0
        completed = [h for h in others if h.status is JobStatus.COMPLETED and h.values]
        if not completed:
            return None
        first = min(completed, key=lambda h: h.order)
        return max(max(first.values) // 100, 1), first.order

    def rung_values(
        self, history: JobHistory, min_resource: int, before: int | None
    ) -> list[float]:
        """The job's value at each rung it climbed (index: rung), from its values at epochs
        before `before` (all of them when None), cut at its stop decision's rung."""
        key = (min_resource, before, len(history.values), history.stop_epoch, history.stop_rung)
        cached = self._rungs.get(history)
        if cached is not None and cached[0] == key:
            return cached[1]
        out: list[float] = []
        rung = 0
        steps = sorted(history.values)
        for at, step in enumerate(steps):
            if before is not None and step >= before:
                break
            if history.stop_epoch is not None and step > history.stop_epoch:
                break
            if self.gate is not None:
                asked = self.gate({s: history.values[s] for s in steps[: at + 1]})
                if not asked:
                    continue
            v = history.values[step]
            while step >= self.promotion_step(min_resource, rung):
                if math.isnan(v):
                    break
                out.append(v)
                if step == history.stop_epoch and rung >= (history.stop_rung or 0):
                    break
                rung += 1
            else:
                continue
            break  # stopped (NaN, or the rung its decision names)
        self._rungs[history] = (key, out)
        return out

    def decide(
        self,
        *,
        epoch: int,
        value: float,
        earlier: Iterable[JobHistory],
        job: JobHistory | None = None,
        others: Iterable[JobHistory] = (),
    ) -> Verdict:
        if job is None:
            return _wait("no job history")
        everyone = list(others)
        known = self._min_resource(h for h in everyone if h is not job)
        if known is None:
            return _wait("no Completed job yet to estimate min_resource from")
        min_resource, climbed_none = known
        if job.order <= climbed_none:
            return _wait("launched before min_resource was known")
        step = max(job.values)
        value = job.values[step]
        rung = len(self.rung_values(job, min_resource, before=step))
        compared = 0
        while True:
            promotion = self.promotion_step(min_resource, rung)
            if step < promotion:
                if compared:
                    why = f"promoted to rung {rung} at step {step}"
                    return Verdict(False, None, compared, reason=why)
                return _wait(f"step {step} is before rung {rung}'s promotion step {promotion}")
            details = (("rung", float(rung)), ("step", float(step)))
            if math.isnan(value):
                return Verdict(True, value, 0, reason="the value is NaN", details=details)
            competing = [
                values[rung]
                for h in everyone
                if h is not job
                and h.order > climbed_none
                and len(values := self.rung_values(h, min_resource, None)) > rung
            ]
            competing.append(value)
            compared = len(competing)
            if compared <= self.bootstrap_count:
                why = f"{compared} values at rung {rung}, bootstrap_count {self.bootstrap_count}"
                return Verdict(True, None, compared, reason=why, details=details)
            k = max(compared // self.reduction_factor - 1, 0)
            competing.sort()
            if self.direction is ObjectiveType.MAXIMIZE:
                cut = competing[-(k + 1)]
                promotable = value >= cut
            else:
                cut = competing[k]
                promotable = value <= cut
            if not promotable:
                why = (
                    f"at rung {rung} (step {step}), {value:.4g} is not in the top "
                    f"{k + 1} of {compared} jobs (cut {cut:.4g})"
                )
                return Verdict(True, cut, compared, reason=why, details=details)
            rung += 1
