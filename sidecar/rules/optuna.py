"""Optuna's pruners as rules: `optuna-median`, `optuna-percentile`, `optuna-threshold`.

Each is Optuna's `prune(study, trial)` with a job for a trial and an epoch for a step: the job's
own values are its intermediate values, its last step their greatest epoch, and the Completed jobs
(status Completed: ended without a stop) are Optuna's COMPLETE trials. NaN is handled as Optuna
does: a best-so-far that is NaN (every value NaN) prunes; NaN values of other jobs are ignored
(`nanpercentile`); a percentile that is NaN (too few jobs at the step) never prunes. Infinities
are ordinary numbers.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping

from sidecar.config import ObjectiveType
from sidecar.model import JobStatus
from sidecar.rule import JobHistory, Verdict
from sidecar.rules.completed import CompletedValues
from sidecar.rules.stats import nanmax, nanmin, percentile_of_sorted


def first_in_interval(step: int, steps: Iterable[int], n_warmup_steps: int, interval: int) -> bool:
    """Optuna's `_is_first_in_interval_step`: no value reported since the interval began."""
    nearest_lower = (step - n_warmup_steps) // interval * interval + n_warmup_steps
    if interval == 1:
        return True  # every step is the first of its interval
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
        self.completed = CompletedValues()

    def changed(self, history: JobHistory) -> None:
        self.completed.changed(history)

    def decide(
        self,
        *,
        epoch: int,
        value: float,
        earlier: Iterable[JobHistory],
        job: JobHistory | None = None,
        others: Iterable[JobHistory] = (),
    ) -> Verdict:
        if not self.completed.built:
            self.completed.build(others)
        n = self.completed.count - (job is not None and job in self.completed.members)
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
        if job is not None and job in self.completed.members:
            # a Completed job reporting again (its log went on): counted apart from itself
            others_now = [h for h in self.completed.members if h is not job]
            at_step = [h.values[step] for h in others_now if step in h.values]
            ordered = sorted(v for v in at_step if not math.isnan(v))
            count = len(at_step)
        else:
            ordered, count = self.completed.at(step)
        q = self.percentile if self.direction is ObjectiveType.MINIMIZE else 100 - self.percentile
        p = math.nan if count < self.n_min_trials else percentile_of_sorted(ordered, q)
        details = (("best_so_far", best), ("percentile", self.percentile), ("step", float(step)))
        if math.isnan(p):
            why = f"{count} Completed jobs at step {step}, n_min_trials {self.n_min_trials}"
            return Verdict(False, None, count, compared=False, reason=why)
        stop = best < p if self.direction is ObjectiveType.MAXIMIZE else best > p
        relation = "worse" if stop else "not worse"
        why = (
            f"at step {step}, the best so far {best:.4g} is {relation} than the "
            f"{self.percentile:g}th percentile {p:.4g} of {count} Completed jobs"
        )
        return Verdict(stop, p, count, reason=why, details=details)


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


def _kth(ordered: list[float], without: float | None, extra: float, k: int) -> float:
    """The k-th smallest (0-based) of `ordered` less one `without` (if given) plus `extra`,
    without building that list: `ordered` is every job's rung values, the job's own included."""
    cut = len(ordered) if without is None else bisect.bisect_left(ordered, without)

    def get(i: int) -> float:  # the i-th of `ordered` with the one at `cut` taken out
        return ordered[i] if i < cut else ordered[i + 1]

    at = bisect.bisect_right(ordered, extra)
    if cut < at:
        at -= 1  # where `extra` goes among the rest
    if k < at:
        return get(k)
    if k == at:
        return extra
    return get(k - 1)


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
        self._maximize = direction is ObjectiveType.MAXIMIZE
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        self.min_early_stopping_rate = min_early_stopping_rate
        self.bootstrap_count = bootstrap_count
        self._rungs: dict[JobHistory, tuple[tuple[object, ...], list[float]]] = {}
        # a wrapper that asks this rule only at some steps (`patience`): Optuna records rung
        # values only when the pruner is asked, so the derivation asks the same question
        self.gate: Callable[[Mapping[int, float]], bool] | None = None
        # every job's rung values, per rung in ascending order, for (min_resource, climbed_none)
        self._lists_for: tuple[int, int] | None = None
        self._lists: list[list[float]] = []
        self._contrib: dict[JobHistory, list[float]] = {}

    def changed(self, history: JobHistory) -> None:
        if self._lists_for is not None:
            self._recount(history, *self._lists_for)

    def _recount(self, history: JobHistory, min_resource: int, climbed_none: int) -> None:
        old = self._contrib.pop(history, None)
        for rung, v in enumerate(old or ()):
            del self._lists[rung][bisect.bisect_left(self._lists[rung], v)]
        if history.order <= climbed_none:
            return
        new = list(self.rung_values(history, min_resource, None))
        for rung, v in enumerate(new):
            if rung == len(self._lists):
                self._lists.append([])
            bisect.insort(self._lists[rung], v)
        self._contrib[history] = new

    def _rung_lists(self, key: tuple[int, int], everyone: Iterable[JobHistory]) -> None:
        if self._lists_for == key:
            return
        self._lists_for, self._lists, self._contrib = key, [], {}
        for h in everyone:
            self._recount(h, *key)

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
        self._rung_lists((min_resource, climbed_none), everyone)
        own = self._contrib.get(job, [])
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
            # the other jobs' values at this rung (the job's own entry, from this very step,
            # is not among them: Optuna records it as it decides), and the value itself
            competing = self._lists[rung] if rung < len(self._lists) else []
            mine = own[rung] if rung < len(own) else None
            compared = len(competing) + 1 - (mine is not None)
            if compared <= self.bootstrap_count:
                why = f"{compared} values at rung {rung}, bootstrap_count {self.bootstrap_count}"
                return Verdict(True, None, compared, reason=why, details=details)
            k = max(compared // self.reduction_factor - 1, 0)
            cut = _kth(competing, mine, value, compared - 1 - k if self._maximize else k)
            promotable = value >= cut if self._maximize else value <= cut
            if not promotable:
                why = (
                    f"at rung {rung} (step {step}), {value:.4g} is not in the top "
                    f"{k + 1} of {compared} jobs (cut {cut:.4g})"
                )
                return Verdict(True, cut, compared, reason=why, details=details)
            rung += 1
