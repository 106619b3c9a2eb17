"""`sidecar whatif`: every figure recomputed independently (stops from `replay`, the rest by
hand), the recommendation, the edge cases, and a golden document on a shipped sample sweep."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.config import Config, EarlyStopping, validate_config
from sidecar.replay import replay
from sidecar.store import open_store
from sidecar.whatif import Curve, orders, recommended, run_all
from sidecar.whatif_report import candidates_from, load_curves

SAMPLE = Path(__file__).resolve().parents[2] / "sample_logs"
GOLDEN_ARGS = [
    "--grid",
    "rule=sagemaker,optuna-median,katib-median",
    "--grid",
    "min_jobs=1,2",
    "--orders",
    "5",
]


def make_config(direction: str, block: dict[str, Any]) -> Config:
    return validate_config(
        {
            "tuning_job": "w",
            "objective": {"metric": "val", "type": direction},
            "metric_definitions": [{"Name": "val", "Regex": r"val=(\S+)"}],
            "epoch": {"regex": r"^epoch (\d+)"},
            "early_stopping": block,
        }
    )


def write(folder: Path, curves: list[list[float]], names: list[str]) -> list[Path]:
    paths = []
    for name, values in zip(names, curves, strict=True):
        path = folder / f"{name}.log"
        path.write_text("".join(f"epoch {e} val={v!r}\n" for e, v in enumerate(values, 1)))
        paths.append(path)
    return paths


def reference(
    curves: list[list[float]], direction: str, block: dict[str, Any], n_orders: int, top: int
) -> dict[str, float]:
    """The figures from `replay` on each order's logs, averaged by hand."""
    minimize = direction == "Minimize"
    worst = math.inf if minimize else -math.inf

    def final(c: list[float]) -> float:
        return c[-1] if c and not math.isnan(c[-1]) else worst

    key = [((final(c) if minimize else -final(c)), i) for i, c in enumerate(curves)]
    ranked = [i for _, i in sorted(key)]
    best, top_set = ranked[0], set(ranked[:top])
    names = [f"job{i}" for i in range(len(curves))]
    total = sum(len(c) for c in curves)
    sums = {"stopped": 0.0, "run": 0.0, "kept": 0.0, "topk": 0.0, "regret": 0.0}
    for perm in orders(len(curves), n_orders, 0):
        with tempfile.TemporaryDirectory() as d:
            logs = write(Path(d), [curves[i] for i in perm], [names[i] for i in perm])
            doc = replay(
                make_config(direction, block), logs, open_store("sqlite://:memory:")
            ).document
        stopped = {
            int(j["job"][3:]): j["decision"]["epoch"]
            for j in doc["jobs"]
            if j["status"] == "Stopped"
        }
        sums["stopped"] += len(stopped)
        sums["run"] += sum(stopped.get(i, len(c)) for i, c in enumerate(curves))
        sums["kept"] += best not in stopped
        sums["topk"] += len(top_set - set(stopped))
        left = [final(c) for i, c in enumerate(curves) if i not in stopped]
        best_left = (min if minimize else max)(left) if left else None
        if best_left is None:
            sums["regret"] += math.inf
        elif best_left == final(curves[best]):
            sums["regret"] += 0.0
        else:
            sums["regret"] += abs(final(curves[best]) - best_left)
    n = n_orders
    return {
        "stopped_jobs": sums["stopped"] / n,
        "epochs_run": sums["run"] / n,
        "epochs_total": float(total),
        "saved_fraction": 1 - (sums["run"] / n) / total,
        "best_kept": sums["kept"] / n,
        "regret": sums["regret"] / n,
        "top_k_kept": sums["topk"] / n,
    }


VALUES = st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0, 2.0, math.nan])
BLOCKS = [
    {"min_jobs": 1},
    {"min_jobs": 2, "start_epoch": 2},
    {"rule": "optuna-median", "optuna": {"n_startup_trials": 1}},
    {"rule": "katib-median", "katib": {"min_trials_required": 1, "start_step": 1}},
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    curves=st.lists(st.lists(VALUES, min_size=1, max_size=5), min_size=1, max_size=5),
    direction=st.sampled_from(["Minimize", "Maximize"]),
    n_orders=st.integers(1, 3),
)
def test_every_figure_matches_a_recomputation_from_replay(
    curves: list[list[float]], direction: str, n_orders: int
) -> None:
    config = make_config(direction, {})
    candidates = [EarlyStopping.model_validate(b) for b in BLOCKS]
    data = [Curve(f"job{i}", tuple(enumerate(c, 1))) for i, c in enumerate(curves)]
    outcomes, _ = run_all(candidates, config.objective, data, order_count=n_orders, seed=0, top=2)
    for block, outcome in zip(BLOCKS, outcomes, strict=True):
        expected = reference(curves, direction, block, n_orders, 2)
        got = outcome.doc()
        for key, value in expected.items():
            shown = got[key] if got[key] is not None else math.inf
            assert shown == pytest.approx(value), (key, block)


