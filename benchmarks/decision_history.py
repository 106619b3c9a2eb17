"""Time of one stop decision against a long shared history, SQLite and PostgreSQL (issue 5).

    .venv/bin/python benchmarks/decision_history.py [--jobs 10000] [--epochs 20]
        [--cold 10] [--repeat 200] [--postgres URL] [--no-postgres]

Builds a tuning job whose 10,000 earlier jobs each have values at epochs 1..N, in a SQLite file and
in a PostgreSQL schema of its own (SIDECAR_TEST_POSTGRES_DSN, else the local test server; the
schema is dropped afterwards). Then decides the way the daemon does (Pipeline._restore and
TuningJobEngine.observe): bring the store's history into the engine, then run the rule for a new
value at epoch N against every earlier job's running average.

- cold: a sidecar's first decision: the whole history through `changes(0)` (or `load_jobs`) into a
  fresh engine, then the rule (10,000 running averages computed).
- incremental: another node has just written one more earlier job's values; this sidecar fetches
  only that through `changes(since)` and decides again (cached averages, one new one).
- steady: nothing new anywhere: `changes(since)` answers "nothing" and the rule decides.
- SQL median (PostgreSQL only): the alternative of computing the median in the database,
  `percentile_cont(0.5)` over the running averages at the epoch, for comparison.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sidecar.config import EarlyStopping, Objective, ObjectiveType
from sidecar.engine import TuningJobEngine
from sidecar.model import Sample
from sidecar.store import Batch, Store, ValueRow, open_store

TUNING_JOB = "bench"
METRIC = "val_loss"
OBJECTIVE = Objective(metric=METRIC, type=ObjectiveType.MINIMIZE)
SETTINGS = EarlyStopping(min_jobs=3)
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def loss(rng: random.Random, epoch: int) -> float:
    return 2.0 / (1 + epoch) + rng.random()


def fill(store: Store, jobs: int, epochs: int, *, stragglers: int) -> None:
    """`jobs` complete earlier jobs, then `stragglers` registered jobs without values yet."""
    rng = random.Random(0)
    store.ensure_tuning_job(TUNING_JOB, OBJECTIVE)
    names = [f"job-{k:05d}" for k in range(jobs)]
    for start in range(0, jobs, 500):
        chunk = names[start : start + 500]
        for name in chunk:
            store.register_job(TUNING_JOB, name)
        store.apply(
            Batch(
                values=[
                    ValueRow(TUNING_JOB, name, METRIC, e, loss(rng, e))
                    for name in chunk
                    for e in range(1, epochs + 1)
                ]
            )
        )
    for k in range(stragglers):
        store.register_job(TUNING_JOB, f"late-{k:04d}")


def restore(engine: TuningJobEngine, store: Store, since: int, local: set[str]) -> int:
    """What Pipeline._restore does."""
    cursor, changed = store.changes(engine.name, METRIC, since)
    for stored in changed:
        if stored.name in local:
            continue
        engine.restore(
            stored.name, stored.order, stored.status, stored.values.get(METRIC, []), stored.decision
        )
    return cursor


def ms(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0] * 1000, ordered[0] * 1000
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return q[49] * 1000, q[98] * 1000


def bench(
    store: Store, other: Store, epochs: int, cold: int, repeat: int
) -> dict[str, list[float]]:
    """Timings (seconds) per case for one store; `other` is another node writing."""
    out: dict[str, list[float]] = {}
    epoch = epochs

    # cold, through changes(0): fresh engine, whole history, one decision
    for k in range(cold):
        engine = TuningJobEngine(TUNING_JOB, OBJECTIVE, SETTINGS)
        job = f"cold-{k:03d}"
        order = store.register_job(TUNING_JOB, job)  # (its first line: not part of the timing)
        t0 = time.perf_counter()
        restore(engine, store, 0, {job})
        t1 = time.perf_counter()
        engine.register(job, order)
        engine.observe(job, [Sample(METRIC, epoch, 0.0)])
        t2 = time.perf_counter()
        out.setdefault("cold: changes(0) + rule", []).append(t2 - t0)
        out.setdefault("  of which changes(0) into the engine", []).append(t1 - t0)
        out.setdefault("  of which the rule", []).append(t2 - t1)

    # cold, through load_jobs (what `replay` and `status` read)
    for k in range(cold):
        engine = TuningJobEngine(TUNING_JOB, OBJECTIVE, SETTINGS)
        job = f"cold-load-{k:03d}"
        order = store.register_job(TUNING_JOB, job)
        t0 = time.perf_counter()
        for stored in store.load_jobs(TUNING_JOB, metrics={METRIC}):
            if stored.name != job:
                engine.restore(
                    stored.name,
                    stored.order,
                    stored.status,
                    stored.values.get(METRIC, []),
                    stored.decision,
                )
        engine.register(job, order)
        engine.observe(job, [Sample(METRIC, epoch, 0.0)])
        out.setdefault("cold: load_jobs + rule", []).append(time.perf_counter() - t0)

    # the deciding sidecar, warmed up: its own job is launched after every straggler
    engine = TuningJobEngine(TUNING_JOB, OBJECTIVE, SETTINGS)
    mine = "mine"
    order = store.register_job(TUNING_JOB, mine)
    cursor = restore(engine, store, 0, {mine})
    engine.register(mine, order)
    engine.observe(mine, [Sample(METRIC, epoch, 0.0)])  # a good value: never stopped
    rng = random.Random(1)

    for k in range(repeat):
        # another node: one more earlier job's values arrive (not timed)
        late = f"late-{k:04d}"
        other.apply(
            Batch(
                values=[
                    ValueRow(TUNING_JOB, late, METRIC, e, loss(rng, e))
                    for e in range(1, epochs + 1)
                ]
            )
        )
        t0 = time.perf_counter()
        cursor = restore(engine, store, cursor, {mine})
        decision = engine.observe(mine, [Sample(METRIC, epoch, 0.0)])
        out.setdefault("incremental: 1 more job, changes(since) + rule", []).append(
            time.perf_counter() - t0
        )
        assert decision is None

    for _ in range(repeat):
        t0 = time.perf_counter()
        cursor = restore(engine, store, cursor, {mine})
        engine.observe(mine, [Sample(METRIC, epoch, 0.0)])
        out.setdefault("steady: nothing new, changes(since) + rule", []).append(
            time.perf_counter() - t0
        )
    return out


# the rule in SQL (minimize; NaN, stored as NULL, counts as +inf): one pass over the values at
# epochs <= e of the jobs launched earlier that have a usable value at e
SQL_MEDIAN = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY average), count(*) FROM (
    SELECT avg(coalesce(v.value, 'Infinity')) AS average
      FROM metric_values v JOIN jobs j ON j.tuning_job = v.tuning_job AND j.name = v.job
     WHERE v.tuning_job = %(tj)s AND v.metric = %(m)s AND v.epoch <= %(e)s
       AND j.launch_order < %(order)s
       AND (j.stopped_at_epoch IS NULL OR j.stopped_at_epoch >= %(e)s)
     GROUP BY v.job
    HAVING bool_or(v.epoch = %(e)s)
) running
"""


