"""The PostgreSQL store: URLs, failures as StoreErrors, launch order and the write cursor under
concurrent writer processes, the rule over the shared history, migrations racing, privileges."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from sidecar.config import EarlyStopping, Objective, ObjectiveType
from sidecar.engine import TuningJobEngine
from sidecar.errors import StoreError
from sidecar.model import JobStatus, Offset, Sample
from sidecar.rule import SageMakerMedianRule
from sidecar.store import Batch, JobUpdate, StoredJob, ValueRow
from tests.conftest import ROOT, PrivateServer, closed_port, in_ci, with_query
from tests.helpers import at_once

try:
    import psycopg
except ImportError:
    if in_ci():
        raise
    pytest.skip("psycopg is not installed (pip install -e '.[postgres]')", allow_module_level=True)

from sidecar.store.postgres import (
    POOL_TIMEOUT,
    SCHEMA_VERSION,
    PostgresStore,
    connection_settings,
)

pytestmark = pytest.mark.postgres

OBJECTIVE = Objective(metric="loss", type=ObjectiveType.MINIMIZE)


def sql(url: str, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description else []


def run_python(script: str, *args: object) -> subprocess.Popen[str]:
    """A real process (another sidecar, another node) running `script` with `args`."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


# URLs and failures ---------------------------------------------------------------------------
class TestUrls:
    def test_password_never_shows(self) -> None:
        """Messages and `store.url` hide a password given in the URL (PGPASSWORD or .pgpass are
        the better place for it)."""
        url = f"postgresql://me:s3cret@127.0.0.1:{closed_port()}/db?password=s3cret"
        _, shown = connection_settings(url)
        assert "s3cret" not in shown and "me:***@" in shown
        with pytest.raises(StoreError) as info:
            PostgresStore(url)
        assert "s3cret" not in str(info.value)

    def test_libpq_parameters_pass_through_with_defaults(self) -> None:
        """sslmode, options, ... reach libpq; application_name and connect_timeout default."""
        conninfo, _ = connection_settings(
            "postgresql://u@h/db?sslmode=require&options=-c%20statement_timeout%3D5000&schema=s1"
        )
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
        assert params["sslmode"] == "require"
        assert params["options"] == "-c statement_timeout=5000 -csearch_path=s1"
        assert params["application_name"] == "early-stopping-sidecar"
        assert params["connect_timeout"] == "5"
        mine = connection_settings("postgresql://u@h/db?application_name=node-7")[0]
        assert psycopg.conninfo.conninfo_to_dict(mine)["application_name"] == "node-7"

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("postgresql://u@h/db?bogus=1", "invalid connection URL"),
            ("postgresql://u@h/db?schema=a;drop", "not a plain identifier"),
        ],
    )
    def test_bad_urls_are_store_errors(self, url: str, message: str) -> None:
        """A parameter libpq does not know, or an odd schema name, is refused up front."""
        with pytest.raises(StoreError, match=message):
            PostgresStore(url)

    def test_unreachable_server_fails_fast(self) -> None:
        """Nothing listening: a StoreError naming the store and the cause within moments."""
        url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"cannot open: .*refused") as info:
            PostgresStore(url)
        assert time.monotonic() - started < 3
        assert url in str(info.value)

    def test_schema_parameter_selects_the_schema(
        self, postgres_dsn: str, postgres_schema: str
    ) -> None:
        """`?schema=NAME` is a shorthand for options=-csearch_path=NAME."""
        store = PostgresStore(with_query(postgres_dsn, schema=postgres_schema))
        store.close()
        tables = sql(
            postgres_dsn,
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename",
            (postgres_schema,),
        )
        assert [t for (t,) in tables] == [
            "jobs",
            "metric_values",
            "schema_version",
            "shadow_decisions",
            "source_offsets",
            "tuning_jobs",
        ]

    def test_a_missing_schema_is_named(self, postgres_dsn: str) -> None:
        """A search_path naming no existing schema says how to fix it."""
        with pytest.raises(StoreError, match="names no existing schema"):
            PostgresStore(with_query(postgres_dsn, schema=f"nope_{uuid.uuid4().hex[:8]}"))


# orders, cursors and the rule under concurrency ----------------------------------------------
REGISTER = r"""
import json, random, sys, time
from sidecar.store.postgres import PostgresStore
url, seed, n, at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
names = [f"job-{k:02d}" for k in range(n)]
random.Random(seed).shuffle(names)
store = PostgresStore(url)
time.sleep(max(0.0, at - time.time()))
print(json.dumps({name: store.register_job("t", name) for name in names}))
store.close()
"""

