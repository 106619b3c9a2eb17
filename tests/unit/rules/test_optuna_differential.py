"""The Optuna rules against Optuna's own pruners: the same random sweeps through an in-memory
study and through `replay`, the same jobs stopped at the same epochs (docs/rules.md).

Each sweep's jobs run one after another, as `replay` runs them: in Optuna each job is a trial,
`trial.report(value, step=epoch)` then `should_prune()` after every epoch; a pruned trial ends
PRUNED, the others COMPLETE. Curves mix shapes, ties, NaN and infinities, lengths differ, both
directions, random parameters. The counts are printed (`pytest -s`) for the closing note.
"""

from __future__ import annotations

import math
import random
import warnings
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from sidecar.config import validate_config  # noqa: E402
from sidecar.replay import replay  # noqa: E402
from sidecar.store import open_store  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
SWEEPS = 400  # per rule, and again with patience around it

SPECIAL = [math.nan, math.inf, -math.inf]


def curve(rng: random.Random) -> list[tuple[int, float]]:
    """(epoch, value) pairs in report order; now and then with epochs skipped (a job that
    validates every few epochs), so several rungs or intervals are passed at once."""
    length = rng.randint(1, 9)
    shape = rng.choice(["decay", "flat", "noisy", "ties", "special"])
    base = rng.choice([0.5, 1.0, 2.0])
    values = []
    for e in range(1, length + 1):
        if shape == "decay":
            v = base / e + rng.random() * 0.1
        elif shape == "flat":
            v = base
        elif shape == "ties":
            v = rng.choice([0.25, 0.5, 0.75])
        elif shape == "special" and rng.random() < 0.3:
            v = rng.choice(SPECIAL)
        else:
            v = rng.random() * base
        values.append(round(v, 3) if math.isfinite(v) else v)
    if rng.random() < 0.3:
        epochs = sorted(rng.sample(range(1, 3 * length + 1), length))
    else:
        epochs = list(range(1, length + 1))
    return list(zip(epochs, values, strict=True))


def params(rule: str, rng: random.Random) -> dict[str, Any]:
    if rule == "optuna-successive-halving":
        p: dict[str, Any] = {
            "min_resource": rng.choice(["auto", 1, 1, 2]),
            "reduction_factor": rng.choice([2, 2, 3, 4]),
            "min_early_stopping_rate": rng.choice([0, 0, 1]),
        }
        if p["min_resource"] != "auto":
            p["bootstrap_count"] = rng.choice([0, 0, 1, 3])
        return p
    if rule == "optuna-threshold":
        lower, upper = rng.choice([(0.2, None), (None, 0.8), (0.1, 0.9), (0.5, 0.5)])
        p = {"lower": lower, "upper": upper}
    else:
        p = {
            "n_startup_trials": rng.choice([0, 1, 2, 5]),
            "n_min_trials": rng.choice([1, 2, 3]),
        }
        if rule == "optuna-percentile":
            p["percentile"] = rng.choice([10.0, 25.0, 50.0, 75.0, 90.0, 33.3])
    p["n_warmup_steps"] = rng.choice([0, 0, 1, 3])
    p["interval_steps"] = rng.choice([1, 1, 2, 3])
    return p


def pruner(rule: str, p: dict[str, Any]) -> Any:
    pr = optuna.pruners
    if rule == "optuna-median":
        return pr.MedianPruner(
            n_startup_trials=p["n_startup_trials"],
            n_warmup_steps=p["n_warmup_steps"],
            interval_steps=p["interval_steps"],
            n_min_trials=p["n_min_trials"],
        )
    if rule == "optuna-percentile":
        return pr.PercentilePruner(
            p["percentile"],
            n_startup_trials=p["n_startup_trials"],
            n_warmup_steps=p["n_warmup_steps"],
            interval_steps=p["interval_steps"],
            n_min_trials=p["n_min_trials"],
        )
    if rule == "optuna-successive-halving":
        return pr.SuccessiveHalvingPruner(**p)
    return pr.ThresholdPruner(
        lower=p["lower"],
        upper=p["upper"],
        n_warmup_steps=p["n_warmup_steps"],
        interval_steps=p["interval_steps"],
    )


