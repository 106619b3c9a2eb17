"""The median rule (docs/design.md, "The median rule"), table-driven, including the worked example."""

from __future__ import annotations

import math

import pytest

from sidecar.config import ObjectiveType
from sidecar.rule import JobHistory, SageMakerMedianRule, median, running_average_of

MIN = ObjectiveType.MINIMIZE
MAX = ObjectiveType.MAXIMIZE
NAN = math.nan
INF = math.inf


def history(
    order: int, values: list[float], direction: ObjectiveType = MIN, stop: int | None = None
) -> JobHistory:
    job = JobHistory(order, direction)
    for epoch, value in enumerate(values, 1):
        job.set_value(epoch, value)
    job.stop_epoch = stop
    return job


def decide(
    value: float,
    epoch: int,
    earlier: list[JobHistory],
    *,
    direction: ObjectiveType = MIN,
    min_jobs: int = 1,
    start_epoch: int = 1,
) -> tuple[bool, float | None, int]:
    rule = SageMakerMedianRule(direction=direction, min_jobs=min_jobs, start_epoch=start_epoch)
    verdict = rule.decide(epoch=epoch, value=value, earlier=earlier)
    return verdict.stop, verdict.median, verdict.compared_jobs


class TestMedian:
    @pytest.mark.parametrize(
        ("values", "expected"),
        [
            ([1.0], 1.0),
            ([3.0, 1.0, 2.0], 2.0),
            ([1.0, 0.9], 0.95),
            ([4.0, 1.0, 3.0, 2.0], 2.5),
            ([1.0, INF], INF),
            ([INF, INF], INF),
            ([1e308, 1e308], 1e308),
        ],
    )
    def test_median_is_middle_or_mean_of_two_middles(
        self, values: list[float], expected: float
    ) -> None:
        """The median of an odd count is the middle value, of an even count the mean of the two middle ones."""
        assert median(values) == expected


class TestRunningAverage:
    def test_running_average_is_mean_of_values_up_to_the_epoch(self) -> None:
        """r_j(e) averages the job's values at epochs 1..e only."""
        job = history(1, [1.0, 0.8, 0.6])
        assert job.running_average(1) == 1.0
        assert job.running_average(2) == pytest.approx(0.9)
        assert job.running_average(3) == pytest.approx(0.8)

    def test_replacing_an_epoch_value_updates_later_averages(self) -> None:
        """A repeated epoch replaces the earlier value, and cached averages follow."""
        job = history(1, [1.0, 0.8, 0.6])
        assert job.running_average(3) == pytest.approx(0.8)
        job.set_value(2, 0.2)
        assert job.running_average(3) == pytest.approx(0.6)
        assert job.running_average(1) == 1.0

    @pytest.mark.parametrize(("direction", "worst"), [(MIN, INF), (MAX, -INF)])
    def test_non_finite_values_count_as_worst(self, direction: ObjectiveType, worst: float) -> None:
        """NaN and infinities (either sign) in a running average count as the worst value."""
        for bad in (NAN, INF, -INF):
            job = history(1, [1.0, bad], direction)
            assert job.running_average(2) == worst
            assert running_average_of([1.0, bad], direction) == worst


