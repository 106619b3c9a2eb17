"""`replay` against an independent recomputation of the median rule (docs/design.md), on examples and random tuning jobs."""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.config import Config, validate_config
from sidecar.replay import replay
from sidecar.store import open_store


def make_config(direction: str = "Minimize", min_jobs: int = 1, start_epoch: int = 1) -> Config:
    return validate_config(
        {
            "tuning_job": "t",
            "objective": {"metric": "val_loss", "type": direction},
            "metric_definitions": [{"Name": "val_loss", "Regex": r"val_loss=(\S+)"}],
            "epoch": {"regex": r"^epoch (\d+)"},
            "early_stopping": {"min_jobs": min_jobs, "start_epoch": start_epoch},
        }
    )


def write_logs(folder: Path, curves: list[list[float]]) -> list[Path]:
    paths = []
    for i, curve in enumerate(curves, 1):
        path = folder / f"job-{i:03d}.log"
        lines = ["starting"]
        for epoch, value in enumerate(curve, 1):
            lines.append(f"progress {epoch}\r50/50 ok")
            lines.append(f"epoch {epoch} val_loss={value!r} other=1")
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def reference(
    curves: list[list[float]], direction: str, min_jobs: int, start_epoch: int
) -> dict[int, int]:
    """The median rule computed directly: {job index: stop epoch}, jobs run one after another."""
    minimize = direction == "Minimize"
    worst = math.inf if minimize else -math.inf

    def clean(x: float) -> float:
        return x if math.isfinite(x) else worst

    stops: dict[int, int] = {}
    for c, curve in enumerate(curves):
        for e, v in enumerate(curve, 1):
            averages = []
            for j in range(c):
                usable = curves[j][: stops.get(j, len(curves[j]))]
                if e <= len(usable):
                    upto = [clean(x) for x in usable[:e]]
                    averages.append(math.fsum(upto) / len(upto))
            if e < start_epoch or len(averages) < min_jobs or not averages:
                continue
            m = statistics.median(averages)
            if (clean(v) > m) if minimize else (clean(v) < m):
                stops[c] = e
                break
    return stops


def run_replay(folder: Path, curves: list[list[float]], config: Config) -> dict[str, object]:
    store = open_store("sqlite://:memory:")
    try:
        return replay(config, write_logs(folder, curves), store).document
    finally:
        store.close()


