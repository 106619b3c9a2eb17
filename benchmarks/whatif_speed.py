"""How long `sidecar whatif` takes: candidates x orders over a sweep, the replays only (the logs
are parsed once, before).

    .venv/bin/python benchmarks/whatif_speed.py [--candidates 100] [--orders 20] [--jobs 30]
        [--epochs 50]

The candidates cycle through the six rules with varied parameters; the curves are seeded noisy
decays. Prints the wall time and the time per replay (one candidate in one order).
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from sidecar.config import EarlyStopping, Objective
from sidecar.whatif import Curve, run_all


def candidates(n: int) -> list[EarlyStopping]:
    blocks: list[dict[str, Any]] = []
    k = 0
    while len(blocks) < n:
        k += 1
        blocks += [
            {"min_jobs": 1 + k % 5, "start_epoch": 1 + k % 4},
            {"rule": "optuna-median", "optuna": {"n_startup_trials": k % 6}},
            {"rule": "optuna-percentile", "optuna": {"percentile": 10 + k % 80}},
            {"rule": "optuna-successive-halving", "optuna": {"reduction_factor": 2 + k % 3}},
            {"rule": "optuna-threshold", "optuna": {"upper": 1.0 + k / 10}},
            {"rule": "katib-median", "katib": {"start_step": 1 + k % 5}},
        ]
    return [EarlyStopping.model_validate(b) for b in blocks[:n]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    rng = random.Random(0)
    curves = [
        Curve(
            f"job-{j}",
            tuple(
                (e, 1.0 / (e * (0.5 + rng.random())) + rng.random() * 0.05)
                for e in range(1, args.epochs + 1)
            ),
        )
        for j in range(args.jobs)
    ]
    cands = candidates(args.candidates)
    t0 = time.perf_counter()
    run_all(cands, Objective(metric="val_loss"), curves, order_count=args.orders, seed=0, top=3)
    wall = time.perf_counter() - t0
    replays = len(cands) * args.orders
    print(
        f"whatif: {len(cands)} candidates x {args.orders} orders over {args.jobs} jobs of "
        f"{args.epochs} epochs: {wall:.1f} s ({wall / replays * 1e3:.1f} ms per replay)"
    )


if __name__ == "__main__":
    main()