def bench_sql_median(url: str, epoch: int, repeat: int) -> list[float]:
    import psycopg

    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        (order,) = conn.execute("SELECT max(launch_order) + 1 FROM jobs").fetchone() or (0,)
        params = {"tj": TUNING_JOB, "m": METRIC, "e": epoch, "order": order}
        for _ in range(repeat):
            t0 = time.perf_counter()
            conn.execute(SQL_MEDIAN, params).fetchone()
            times.append(time.perf_counter() - t0)
    return times


def analyze(url: str) -> None:
    if url.startswith("sqlite://"):
        import sqlite3

        db = sqlite3.connect(url[len("sqlite://") :])
        db.execute("ANALYZE")
        db.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def run_store(
    name: str, url: str, args: argparse.Namespace, extra: Callable[[], list[float]] | None
) -> dict[str, list[float]]:
    store, other = open_store(url), open_store(url)
    try:
        t0 = time.perf_counter()
        fill(store, args.jobs, args.epochs, stragglers=args.repeat)
        if args.analyze:  # the statistics autovacuum's ANALYZE keeps on a live database
            analyze(url)
        print(
            f"{name}: built {args.jobs:,} jobs x {args.epochs} epochs in {time.perf_counter() - t0:.1f} s"
        )
        results = bench(store, other, args.epochs, args.cold, args.repeat)
        if extra is not None:
            results["SQL median: percentile_cont over running averages"] = extra()
        return results
    finally:
        store.close()
        other.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--cold", type=int, default=10, help="repetitions of the cold cases")
    parser.add_argument("--repeat", type=int, default=200, help="repetitions of the warm cases")
    parser.add_argument(
        "--postgres", default=os.environ.get("SIDECAR_TEST_POSTGRES_DSN") or DEFAULT_DSN
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="skip ANALYZE after building (planner statistics of a freshly loaded table)",
    )
    args = parser.parse_args()

    columns: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        columns["SQLite"] = run_store("SQLite", f"sqlite://{Path(tmp) / 'h.db'}", args, None)

    if not args.no_postgres:
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}".encode())
        sep = "&" if "?" in args.postgres else "?"
        url = f"{args.postgres}{sep}options=-csearch_path%3D{schema}"
        try:
            columns["PostgreSQL"] = run_store(
                "PostgreSQL",
                url,
                args,
                lambda: bench_sql_median(url, args.epochs, args.cold),
            )
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())

    cases: list[str] = []
    for results in columns.values():
        cases += [c for c in results if c not in cases]
    print(
        f"one decision at epoch {args.epochs} with {args.jobs:,} earlier jobs x {args.epochs} epochs"
        f" (ms, p50 / p99; cold cases x{args.cold}, warm cases x{args.repeat})"
    )
    width = max(len(c) for c in cases) + 2
    header = "".join(f"{name:>22}" for name in columns)
    print(f"{'case':<{width}}{header}")
    for case in cases:
        cells = []
        for results in columns.values():
            if case in results:
                p50, p99 = ms(results[case])
                cells.append(f"{p50:>10.2f} / {p99:>8.2f}")
            else:
                cells.append(f"{'n/a':>21}")
        print(f"{case:<{width}}" + " ".join(cells))


if __name__ == "__main__":
    main()
