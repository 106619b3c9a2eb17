"""Successive halving's rung values, derived from a job's stored values and its stop decision."""

from __future__ import annotations

import math

import pytest

from sidecar.config import ObjectiveType
from sidecar.model import JobStatus
from sidecar.rule import JobHistory
from sidecar.rules.optuna import OptunaSuccessiveHalvingRule


def rule(**kw: int) -> OptunaSuccessiveHalvingRule:
    settings = {"reduction_factor": 2, "min_early_stopping_rate": 0, "bootstrap_count": 0}
    settings.update(kw)
    return OptunaSuccessiveHalvingRule(direction=ObjectiveType.MINIMIZE, min_resource=1, **settings)


def history(values: dict[int, float], stop: tuple[int, int] | None = None) -> JobHistory:
    h = JobHistory(1, ObjectiveType.MINIMIZE, JobStatus.RUNNING)
    h.values.update(values)
    if stop is not None:
        h.stop_epoch, h.stop_rung = stop
    return h


@pytest.mark.parametrize(
    ("values", "stop", "expected"),
    [
        ({1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6}, None, [0.9, 0.8, 0.6]),  # promotion steps 1, 2, 4
        ({1: 0.9, 5: 0.5}, None, [0.9, 0.5, 0.5]),  # step 5 climbs rungs 1 and 2 at once
        ({1: 0.9, 5: 0.5, 9: 0.4}, (5, 1), [0.9, 0.5]),  # stopped at rung 1: no rung 2, no more
        ({1: 0.9, 5: 0.5}, (5, 2), [0.9, 0.5, 0.5]),
        ({1: 0.9, 5: math.nan}, (5, 1), [0.9]),  # a NaN stops before it is recorded
        ({3: 0.7}, None, [0.7, 0.7]),  # the first report at step 3: rungs 0 and 1
    ],
)
def test_rung_values_follow_the_steps_and_the_stop(
    values: dict[int, float], stop: tuple[int, int] | None, expected: list[float]
) -> None:
    got = rule().rung_values(history(values, stop), 1, None)
    assert [v for v in got if not math.isnan(v)] == expected


def test_a_patience_gate_records_only_the_steps_it_let_through() -> None:
    r = rule()
    r.gate = lambda values: max(values) >= 3  # asked from step 3 on
    # step 3 climbs rungs 0 and 1 (promotion steps 1 and 2) at once, step 4 rung 2
    assert r.rung_values(history({1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6}), 1, None) == [0.7, 0.7, 0.6]