def outcome(saved: float, kept: float, regret: float) -> Any:
    from sidecar.whatif import Outcome

    return Outcome({}, 0, 0, 0, saved, kept, regret, 0)


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (
            [outcome(0.2, 1, 0), outcome(0.5, 1, 0), outcome(0.9, 0.5, 0.1)],
            1,
        ),  # most saved, best kept
        ([outcome(0.5, 1, 0), outcome(0.5, 1, 0)], 0),  # ties: the earlier
        (
            [outcome(0.9, 0.5, 0.3), outcome(0.4, 0.8, 0.1), outcome(0.6, 0.2, 0.1)],
            2,
        ),  # none keeps it
        ([outcome(0.9, 0.5, math.inf), outcome(0.1, 0.5, 2.0)], 1),
    ],
)
def test_the_recommendation_follows_the_stated_order(outcomes: list[Any], expected: int) -> None:
    assert recommended(outcomes) == expected


def test_a_single_job_is_its_own_best_and_nothing_is_saved() -> None:
    config = make_config("Minimize", {})
    out, best = run_all(
        [config.early_stopping],
        config.objective,
        [Curve("only", ((1, 0.5), (2, 0.4)))],
        order_count=3,
        seed=0,
        top=3,
    )
    assert out[0].doc() | {"early_stopping": None} == {
        "early_stopping": None,
        "stopped_jobs": 0.0,
        "epochs_run": 2.0,
        "epochs_total": 2.0,
        "saved_fraction": 0.0,
        "best_kept": 1.0,
        "regret": 0.0,
        "top_k_kept": 1.0,
    }
    assert best == 0


def test_when_every_candidate_stops_the_best_job_the_least_regret_wins() -> None:
    """The best job starts badly (launched last), so every greedy rule stops it."""
    config = make_config("Minimize", {})
    curves = [
        Curve("a", ((1, 0.5), (2, 0.4), (3, 0.35))),
        Curve("b", ((1, 0.6), (2, 0.5), (3, 0.45))),
        Curve("late", ((1, 2.0), (2, 1.0), (3, 0.1))),
    ]
    candidates = [
        EarlyStopping.model_validate({"min_jobs": 1}),
        EarlyStopping.model_validate({"min_jobs": 2}),
    ]
    out, best = run_all(candidates, config.objective, curves, order_count=1, seed=0, top=1)
    assert all(o.best_kept == 0 for o in out)
    assert best == min(range(2), key=lambda i: (out[i].regret, -out[i].saved_fraction, i))


def test_grid_is_the_cartesian_product_and_a_bad_value_names_the_field() -> None:
    from sidecar.errors import ConfigError

    config = make_config("Minimize", {"start_epoch": 2})
    found = candidates_from(config, ["min_jobs=1,2", "rule=sagemaker,optuna-median"], None)
    assert [(c.min_jobs, c.rule, c.start_epoch) for c in found] == [
        (1, "sagemaker", 2),
        (1, "optuna-median", 2),
        (2, "sagemaker", 2),
        (2, "optuna-median", 2),
    ]
    with pytest.raises(ConfigError, match="min_jobs"):
        candidates_from(config, ["min_jobs=0"], None)


def test_rules_file_adds_blocks(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("- {rule: optuna-percentile, optuna: {percentile: 25}}\n- {min_jobs: 5}\n")
    found = candidates_from(make_config("Minimize", {}), [], rules)
    assert [c.rule for c in found] == ["sagemaker", "optuna-percentile", "sagemaker"]
    assert found[1].optuna.percentile == 25 and found[2].min_jobs == 5


def test_curves_are_parsed_once_from_the_logs(tmp_path: Path) -> None:
    logs = write(tmp_path, [[0.5, math.nan], [0.3]], ["a", "b"])
    curves = load_curves(make_config("Minimize", {}), logs)
    assert [c.name for c in curves] == ["a", "b"]
    assert curves[0].values[0] == (1, 0.5) and math.isnan(curves[0].values[1][1])


def whatif_json(suite: str, *args: str) -> dict[str, Any]:
    logs = sorted((SAMPLE / suite).glob("*.log"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar",
            "whatif",
            "-c",
            str(SAMPLE / suite / "config.yaml"),
            *args,
            "--json",
            *map(str, logs),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar off a terminal, nothing but the result
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_whatif_json_on_the_keras_sample_sweep_is_the_golden_document() -> None:
    expected = json.loads((SAMPLE / "keras" / "expected_whatif.json").read_text())
    assert whatif_json("keras", *GOLDEN_ARGS) == expected


if __name__ == "__main__":  # regenerate the golden document: python tests/unit/test_whatif.py
    (SAMPLE / "keras" / "expected_whatif.json").write_text(
        json.dumps(whatif_json("keras", *GOLDEN_ARGS), indent=2) + "\n"
    )