WRITER = r"""
import sys
from sidecar.store import Batch, ValueRow
from sidecar.store.postgres import PostgresStore
url, writer, jobs, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def value(k, epoch):
    return ((writer * 37 + k * 11 + epoch * 7) % 64) / 16
store = PostgresStore(url)
for epoch in range(1, epochs + 1):
    for start in range(0, jobs, 5):
        rows = []
        for k in range(start, min(start + 5, jobs)):
            name = f"w{writer}-{k:03d}"
            if epoch == 1:
                store.register_job("t", name)
            rows.append(ValueRow("t", name, "loss", epoch, value(k, epoch)))
            if epoch > 1 and (k + epoch) % 3 == 0:  # a corrected earlier value: an upsert
                rows.append(ValueRow("t", name, "loss", epoch - 1, value(k, epoch - 1) + 0.5))
        store.apply(Batch(values=rows))
store.close()
"""


def expected_value(writer: int, k: int, epoch: int, epochs: int) -> float:
    """What WRITER leaves in the table for one job at one epoch."""
    value = ((writer * 37 + k * 11 + epoch * 7) % 64) / 16
    corrected = epoch < epochs and (k + epoch + 1) % 3 == 0
    return value + 0.5 if corrected else value


def sql_median(url: str, epoch: int, before_order: int) -> tuple[float, int]:
    """The rule recomputed in SQL: the median (percentile_cont) of the running averages at
    `epoch` of jobs launched before `before_order` that have a value at `epoch`."""
    row = sql(
        url,
        """
        WITH candidates AS (
            SELECT v.job FROM metric_values v JOIN jobs j
              ON j.tuning_job = v.tuning_job AND j.name = v.job
             WHERE v.tuning_job = 't' AND v.metric = 'loss' AND v.epoch = %(epoch)s
               AND j.launch_order < %(order)s
        ), running AS (
            SELECT job, avg(value) AS average FROM metric_values
             WHERE tuning_job = 't' AND metric = 'loss' AND epoch <= %(epoch)s
               AND job IN (SELECT job FROM candidates)
             GROUP BY job
        )
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY average), count(*) FROM running
        """,
        {"epoch": epoch, "order": before_order},
    )[0]
    return float(row[0]), int(row[1])


