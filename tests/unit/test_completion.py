"""Sweep completion (`early_stopping.completion`): SageMaker's criteria, table-driven, and in replay."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sidecar.completion import CompletionTracker, improves
from sidecar.config import CompletionCriteria, ObjectiveType, validate_config
from sidecar.replay import replay
from sidecar.store import open_store

MIN, MAX = ObjectiveType.MINIMIZE, ObjectiveType.MAXIMIZE


@pytest.mark.parametrize(
    ("last", "best", "direction", "expected"),
    [
        (0.5, None, MIN, True),  # the first job sets the best
        (0.99, 1.0, MIN, True),  # exactly 1 % better
        (0.995, 1.0, MIN, False),  # better, but by less than 1 %
        (1.0, 1.0, MIN, False),
        (1.01, 1.0, MAX, True),
        (1.005, 1.0, MAX, False),
        (-1.02, -1.0, MIN, True),  # 1 % of the magnitude, for negative values too
        (-0.995, -1.0, MAX, False),
        (0.1, 0.0, MAX, True),  # from a best of 0 any strict improvement counts
        (0.0, 0.0, MAX, False),
        (None, 1.0, MIN, False),  # ended without a value
        (math.nan, 1.0, MIN, False),
        (-math.inf, 1.0, MIN, False),  # a diverged value never improves
    ],
)
def test_improving_means_by_at_least_one_percent(
    last: float | None, best: float | None, direction: ObjectiveType, expected: bool
) -> None:
    assert improves(last, best, direction) is expected


def test_target_objective_value_completes_at_the_first_value_that_good() -> None:
    tracker = CompletionTracker(CompletionCriteria(target_objective_value=0.9), MAX)
    assert tracker.value("a", 1, 0.5) is None
    assert tracker.value("a", 2, math.inf) is None  # not a value: never "at least as good"
    done = tracker.value("b", 3, 0.9)
    assert done is not None and done.doc() == {
        "reason": "target_objective_value",
        "job": "b",
        "at": 3,
    }
    assert tracker.value("c", 1, 0.95) is None  # complete once, for good
    assert tracker.complete == done


def test_max_jobs_not_improving_counts_jobs_in_the_order_they_ended() -> None:
    tracker = CompletionTracker(CompletionCriteria(max_jobs_not_improving=2), MIN)
    assert tracker.ended("a", (5, 1.0)) is None  # sets the best
    assert tracker.ended("b", (5, 0.995)) is None  # not 1 % better: 1 in a row
    assert tracker.ended("c", (5, 0.9)) is None  # improves: the count starts again
    assert tracker.ended("d", None) is None  # no value: 1
    done = tracker.ended("e", (7, 0.95))  # 2 in a row
    assert done is not None and (done.reason, done.job, done.at) == (
        "max_jobs_not_improving",
        "e",
        7,
    )


def write(folder: Path, curves: list[list[float]]) -> list[Path]:
    logs = []
    for j, values in enumerate(curves):
        path = folder / f"job-{j}.log"
        path.write_text("".join(f"epoch {e} val={v!r}\n" for e, v in enumerate(values, 1)))
        logs.append(path)
    return logs


def config(completion: dict[str, object]) -> object:
    return validate_config(
        {
            "objective": {"metric": "val", "type": "Minimize"},
            "metric_definitions": [{"Name": "val", "Regex": r"val=(\S+)"}],
            "epoch": {"regex": r"^epoch (\d+)"},
            "early_stopping": {"type": "Off", "completion": completion},
        }
    )


def test_replay_shows_where_the_sweep_would_have_completed(tmp_path: Path) -> None:
    logs = write(tmp_path, [[0.9, 0.8], [0.7, 0.3, 0.2], [0.5], [0.4]])
    result = replay(config({"target_objective_value": 0.3}), logs, open_store("sqlite://:memory:"))
    assert result.document["completion"] == {
        "reason": "target_objective_value",
        "job": "job-1",
        "at": 2,
        "after": 2,
    }


def test_replay_without_criteria_has_no_completion_key(tmp_path: Path) -> None:
    logs = write(tmp_path, [[0.9]])
    result = replay(config({}), logs, open_store("sqlite://:memory:"))
    assert "completion" not in result.document
