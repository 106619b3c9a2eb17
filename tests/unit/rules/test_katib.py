"""`katib-median` against an independent recomputation of Katib's medianstop, on random sweeps.

The reference follows Katib's own code, at the commits read for it:
- kubeflow/katib pkg/earlystopping/v1beta1/medianstop/service.py
  (0e2ba6efc1bc18b1d1d72b90046598a00f02a2c3): `get_median_value` — per Succeeded trial the
  `metric_sum += float(...)` average of its first `start_step` logs, then
  `sum(averages) / len(averages)` once `min_trials_required` trials succeeded; the rule's
  comparison is LESS for maximize, GREATER for minimize.
- kubeflow/katib pkg/metricscollector/v1beta1/file-metricscollector/rules.go
  (87e2bd88acb7369dc1ae46257af6b0800bf22a16): `objPruner` keeps the best value so far (NaN until
  the first value, then replaced only by a strictly better one) and `basicPruner` counts reports,
  comparing from the `start_step`-th on.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import validate_config
from sidecar.replay import replay
from sidecar.store import open_store
from tests.unit.rules.test_optuna_differential import curve

SWEEPS = 400


def katib_reference(
    curves: list[list[tuple[int, float]]], maximize: bool, min_trials: int, start_step: int
) -> dict[int, int]:
    """Jobs run one after another; each gets its rule from the trials succeeded before it."""
    averages: list[float] = []  # trials_avg_history, in the order trials succeeded
    stops: dict[int, int] = {}
    for j, values in enumerate(curves):
        target = sum(averages) / len(averages) if len(averages) >= min_trials else None
        optimal = math.nan
        stopped_at = None
        for step, (epoch, v) in enumerate(values, 1):
            if math.isnan(optimal) or (maximize and v > optimal) or (not maximize and v < optimal):
                optimal = v
            if target is None or step < start_step:
                continue
            if (optimal < target) if maximize else (optimal > target):
                stopped_at = epoch  # the decision names the epoch of that report
                break
        if stopped_at is not None:
            stops[j] = stopped_at
            continue
        if values:
            metric_sum = 0.0
            first = [v for _, v in values[:start_step]]
            for x in first:
                metric_sum += x
            averages.append(metric_sum / len(first))
    return stops


def sidecar_stops(
    tmp: Path, curves: list[list[tuple[int, float]]], direction: str, katib: dict[str, Any]
) -> dict[int, int]:
    folder = tmp / f"sweep-{random.random():.12f}"
    folder.mkdir()
    logs = []
    for j, values in enumerate(curves):
        path = folder / f"job-{j:03d}.log"
        path.write_text("".join(f"epoch {e} val={v!r}\n" for e, v in values))
        logs.append(path)
    config = validate_config(
        {
            "objective": {"metric": "val", "type": direction},
            "metric_definitions": [{"Name": "val", "Regex": r"val=(\S+)"}],
            "epoch": {"regex": r"^epoch (\d+)"},
            "early_stopping": {"rule": "katib-median", "katib": katib},
        }
    )
    result = replay(config, logs, open_store("sqlite://:memory:"))
    return {
        int(job["job"].split("-")[1]): job["decision"]["epoch"]
        for job in result.document["jobs"]
        if job["status"] == "Stopped"
    }


def test_replay_stops_the_jobs_katibs_medianstop_stops(tmp_path: Path) -> None:
    rng = random.Random("katib")
    stopped, mismatches = 0, []
    for sweep in range(SWEEPS):
        curves = [curve(rng) for _ in range(rng.randint(1, 10))]
        direction = rng.choice(["Minimize", "Maximize"])
        katib = {"min_trials_required": rng.choice([1, 2, 3]), "start_step": rng.choice([1, 2, 4])}
        expected = katib_reference(
            curves, direction == "Maximize", katib["min_trials_required"], katib["start_step"]
        )
        got = sidecar_stops(tmp_path, curves, direction, katib)
        stopped += len(expected)
        if got != expected:
            mismatches.append((sweep, direction, katib, curves, expected, got))
    print(f"\nkatib-median: {SWEEPS} sweeps, {stopped} stops, {len(mismatches)} mismatches")
    assert not mismatches, mismatches[:3]
    assert stopped > 0


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"rule": "optuna-percentile"}, "optuna.percentile"),
        ({"rule": "optuna-threshold"}, "optuna.lower"),
        ({"rule": "optuna-threshold", "optuna": {"lower": 2, "upper": 1}}, "optuna.lower"),
        ({"rule": "katib-median", "katib": {"start_step": 0}}, "start_step"),
        ({"rule": "optuna-median", "optuna": {"interval_steps": 0}}, "interval_steps"),
        ({"rule": "optuna-median", "optuna": {"n_startup_trial": 1}}, "n_startup_trial"),
        ({"rule": "hyperband"}, "rule"),
    ],
)
def test_a_wrong_rule_block_names_the_field(block: dict[str, Any], field: str) -> None:
    from sidecar.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        validate_config({"objective": {"metric": "val"}, "early_stopping": block})
    assert field in str(caught.value)