class TestConcurrency:
    def test_one_order_per_job_when_processes_register_it_at_once(self, postgres_url: str) -> None:
        """Four processes register the same 40 jobs in different orders at the same moment:
        every process gets the same order for a job, and no two jobs share one."""
        store = PostgresStore(postgres_url)
        store.ensure_tuning_job("t", OBJECTIVE)
        store.close()
        at = time.time() + 2.0
        procs = [run_python(REGISTER, postgres_url, seed, 40, at) for seed in range(4)]
        results = [json.loads(finish(p)) for p in procs]
        assert all(r == results[0] for r in results)
        assert len(set(results[0].values())) == 40
        rows = sql(postgres_url, "SELECT name, launch_order FROM jobs ORDER BY name")
        assert dict(rows) == results[0]

    def test_a_reader_following_changes_sees_every_concurrent_write(
        self, postgres_url: str
    ) -> None:
        """Four writer processes each register 25 jobs and write 12 epochs for them in batches
        of five jobs, correcting earlier epochs as they go, while this process follows
        `changes()` from cursor 0. Afterwards the reader holds exactly the table's content (no
        write skipped, the last value of each epoch kept), the table holds what the writers
        meant, and the rule's median over the reader's history equals SQL's percentile_cont."""
        writers, jobs, epochs = 4, 25, 12
        reader = PostgresStore(postgres_url)
        reader.ensure_tuning_job("t", OBJECTIVE)
        engine = TuningJobEngine("t", OBJECTIVE, EarlyStopping(min_jobs=1))
        seen: dict[tuple[str, int], float] = {}
        orders: dict[str, int] = {}

        def follow(cursor: int) -> tuple[int, list[StoredJob]]:
            cursor, changed = reader.changes("t", "loss", cursor)
            for job in changed:  # as the daemon does (Pipeline._restore)
                engine.restore(
                    job.name, job.order, job.status, job.values.get("loss", []), job.decision
                )
                orders[job.name] = job.order
                for epoch, value in job.values.get("loss", []):
                    seen[job.name, epoch] = value
            return cursor, changed

        procs = [run_python(WRITER, postgres_url, w, jobs, epochs) for w in range(writers)]
        cursor, fetches = 0, 0
        while any(p.poll() is None for p in procs):
            cursor, changed = follow(cursor)
            fetches += bool(changed)
        for p in procs:
            finish(p)
        cursor, _ = follow(cursor)
        assert fetches >= 3, "the reader did not overlap the writers"

        table = sql(postgres_url, "SELECT job, epoch, value FROM metric_values")
        assert seen == {(job, epoch): value for job, epoch, value in table}
        assert seen == {
            (f"w{w}-{k:03d}", e): expected_value(w, k, e, epochs)
            for w in range(writers)
            for k in range(jobs)
            for e in range(1, epochs + 1)
        }
        assert orders == dict(sql(postgres_url, "SELECT name, launch_order FROM jobs"))
        for w in range(writers):  # each writer registered its jobs one after another
            mine = [orders[f"w{w}-{k:03d}"] for k in range(jobs)]
            assert mine == sorted(mine)
        assert sql(postgres_url, "SELECT write_seq FROM tuning_jobs") == [(cursor,)]

        # the rule over the shared history, as a new job would meet it...
        for epoch in (1, epochs // 2, epochs):
            probe = f"probe-{epoch}"
            order = reader.register_job("t", probe)
            engine.register(probe, order)
            decision = engine.observe(probe, [Sample("loss", epoch, 1e9)])
            assert decision is not None
            median, count = sql_median(postgres_url, epoch, order)
            assert (decision.median, decision.compared_jobs) == (pytest.approx(median), count)
            assert count == writers * jobs
        # ...and as a job in the middle of the launch order meets it
        middle = sorted(orders, key=orders.__getitem__)[len(orders) // 2]
        rule = SageMakerMedianRule(direction=ObjectiveType.MINIMIZE, min_jobs=1, start_epoch=1)
        earlier = [s.history for s in engine.jobs.values() if s.order < orders[middle]]
        verdict = rule.decide(epoch=epochs, value=0.0, earlier=earlier)
        median, count = sql_median(postgres_url, epochs, orders[middle])
        assert verdict.median == pytest.approx(median) and verdict.compared_jobs == count
        reader.close()

    def test_sidecars_starting_at_once_migrate_once(self, postgres_url: str) -> None:
        """Six stores opening an empty schema at the same moment: one migrates, all open."""
        stores, errors = at_once(6, lambda: PostgresStore(postgres_url))
        assert not errors
        for s in stores:
            s.close()
        rows = sql(postgres_url, "SELECT version FROM schema_version ORDER BY version")
        assert [v for (v,) in rows] == list(range(1, SCHEMA_VERSION + 1))

    def test_a_killed_pooled_connection_is_replaced_transparently(self, postgres_url: str) -> None:
        """The server ending the pool's connections (a restart, an idle timeout) costs the next
        call nothing: it runs again on a fresh connection."""
        name = f"sidecar-test-{uuid.uuid4().hex[:8]}"
        store = PostgresStore(with_query(postgres_url, application_name=name))
        store.ensure_tuning_job("t", OBJECTIVE)
        killed = sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        )
        assert killed and all(ok for (ok,) in killed)
        assert store.register_job("t", "a") >= 1
        assert store.ping()
        store.close()


# privileges ----------------------------------------------------------------------------------
@pytest.fixture
def roles(postgres_dsn: str, postgres_schema: str) -> Iterator[tuple[str, str]]:
    """An owner (migration) role and a runtime role, both able to log in; dropped after."""
    tag = uuid.uuid4().hex[:8]
    owner, runtime = f"sidecar_owner_{tag}", f"sidecar_{tag}"
    for role in (owner, runtime):
        sql(postgres_dsn, f"CREATE ROLE {role} LOGIN")
    try:
        yield owner, runtime
    finally:
        sql(postgres_dsn, f"DROP SCHEMA IF EXISTS {postgres_schema} CASCADE")
        for role in (owner, runtime):
            sql(postgres_dsn, f"DROP OWNED BY {role} CASCADE")
            sql(postgres_dsn, f"DROP ROLE {role}")


def as_role(postgres_url: str, role: str) -> str:
    return with_query(postgres_url, user=role)


def exercise(store: PostgresStore) -> None:
    """Every protocol method once."""
    store.ensure_tuning_job("t", OBJECTIVE)
    assert store.register_job("t", "a") == store.register_job("t", "a")
    store.apply(
        Batch(
            values=[ValueRow("t", "a", "loss", 1, 0.5)],
            updates=[JobUpdate("t", "a", JobStatus.COMPLETED)],
            offsets=[Offset("n", "k", "f", "/a", 3)],
        )
    )
    cursor, changed = store.changes("t", "loss", 0)
    assert cursor > 0 and [j.values for j in changed] == [{"loss": [(1, 0.5)]}]
    assert store.load_jobs("t")[0].status is JobStatus.COMPLETED
    assert store.offsets("n")["k"].offset == 3
    assert [n for n, _ in store.tuning_jobs()] == ["t"]
    assert store.ping()


class TestPrivileges:
    """The GRANTs docs/shared-history.md lists are enough, and a missing one is named."""

    @pytest.mark.parametrize("grants", ["default privileges", "after migrating"])
    def test_runtime_role_with_the_documented_grants(
        self, postgres_url: str, postgres_schema: str, roles: tuple[str, str], grants: str
    ) -> None:
        owner, runtime = roles
        schema, db = postgres_schema, sql(postgres_url, "SELECT current_database()")[0][0]
        admin = [
            f"GRANT CONNECT ON DATABASE {db} TO {owner}, {runtime}",
            f"ALTER SCHEMA {schema} OWNER TO {owner}",
            f"GRANT USAGE ON SCHEMA {schema} TO {runtime}",
        ]
        if grants == "default privileges":
            admin += [
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}"
                f" GRANT SELECT, INSERT, UPDATE ON TABLES TO {runtime}",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}"
                f" GRANT USAGE ON SEQUENCES TO {runtime}",
            ]
        for statement in admin:
            sql(postgres_url, statement)

        # the runtime role cannot create the tables itself, and says what is missing
        with pytest.raises(
            StoreError, match=r"permission denied.*privileges listed in docs/shared-history.md"
        ):
            PostgresStore(as_role(postgres_url, runtime))

        PostgresStore(as_role(postgres_url, owner)).close()  # the first run, as the owner
        if grants == "after migrating":
            sql(
                postgres_url,
                f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {runtime}",
            )
            sql(postgres_url, f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {runtime}")
        store = PostgresStore(as_role(postgres_url, runtime))
        exercise(store)
        store.close()

    def test_one_role_with_create_on_the_schema_migrates_itself(
        self, postgres_url: str, postgres_schema: str, roles: tuple[str, str]
    ) -> None:
        _, runtime = roles
        sql(postgres_url, f"GRANT USAGE, CREATE ON SCHEMA {postgres_schema} TO {runtime}")
        store = PostgresStore(as_role(postgres_url, runtime))
        exercise(store)
        store.close()


@pytest.mark.slow
def test_store_errors_while_the_server_is_down_and_recovers_after(
    private_postgres: PrivateServer,
) -> None:
    """A restart between calls is invisible; calls while it is down are StoreErrors within the
    pool timeout (ping is False); once it is back the same store works and lost nothing."""
    store = PostgresStore(private_postgres.url)
    store.ensure_tuning_job("t", OBJECTIVE)
    order = store.register_job("t", "a")
    store.apply(Batch(values=[ValueRow("t", "a", "loss", 1, 1.0)]))

    private_postgres.stop()
    private_postgres.start()
    store.apply(Batch(values=[ValueRow("t", "a", "loss", 2, 2.0)]))

    private_postgres.stop()
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot apply a batch"):
        store.apply(Batch(values=[ValueRow("t", "a", "loss", 3, 3.0)]))
    assert time.monotonic() - started < POOL_TIMEOUT + 5
    assert not store.ping()

    private_postgres.start()
    deadline = time.monotonic() + 30
    while not store.ping():
        assert time.monotonic() < deadline, "the store did not reconnect"
        time.sleep(0.2)
    store.apply(Batch(values=[ValueRow("t", "a", "loss", 3, 3.0)]))
    assert store.register_job("t", "a") == order
    job = store.load_job("t", "a")
    assert job is not None and job.values == {"loss": [(1, 1.0), (2, 2.0), (3, 3.0)]}
    store.close()