def optuna_stops(
    curves: list[list[tuple[int, float]]], direction: str, the_pruner: Any
) -> tuple[dict[int, int], int]:
    """{job index: stop epoch} from a real study, and how many should_prune() calls it made."""
    study = optuna.create_study(direction=direction.lower(), pruner=the_pruner)
    stops: dict[int, int] = {}
    calls = 0
    with warnings.catch_warnings():
        # NumPy warns of inf - inf and all-NaN slices inside Optuna's pruners: expected here
        warnings.simplefilter("ignore", RuntimeWarning)
        run_study(study, curves, stops)
    calls = sum(
        len([e for e, _ in c if j not in stops or e <= stops[j]]) for j, c in enumerate(curves)
    )
    return stops, calls


def run_study(study: Any, curves: list[list[tuple[int, float]]], stops: dict[int, int]) -> None:
    for j, values in enumerate(curves):
        trial = study.ask()
        for epoch, v in values:
            trial.report(v, step=epoch)
            if trial.should_prune():
                stops[j] = epoch
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, 0.0)  # the objective's final value plays no part in pruning


def sidecar_stops(
    tmp: Path,
    curves: list[list[tuple[int, float]]],
    direction: str,
    rule: str,
    block: dict[str, Any],
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
            "tuning_job": "t",
            "objective": {"metric": "val", "type": direction},
            "metric_definitions": [{"Name": "val", "Regex": r"val=(\S+)"}],
            "epoch": {"regex": r"^epoch (\d+)"},
            "early_stopping": {"rule": rule, **block},
        }
    )
    result = replay(config, logs, open_store("sqlite://:memory:"))
    return {
        int(job["job"].split("-")[1]): job["decision"]["epoch"]
        for job in result.document["jobs"]
        if job["status"] == "Stopped"
    }


def patient(the_pruner: Any, patience: int, min_delta: float) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.PatientPruner(the_pruner, patience=patience, min_delta=min_delta)


@pytest.mark.parametrize("with_patience", [False, True], ids=["plain", "patience"])
@pytest.mark.parametrize(
    "rule",
    ["optuna-median", "optuna-percentile", "optuna-successive-halving", "optuna-threshold"],
)
def test_replay_stops_the_jobs_optuna_prunes(
    tmp_path: Path, rule: str, with_patience: bool
) -> None:
    rng = random.Random(f"{rule}-{with_patience}")
    compared = stopped = 0
    mismatches = []
    for sweep in range(SWEEPS):
        curves = [curve(rng) for _ in range(rng.randint(1, 10))]
        direction = rng.choice(["Minimize", "Maximize"])
        p = params(rule, rng)
        the_pruner = pruner(rule, p)
        block: dict[str, Any] = {"optuna": p}
        if with_patience:
            patience, min_delta = rng.choice([0, 1, 2]), rng.choice([0.0, 0.0, 0.05])
            the_pruner = patient(the_pruner, patience, min_delta)
            block["patience"] = {"patience": patience, "min_delta": min_delta}
        expected, calls = optuna_stops(curves, direction, the_pruner)
        got = sidecar_stops(tmp_path, curves, direction, rule, block)
        compared += calls
        stopped += len(expected)
        if got != expected:
            mismatches.append((sweep, direction, p, curves, expected, got))
    print(
        f"\n{rule}{' + patience' if with_patience else ''}: {SWEEPS} sweeps, "
        f"{compared} decisions compared, {stopped} stops, {len(mismatches)} mismatches"
    )
    assert not mismatches, mismatches[:3]
    assert stopped > 0  # the comparison is not vacuous