class TestReplayWorkedExample:
    def test_worked_example_stops_c_and_d_at_epoch_one(self, tmp_path: Path) -> None:
        """The design's worked example: A and B finish, C and D stop at epoch 1 with the stated medians."""
        curves = [[1.0, 0.8, 0.6], [0.9, 0.7, 0.5], [1.2, 0.9, 0.4], [1.1, 1.0, 0.9]]
        doc = run_replay(tmp_path, curves, make_config(min_jobs=1))
        jobs = doc["jobs"]
        assert isinstance(jobs, list)
        assert [
            (j["job"], j["order"], j["status"], j["epochs"], j["stopped_at_epoch"]) for j in jobs
        ] == [
            ("job-001", 1, "Completed", 3, None),
            ("job-002", 2, "Completed", 3, None),
            ("job-003", 3, "Stopped", 1, 1),
            ("job-004", 4, "Stopped", 1, 1),
        ]
        assert jobs[2]["decision"] == {
            "epoch": 1,
            "value": 1.2,
            "median": pytest.approx(0.95),
            "compared_jobs": 2,
        }
        assert jobs[3]["decision"] == {"epoch": 1, "value": 1.1, "median": 1.0, "compared_jobs": 3}

    def test_document_has_exactly_the_design_keys(self, tmp_path: Path) -> None:
        """The `replay --json` document: tuning_job, objective, jobs with the six job keys, nothing else."""
        doc = run_replay(tmp_path, [[1.0], [2.0]], make_config())
        assert set(doc) == {"tuning_job", "objective", "jobs"}
        assert doc["objective"] == {"metric": "val_loss", "type": "Minimize"}
        jobs = doc["jobs"]
        assert isinstance(jobs, list)
        for job in jobs:
            assert set(job) == {"job", "order", "status", "epochs", "stopped_at_epoch", "decision"}

    def test_diverged_job_decision_has_null_value(self, tmp_path: Path) -> None:
        """A NaN value stops the job and appears as null in JSON (JSON has no NaN)."""
        doc = run_replay(tmp_path, [[1.0, 1.0], [math.nan, 1.0]], make_config())
        jobs = doc["jobs"]
        assert isinstance(jobs, list)
        assert jobs[1]["status"] == "Stopped"
        assert jobs[1]["decision"]["value"] is None

    def test_store_keeps_the_simulated_history(self, tmp_path: Path) -> None:
        """With a file store, the jobs, stop epochs and values are there afterwards."""
        url = f"sqlite://{tmp_path / 'h.db'}"
        store = open_store(url)
        replay(make_config(), write_logs(tmp_path, [[1.0, 0.5], [2.0, 0.1]]), store)
        store.close()
        store = open_store(url, must_exist=True)
        jobs = store.load_jobs("t")
        store.close()
        assert [(j.name, j.order, j.status.value) for j in jobs] == [
            ("job-001", 1, "Completed"),
            ("job-002", 2, "Stopped"),
        ]
        assert jobs[1].decision is not None and jobs[1].decision.epoch == 1
        # the stopped job's log is not applied past the line that stopped it
        assert jobs[1].values["val_loss"] == [(1, 2.0)]
        assert jobs[0].values["val_loss"] == [(1, 1.0), (2, 0.5)]


VALUES = st.sampled_from([0.25, 0.5, 0.75, 1.0, 1.25, 2.0, math.nan, math.inf]) | st.floats(
    min_value=-10, max_value=10, allow_nan=False
)
CURVES = st.lists(st.lists(VALUES, min_size=1, max_size=6), min_size=1, max_size=8)


class TestReplayMatchesRecomputation:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        curves=CURVES,
        direction=st.sampled_from(["Minimize", "Maximize"]),
        min_jobs=st.integers(1, 4),
        start_epoch=st.integers(1, 3),
    )
    def test_replay_stops_exactly_the_jobs_the_rule_stops(
        self, curves: list[list[float]], direction: str, min_jobs: int, start_epoch: int
    ) -> None:
        """On random curves with NaN, inf, ties and different lengths, replay == the median rule recomputed."""
        expected = reference(curves, direction, min_jobs, start_epoch)
        with tempfile.TemporaryDirectory() as folder:
            doc = run_replay(Path(folder), curves, make_config(direction, min_jobs, start_epoch))
        jobs = doc["jobs"]
        assert isinstance(jobs, list)
        got = {i: j["stopped_at_epoch"] for i, j in enumerate(jobs) if j["status"] == "Stopped"}
        assert got == expected
        for i, job in enumerate(jobs):
            assert job["epochs"] == expected.get(i, len(curves[i]))


