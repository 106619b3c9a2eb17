"""`early_stopping.patience`: Optuna's `PatientPruner` around any rule.

The wrapped rule is asked only when the job has not improved by `min_delta` over its last
`patience` + 1 values: the best of the values before them (NaN ignored) plus `min_delta` is still
better than the best of them. Fewer than `patience` + 2 values never stop. A window whose values
are all NaN compares false (NumPy's nanmin of nothing is NaN): not patient-stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sidecar.config import ObjectiveType
from sidecar.rule import JobHistory, Rule, Verdict
from sidecar.rules.stats import nanmax, nanmin


class PatientRule:
    """A rule asked only once the job has stopped improving."""

    def __init__(
        self, wrapped: Rule, *, direction: ObjectiveType, patience: int, min_delta: float
    ) -> None:
        self.wrapped = wrapped
        self.name = f"{wrapped.name}+patience"
        self.direction = direction
        self.patience = patience
        self.min_delta = min_delta
        if hasattr(wrapped, "gate"):
            wrapped.gate = self.stalled  # successive halving derives its rungs where it was asked

    def changed(self, history: JobHistory) -> None:
        changed = getattr(self.wrapped, "changed", None)
        if changed is not None:
            changed(history)

    def stalled(self, values: Mapping[int, float]) -> bool:
        """Whether the job has not improved by `min_delta` over its last `patience` + 1 values:
        the wrapped rule is asked only then."""
        steps = sorted(values)
        if len(steps) <= self.patience + 1:
            return False
        before = [values[s] for s in steps[: -self.patience - 1]]
        after = [values[s] for s in steps[-self.patience - 1 :]]
        if self.direction is ObjectiveType.MINIMIZE:
            return nanmin(before) + self.min_delta < nanmin(after)
        return nanmax(before) - self.min_delta > nanmax(after)

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
        if len(values) <= self.patience + 1:
            why = f"{len(values)} values, patience {self.patience} needs {self.patience + 2}"
            return Verdict(False, None, 0, compared=False, reason=why)
        if not self.stalled(values):
            why = f"improved within the last {self.patience + 1} values (patience)"
            return Verdict(False, None, 0, compared=False, reason=why)
        return self.wrapped.decide(
            epoch=epoch, value=value, earlier=earlier, job=job, others=others
        )