# (value, epoch, earlier histories, options) -> (stop, median, compared)
CASES = [
    pytest.param(
        1.2, 1, [[1.0, 0.8, 0.6], [0.9, 0.7, 0.5]], {}, (True, 0.95, 2), id="worked-example-C"
    ),
    pytest.param(
        1.1, 1, [[1.0, 0.8, 0.6], [0.9, 0.7, 0.5], [1.2]], {}, (True, 1.0, 3), id="worked-example-D"
    ),
    pytest.param(0.95, 1, [[1.0], [0.9]], {}, (False, 0.95, 2), id="tie-is-not-worse"),
    pytest.param(0.94, 1, [[1.0], [0.9]], {}, (False, 0.95, 2), id="better-than-median"),
    pytest.param(
        1.2, 1, [[1.0], [0.9]], {"min_jobs": 3}, (False, 0.95, 2), id="min-jobs-not-reached"
    ),
    pytest.param(
        1.2, 1, [[1.0], [0.9], [1.1]], {"min_jobs": 3}, (True, 1.0, 3), id="min-jobs-reached"
    ),
    pytest.param(
        5.0, 1, [[1.0], [0.9]], {"start_epoch": 2}, (False, 0.95, 2), id="before-start-epoch"
    ),
    pytest.param(
        5.0, 2, [[1.0, 1.0], [0.9, 0.9]], {"start_epoch": 2}, (True, 0.95, 2), id="at-start-epoch"
    ),
    pytest.param(NAN, 1, [[1.0], [0.9]], {}, (True, 0.95, 2), id="nan-value-is-worst"),
    pytest.param(INF, 1, [[1.0], [0.9]], {}, (True, 0.95, 2), id="inf-value-is-worst"),
    pytest.param(
        -INF, 1, [[1.0], [0.9]], {}, (True, 0.95, 2), id="minus-inf-is-worst-when-minimizing"
    ),
    pytest.param(
        2.0,
        1,
        [[NAN], [NAN], [1.0]],
        {},
        (False, INF, 3),
        id="diverged-earlier-jobs-pull-median-to-keep-going",
    ),
    pytest.param(INF, 1, [[INF]], {}, (False, INF, 1), id="worst-equal-to-worst-is-not-worse"),
    pytest.param(
        0.5, 1, [[0.8], [0.9]], {"direction": MAX}, (True, 0.85, 2), id="maximize-lower-is-worse"
    ),
    pytest.param(0.75, 1, [[0.5], [1.0]], {"direction": MAX}, (False, 0.75, 2), id="maximize-tie"),
    pytest.param(NAN, 1, [[0.8]], {"direction": MAX}, (True, 0.8, 1), id="maximize-nan-is-worst"),
    pytest.param(
        0.9,
        3,
        [[1.0, 0.8, 0.6], [0.9, 0.7]],
        {},
        (True, 0.8, 1),
        id="only-jobs-with-a-value-at-the-epoch",
    ),
    pytest.param(
        0.7,
        2,
        [[1.0, 0.8, 0.6], [0.9, 0.7]],
        {},
        (False, 0.85, 2),
        id="different-lengths-at-epoch-2",
    ),
    pytest.param(0.7, 1, [], {}, (False, None, 0), id="no-earlier-jobs"),
]


class TestSageMakerMedianRule:
    @pytest.mark.parametrize(("value", "epoch", "earlier", "options", "expected"), CASES)
    def test_decides_as_design_section_2(
        self,
        value: float,
        epoch: int,
        earlier: list[list[float]],
        options: dict[str, object],
        expected: tuple[bool, float | None, int],
    ) -> None:
        """Stop iff epoch >= start_epoch, |P| >= min_jobs and the value is strictly worse than the median."""
        direction = options.get("direction", MIN)
        assert isinstance(direction, ObjectiveType)
        jobs = [history(i, vals, direction) for i, vals in enumerate(earlier, 1)]
        stop, med, compared = decide(
            value,
            epoch,
            jobs,
            direction=direction,
            min_jobs=int(options.get("min_jobs", 1)),  # type: ignore[call-overload]
            start_epoch=int(options.get("start_epoch", 1)),  # type: ignore[call-overload]
        )
        assert (stop, compared) == (expected[0], expected[2])
        if expected[1] is None:
            assert med is None
        else:
            assert med == pytest.approx(expected[1])

    def test_values_after_a_stop_decision_are_never_used(self) -> None:
        """A job stopped at epoch 1 has no usable value at epoch 2, even if it logged one."""
        stopped = history(1, [1.0, 0.1, 0.1], stop=1)
        finished = history(2, [1.0, 0.9, 0.8])
        stop, med, compared = decide(0.95, 2, [stopped, finished])
        assert compared == 1
        assert med == pytest.approx(0.95)  # finished's r(2) only
        assert stop is False
        stop, _, compared = decide(0.96, 2, [stopped, finished])
        assert (stop, compared) == (True, 1)

    def test_stop_epoch_value_itself_is_used(self) -> None:
        """The value that triggered a stop is part of that job's history at its stop epoch."""
        stopped = history(1, [1.0, 2.0], stop=2)
        _, med, compared = decide(0.5, 2, [stopped])
        assert compared == 1
        assert med == pytest.approx(1.5)