class TestReplayStreams:
    def test_a_long_log_is_stored_in_bounded_batches_and_whole(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Values reach the store in batches of REPLAY_BATCH_VALUES while the log is read, not
        all at the end; none is lost at the batch edges."""
        import sidecar.replay as replay_module

        monkeypatch.setattr(replay_module, "REPLAY_BATCH_VALUES", 7)
        logs = write_logs(tmp_path, [[1.0 / (e + 1) for e in range(50)]])
        store = open_store(f"sqlite://{tmp_path / 'h.db'}")
        sizes: list[int] = []
        apply = store.apply
        monkeypatch.setattr(
            store, "apply", lambda batch: (sizes.append(len(batch.values)), apply(batch))
        )
        replay(make_config(), logs, store)
        job = store.load_job("t", "job-001")
        assert job is not None
        assert [e for e, _ in job.values["val_loss"]] == list(range(1, 51))
        assert len(sizes) > 1 and max(sizes) <= 7

    def test_store_metrics_objective_keeps_only_the_objective(self, tmp_path: Path) -> None:
        config = make_config().model_copy(update={"store_metrics": "objective"})
        config = validate_config(
            {
                **config.model_dump(mode="json", exclude_defaults=True),
                "metric_definitions": [
                    {"Name": "val_loss", "Regex": r"val_loss=(\S+)"},
                    {"Name": "other", "Regex": r"other=(\S+)"},
                ],
            }
        )
        logs = write_logs(tmp_path, [[0.5, 0.4]])
        store = open_store(f"sqlite://{tmp_path / 'h.db'}")
        replay(config, logs, store)
        job = store.load_job("t", "job-001")
        assert job is not None
        assert set(job.values) == {"val_loss"}
        every = validate_config({**config.model_dump(mode="json"), "store_metrics": "all"})
        store2 = open_store(f"sqlite://{tmp_path / 'h2.db'}")
        replay(every, logs, store2)
        job2 = store2.load_job("t", "job-001")
        assert job2 is not None and set(job2.values) == {"val_loss", "other"}


class TestTraceAgreesWithReplay:
    """`replay --plot` decides a second time, through a recording rule, to show the thresholds:
    the stops it draws are the stops replay reports, for every rule (the rules that keep caches
    over the histories hear of every change through the recording rule too)."""

    CURVES: ClassVar[list[list[float]]] = [
        [1.0, 0.8, 0.6, 0.5, 0.45, 0.4],
        [1.1, 0.9, 0.7, 0.6, 0.5, 0.45],
        [1.5, 1.4, 1.3, 1.25, 1.2, 1.15],
        [0.9, 0.7, 0.5, 0.4, 0.35, 0.3],
        [2.0, 1.9, 1.8, 1.7, 1.6, 1.5],
        [1.2, 1.0, 0.9, 0.8, 0.75, 0.7],
        [1.3, 1.2, 1.1, 1.0, 0.9, 0.85],
        [1.7, 1.8, 1.9, 2.0, 2.1, 2.2],  # gets worse: patience lets the rule see it
    ]

    @pytest.mark.parametrize(
        "rule",
        [
            {"rule": "sagemaker", "min_jobs": 1},
            {"rule": "optuna-median", "optuna": {"n_startup_trials": 1}},
            {"rule": "optuna-percentile", "optuna": {"percentile": 25, "n_startup_trials": 1}},
            {"rule": "optuna-successive-halving", "optuna": {"min_resource": 1}},
            {"rule": "optuna-threshold", "optuna": {"upper": 1.6}},
            {"rule": "katib-median", "katib": {"min_trials_required": 1}},
            {
                "rule": "optuna-median",
                "optuna": {"n_startup_trials": 1},
                "patience": {"patience": 1},
            },
        ],
        ids=lambda r: str(r["rule"]) + ("+patience" if "patience" in r else ""),
    )
    def test_the_traced_stops_are_replays_stops(
        self, tmp_path: Path, rule: dict[str, object]
    ) -> None:
        config = validate_config(
            {
                "tuning_job": "t",
                "objective": {"metric": "val_loss", "type": "Minimize"},
                "metric_definitions": [{"Name": "val_loss", "Regex": r"val_loss=(\S+)"}],
                "epoch": {"regex": r"^epoch (\d+)"},
                "early_stopping": {"type": "Auto", **rule},
            }
        )
        logs = write_logs(tmp_path, self.CURVES)
        plain = replay(config, logs, open_store("sqlite://:memory:"))
        traced = replay(config, logs, open_store("sqlite://:memory:"), trace=True)
        stops = {j["job"]: j["stopped_at_epoch"] for j in plain.document["jobs"]}
        drawn = {t.job: t.stop.epoch if t.stop else None for t in traced.traces}
        assert any(stops.values())  # the sweep is one where the rule stops someone
        assert drawn == stops
