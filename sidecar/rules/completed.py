"""The Completed jobs' values by epoch, kept up to date as histories change: what Optuna's
percentile rules compare with, without a pass over every job per decision."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

from sidecar.model import JobStatus
from sidecar.rule import JobHistory


class CompletedValues:
    """Per epoch: how many Completed jobs have a value there (NaN included) and their non-NaN
    values in ascending order. Built from the histories at the first question, then moved by
    `changed` (the engine calls it for every history that changes)."""

    __slots__ = ("_by_step", "built", "members")

    def __init__(self) -> None:
        self.built = False
        self.members: dict[JobHistory, dict[int, float]] = {}  # job -> its values when counted
        self._by_step: dict[int, tuple[list[float], list[int]]] = {}  # step -> (sorted, [count])

    def build(self, histories: Iterable[JobHistory]) -> None:
        for h in histories:
            if h.status is JobStatus.COMPLETED:
                self.members[h] = dict(h.values)
        self.built = True

    @property
    def count(self) -> int:
        """How many jobs are Completed."""
        return len(self.members)

    def at(self, step: int) -> tuple[list[float], int]:
        """(the non-NaN values at `step`, ascending; how many values there, NaN included)."""
        cached = self._by_step.get(step)
        if cached is None:
            found = [v[step] for v in self.members.values() if step in v]
            ordered = sorted(x for x in found if not math.isnan(x))
            cached = (ordered, [len(found)])
            self._by_step[step] = cached
        return cached[0], cached[1][0]

    def changed(self, history: JobHistory) -> None:
        if not self.built:
            return
        old = self.members.pop(history, None)
        if old is not None:
            self._move(old, -1)
        if history.status is JobStatus.COMPLETED:
            values = dict(history.values)
            self.members[history] = values
            self._move(values, +1)

    def _move(self, values: dict[int, float], sign: int) -> None:
        for step, (ordered, count) in self._by_step.items():
            if step not in values:
                continue
            count[0] += sign
            v = values[step]
            if math.isnan(v):
                continue
            if sign > 0:
                bisect.insort(ordered, v)
            else:
                del ordered[bisect.bisect_left(ordered, v)]
