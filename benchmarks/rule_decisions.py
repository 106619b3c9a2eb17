"""Decision time of every rule with a long history: 1,000, 10,000 and 100,000 earlier jobs.

    .venv/bin/python benchmarks/rule_decisions.py [--jobs 1000 10000 100000] [--epochs 20]
        [--repeat 50]

For each rule, a TuningJobEngine holds that many Completed jobs with `--epochs` objective values
each (in memory, as after the daemon's start-up restore); a new job then reports a value per
epoch. Printed per rule and history size: the first decision at the last epoch (caches cold for
that epoch) and the median of `--repeat` steady decisions at that epoch, in milliseconds. Target
(docs/design.md, "Performance targets"): <= 1 ms with 10,000 earlier jobs, for every rule.
"""

from __future__ import annotations

import argparse
import statistics
import time

from sidecar.config import EarlyStopping, Objective, ObjectiveType
from sidecar.engine import TuningJobEngine
from sidecar.model import JobStatus, Sample

RULES: dict[str, dict[str, object]] = {
    "sagemaker": {},
    "optuna-median": {"optuna": {"n_startup_trials": 5}},
    "optuna-percentile": {"optuna": {"percentile": 25}},
    # rungs at epochs 5, 10 and 20: the last epoch compares at a rung
    "optuna-successive-halving": {"optuna": {"min_resource": 5, "reduction_factor": 2}},
    "optuna-threshold": {"optuna": {"upper": 10.0}},
    "katib-median": {},
}


def engine_with(rule: str, jobs: int, epochs: int) -> TuningJobEngine:
    settings = EarlyStopping.model_validate({"rule": rule, **RULES[rule]})
    objective = Objective(metric="val_loss", type=ObjectiveType.MINIMIZE)
    engine = TuningJobEngine("bench", objective, settings)
    for j in range(jobs):
        values = [(e, 1.0 + ((j * 7919 + e * 104729) % 1000) / 1000) for e in range(1, epochs + 1)]
        engine.restore(f"job-{j}", j + 1, JobStatus.COMPLETED, values, None)
    return engine


def measure(rule: str, jobs: int, epochs: int, repeat: int) -> tuple[float, float]:
    engine = engine_with(rule, jobs, epochs)
    engine.register("new", jobs + 1)
    for e in range(1, epochs):
        engine.observe("new", [Sample("val_loss", e, 0.0)])  # better than all: never stopped
    t0 = time.perf_counter()
    engine.observe("new", [Sample("val_loss", epochs, 0.0)])
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        engine.observe("new", [Sample("val_loss", epochs, 0.0)])  # the same epoch again
        times.append(time.perf_counter() - t0)
    return first * 1e3, statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    print(
        f"decision time, ms (first / steady median of {args.repeat}), {args.epochs} epochs per job"
    )
    print(f"{'rule':<28}" + "".join(f"{n:>22,}" for n in args.jobs))
    for rule in RULES:
        cells = []
        for jobs in args.jobs:
            first, steady = measure(rule, jobs, args.epochs, args.repeat)
            cells.append(f"{first:9.3f} / {steady:7.3f}")
        print(f"{rule:<28}" + "".join(f"{c:>22}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
