"""The median stopping rule (SageMaker's early stopping "Auto"): the one place its semantics live.

Pure: no IO, no clock, no globals. docs/design.md, "The median rule", is the specification; each
step is marked below.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sidecar.config import ObjectiveType
from sidecar.model import JobStatus


def worst(direction: ObjectiveType) -> float:
    """The worst possible value for a direction."""
    return math.inf if direction is ObjectiveType.MINIMIZE else -math.inf


def as_rule_value(value: float, direction: ObjectiveType) -> float:
    """NaN and infinities count as the worst value for the direction (the median rule)."""
    return value if math.isfinite(value) else worst(direction)


def is_worse(value: float, than: float, direction: ObjectiveType) -> bool:
    """Strictly worse: equal is not worse (the median rule, step 4)."""
    return value > than if direction is ObjectiveType.MINIMIZE else value < than


def median(values: Sequence[float]) -> float:
    """Median; the mean of the two middle values for an even count (the median rule, step 3)."""
    return median_of_sorted(sorted(values))


def median_of_sorted(ordered: Sequence[float]) -> float:
    """`median` of values already in ascending order."""
    n = len(ordered)
    mid = n // 2
    if n % 2:
        return ordered[mid]
    # halves first: exact, and no overflow to inf for two huge finite values
    return ordered[mid - 1] / 2 + ordered[mid] / 2


def running_average_of(values: Iterable[float], direction: ObjectiveType) -> float:
    """The mean of values with non-finite ones as the worst; exactly rounded (`math.fsum`), so
    every correct recomputation agrees to the last bit. An empty sequence counts as the worst."""
    normalized = [as_rule_value(v, direction) for v in values]
    if not normalized:
        return worst(direction)
    return math.fsum(normalized) / len(normalized)


class JobHistory:
    """One job's objective values as the rule sees them: by epoch, cut at its stop decision."""

    __slots__ = (
        "_averages",
        "_status",
        "direction",
        "on_change",
        "order",
        "stop_epoch",
        "stop_rung",
        "values",
    )

    def __init__(
        self, order: int, direction: ObjectiveType, status: JobStatus = JobStatus.RUNNING
    ) -> None:
        self.order = order
        self.direction = direction
        # told when the status changes: rules that count Completed jobs keep caches of them
        self.on_change: Callable[[JobHistory], None] | None = None
        self._status = status
        self.values: dict[int, float] = {}
        self.stop_epoch: int | None = None
        self.stop_rung: int | None = None  # successive halving: the rung its stop was decided at
        self._averages: dict[int, float] = {}

    @property
    def status(self) -> JobStatus:
        """Completed jobs are what Optuna's and Katib's rules compare with."""
        return self._status

    @status.setter
    def status(self, value: JobStatus) -> None:
        if value is not self._status:
            self._status = value
            if self.on_change is not None:
                self.on_change(self)

    def set_value(self, epoch: int, value: float) -> None:
        """Record (or replace) the value at an epoch."""
        self.values[epoch] = value
        if self._averages:
            self._averages = {e: a for e, a in self._averages.items() if e < epoch}

    def usable_at(self, epoch: int) -> bool:
        """Has a value at `epoch` that the rule may use: values after a stop decision never are."""
        return epoch in self.values and (self.stop_epoch is None or epoch <= self.stop_epoch)

    def running_average(self, epoch: int) -> float:
        """r(e): the mean of the job's values at epochs <= e (the median rule, step 2); exactly rounded."""
        cached = self._averages.get(epoch)
        if cached is not None:
            return cached
        average = running_average_of(
            (v for e, v in self.values.items() if e <= epoch), self.direction
        )
        self._averages[epoch] = average
        return average


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a rule decided, with the evidence behind it.

    `compared` is whether the rule was allowed to compare at all (its warm-up is over: enough
    earlier jobs, late enough an epoch); `median` is what it compared with (or would have, when
    not allowed); `reason` says in words why it stopped or did not."""

    stop: bool
    median: float | None
    compared_jobs: int
    compared: bool = True
    reason: str = ""
    # what else the rule compared, for the decision's evidence (Optuna's best-so-far, the rung)
    details: tuple[tuple[str, float], ...] = ()


class Rule(Protocol):
    """A stopping rule: a function of the current value and the earlier jobs' histories.

    A rule may keep caches over the histories (sorted averages, Completed jobs' values); such a
    rule has a `changed(history)` method, and whoever asks it with `job` and `others` (the
    engine, and any rule wrapping it) must tell it of every change to any of `others` (values,
    status, stop, launch order) and always pass the same population. Asked without `job`, it
    answers from `earlier` alone."""

    name: str

    def decide(
        self,
        *,
        epoch: int,
        value: float,
        earlier: Iterable[JobHistory],
        job: JobHistory | None = None,
        others: Iterable[JobHistory] = (),
    ) -> Verdict:
        """Whether the job that reported `value` at `epoch` should stop. `earlier`: the jobs
        launched before it; `job`: its own history (the value already in it); `others`: every
        job of the tuning job (the rule skips `job` itself), for rules that count Completed ones."""
        ...


MAX_VIEWS = 64  # (epoch, cutoff) views kept; past this they are dropped and rebuilt on demand


class SageMakerMedianRule:
    """`rule: sagemaker`: stop when the value is worse than the median of earlier jobs'
    running averages at the same epoch (docs/design.md, "The median rule")."""

    name = "sagemaker"

    def __init__(self, *, direction: ObjectiveType, min_jobs: int, start_epoch: int) -> None:
        self.direction = direction
        self.min_jobs = min_jobs
        self.start_epoch = start_epoch
        # steps 1-2 kept sorted per (epoch, launch-order cutoff), and the histories changed
        # since (each view applies the log from its own position): with 10,000 earlier jobs a
        # decision moves a few entries instead of averaging every job again
        self._views: dict[tuple[int, int], AveragesAtEpoch] = {}
        self._changes: list[JobHistory] = []
        self._population = 0  # histories at the last view built: bounds the change log

    def changed(self, history: JobHistory) -> None:
        """A history changed (values, status, stop, launch order): the views catch up on it."""
        if not self._views:
            return
        self._changes.append(history)
        if len(self._changes) > 4 * self._population + 1024:
            self._views.clear()  # cheaper to rebuild than to replay a long log
            self._changes.clear()

    def decide(
        self,
        *,
        epoch: int,
        value: float,
        earlier: Iterable[JobHistory],
        job: JobHistory | None = None,
        others: Iterable[JobHistory] = (),
    ) -> Verdict:
        everyone = others if isinstance(others, Sequence) else list(others)
        if job is None or not everyone:  # a one-off question: the earlier jobs as given
            # step 1: P = earlier jobs with a (usable) value at this epoch; step 2: their r_j(e)
            averages = [h.running_average(epoch) for h in earlier if h.usable_at(epoch)]
            averages.sort()
        else:  # the engine's: every job in `others`, kept up to date through `changed`
            averages = self._view(epoch, job.order, everyone).sorted
        return self.decide_sorted(epoch=epoch, value=value, averages=averages)

    def _view(self, epoch: int, cutoff: int, histories: Sequence[JobHistory]) -> AveragesAtEpoch:
        key = (epoch, cutoff)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= MAX_VIEWS:
                self._views.clear()
                self._changes.clear()
            self._population = len(histories)
            view = AveragesAtEpoch(epoch, cutoff, histories)
            view.position = len(self._changes)
            self._views[key] = view
            return view
        changes = self._changes
        for history in changes[view.position :]:
            view.update(history)
        view.position = len(changes)
        return view

    def decide_sorted(self, *, epoch: int, value: float, averages: Sequence[float]) -> Verdict:
        """`decide`, given steps 1-2 done: the running averages of P, in ascending order (an
        `AveragesAtEpoch` keeps them so for a long history)."""
        n = len(averages)
        if not averages:
            return Verdict(
                False,
                None,
                0,
                compared=False,
                reason=f"no earlier job has a value at epoch {epoch}",
            )
        m = median_of_sorted(averages)  # step 3
        # step 4
        if epoch < self.start_epoch:
            why = f"epoch {epoch} is before start_epoch {self.start_epoch}"
            return Verdict(False, m, n, compared=False, reason=why)
        if n < self.min_jobs:
            why = f"only {n} earlier job{'s' if n != 1 else ''} at epoch {epoch}, min_jobs {self.min_jobs}"
            return Verdict(False, m, n, compared=False, reason=why)
        stop = is_worse(as_rule_value(value, self.direction), m, self.direction)
        relation = "worse" if stop else "not worse"
        why = f"at epoch {epoch}, {value:.4g} is {relation} than the median {m:.4g} of {n} earlier jobs"
        return Verdict(stop, m, n, reason=why)


class AveragesAtEpoch:
    """Steps 1-2 of the rule kept up to date: at one epoch, the running averages of the usable
    jobs launched before `cutoff` (a launch order), in ascending order.

    With 10,000 earlier jobs, recomputing them for every decision costs milliseconds; instead
    `update` is told each history that changed since, and moves only its entry (a bisect).
    """

    __slots__ = ("cutoff", "epoch", "included", "position", "sorted")

    def __init__(self, epoch: int, cutoff: int, histories: Iterable[JobHistory]) -> None:
        self.epoch = epoch
        self.cutoff = cutoff
        self.included: dict[JobHistory, float] = {
            h: h.running_average(epoch)
            for h in histories
            if h.order < cutoff and h.usable_at(epoch)
        }
        self.sorted: list[float] = sorted(self.included.values())
        self.position = 0  # how much of the engine's change log is applied

    def update(self, history: JobHistory) -> None:
        """Bring one changed (or new) history's entry up to date; a history whose launch order
        moved past the cutoff (the store gave it its order late) leaves the view."""
        old = self.included.pop(history, None)
        if old is not None:
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        if history.order < self.cutoff and history.usable_at(self.epoch):
            average = history.running_average(self.epoch)
            bisect.insort(self.sorted, average)
            self.included[history] = average
