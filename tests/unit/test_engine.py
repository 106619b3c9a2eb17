"""The engine: launch order, one decision per job, Off, dry run, lifecycle, restore."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.config import EarlyStopping, EarlyStoppingType, Objective, ObjectiveType
from sidecar.engine import TuningJobEngine
from sidecar.model import Decision, JobStatus, Sample

OBJ = Objective(metric="loss", type=ObjectiveType.MINIMIZE)


def engine(**kwargs: object) -> TuningJobEngine:
    es = EarlyStopping(min_jobs=1, **kwargs)  # type: ignore[arg-type]
    return TuningJobEngine("t", OBJ, es)


def feed(e: TuningJobEngine, job: str, values: list[float], metric: str = "loss") -> list[Decision]:
    decisions = []
    for epoch, value in enumerate(values, 1):
        d = e.observe(job, [Sample(metric, epoch, value)])
        if d is not None:
            decisions.append(d)
    return decisions


class TestTuningJobEngine:
    def test_stops_a_worse_job_once_with_evidence(self) -> None:
        """A job worse than the median is stopped once; later values change nothing."""
        e = engine()
        e.register("a", 1)
        e.register("b", 2)
        assert feed(e, "a", [1.0, 0.9, 0.8]) == []
        decisions = feed(e, "b", [2.0, 3.0, 4.0])
        assert decisions == [Decision("t", "b", 1, 2.0, 1.0, 1, "sagemaker")]
        assert e.jobs["b"].status is JobStatus.STOPPED
        assert e.jobs["b"].history.values == {1: 2.0, 2: 3.0, 3: 4.0}  # recorded
        assert e.epochs("b") == 3

    def test_jobs_launched_later_are_not_compared(self) -> None:
        """Only jobs with a lower launch order count, whatever order their values arrive in."""
        e = engine()
        e.register("late", 5)
        e.register("early", 1)
        feed(e, "late", [0.1])
        assert feed(e, "early", [9.0]) == []  # 'late' launched after 'early'
        assert e.jobs["early"].status is JobStatus.RUNNING

    def test_other_metrics_never_decide(self) -> None:
        """Only the objective metric goes to the rule; others are kept as latest values."""
        e = engine()
        e.register("a", 1)
        e.register("b", 2)
        feed(e, "a", [1.0])
        assert feed(e, "b", [5.0], metric="acc") == []
        assert e.jobs["b"].latest == {"acc": 5.0}

    def test_off_records_but_never_stops(self) -> None:
        """early_stopping.type Off: values are taken, nothing is stopped."""
        e = engine(type=EarlyStoppingType.OFF)
        e.register("a", 1)
        e.register("b", 2)
        feed(e, "a", [1.0])
        assert feed(e, "b", [5.0]) == []
        assert e.jobs["b"].history.values == {1: 5.0}

    def test_dry_run_decisions_are_marked(self) -> None:
        """In dry run the decision is made, marked dry_run, and the job counts as stopped."""
        e = TuningJobEngine("t", OBJ, EarlyStopping(min_jobs=1), dry_run=True)
        e.register("a", 1)
        e.register("b", 2)
        feed(e, "a", [1.0])
        (decision,) = feed(e, "b", [5.0])
        assert decision.dry_run
        assert decision.evidence()["dry_run"] is True
        assert e.jobs["b"].status is JobStatus.STOPPED

    @pytest.mark.parametrize(
        ("first", "final"),
        [(JobStatus.COMPLETED, JobStatus.COMPLETED), (JobStatus.FAILED, JobStatus.FAILED)],
    )
    def test_end_sets_final_status_but_stopped_stays_stopped(
        self, first: JobStatus, final: JobStatus
    ) -> None:
        """A running job ends as told; a stopped one stays Stopped."""
        e = engine()
        e.register("a", 1)
        e.register("b", 2)
        feed(e, "a", [1.0])
        feed(e, "b", [2.0])
        assert e.end("a", first) is final
        assert e.end("b", first) is JobStatus.STOPPED

    def test_restore_rebuilds_history_and_stop_epoch(self) -> None:
        """A restored stopped job contributes only values up to its stop epoch."""
        e = engine()
        decision = Decision("t", "a", 1, 9.0, 1.0, 1, "sagemaker")
        e.restore("a", 1, JobStatus.STOPPED, [(1, 9.0), (2, 0.1)], decision)
        e.register("b", 2)
        # at epoch 2 'a' has no usable value: nothing to compare with, no stop
        assert e.observe("b", [Sample("loss", 2, 100.0)]) is None
        assert e.jobs["a"].decision == decision

    def test_a_job_given_a_later_launch_order_leaves_the_earlier_jobs(self) -> None:
        """The store gives `a` its order late, after `c`: `c`'s next decision no longer counts
        it, though `c` decided at that epoch before (the rule's kept averages move it out)."""
        e = engine()
        e.register("a", 1)
        e.register("b", 2)
        e.register("c", 3)
        feed(e, "a", [1.0])
        feed(e, "b", [2.0])
        assert feed(e, "c", [1.4]) == []  # median of a and b: 1.5
        e.reorder("a", 10)
        assert feed(e, "c", [1.8]) == []  # b alone: 2.0 (with a still counted: 1.5, a stop)
        assert e.jobs["c"].verdict is not None and e.jobs["c"].verdict.median == 2.0


# the engine keeps the rule's sorted running averages up to date instead of recomputing them;
# random interleavings of every kind of change must decide exactly as a recomputation does
operation = st.one_of(
    st.tuples(
        st.just("observe"),
        st.integers(0, 5),  # job index (its launch order is index + 1, registered out of order)
        st.integers(1, 4),  # epoch (values may arrive late, or be replaced)
        st.one_of(st.floats(0, 10, allow_nan=False), st.just(math.nan), st.just(math.inf)),
    ),
    st.tuples(
        st.just("restore"),
        st.integers(0, 5),
        st.lists(st.tuples(st.integers(1, 4), st.floats(0, 10)), max_size=4),
        st.sampled_from([None, 1, 2, 3]),  # a stop decision's epoch from another node
    ),
    # the store gives a job registered during an outage its launch order late
    st.tuples(st.just("reorder"), st.integers(0, 5), st.integers(1, 40)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=40), st.sampled_from(list(ObjectiveType)))
def test_cached_averages_decide_exactly_as_a_recomputation(
    operations: list[tuple[object, ...]], direction: ObjectiveType
) -> None:
    objective = Objective(metric="loss", type=direction)
    settings_ = EarlyStopping(min_jobs=1)
    fast = TuningJobEngine("t", objective, settings_)
    plain = TuningJobEngine("t", objective, settings_, rule=_Uncached(fast.rule))
    for op in operations:
        for e in (fast, plain):
            if op[0] == "observe":
                _, index, epoch, value = op
                job = f"j{index}"
                e.register(job, int(index) + 1)  # type: ignore[call-overload]
                got = e.observe(job, [Sample("loss", int(epoch), float(value))])  # type: ignore[call-overload, arg-type]
            elif op[0] == "reorder":
                _, index, order = op
                job = f"j{index}"
                taken = {s.order for name, s in e.jobs.items() if name != job}
                if job in e.jobs and order not in taken:
                    e.reorder(job, int(order))  # type: ignore[call-overload]
                got = None
            else:
                _, index, values, stop = op
                job = f"j{index}"
                decision = (
                    None
                    if stop is None
                    else Decision("t", job, int(stop), 9.0, 1.0, 1, "sagemaker")  # type: ignore[call-overload]
                )
                e.restore(job, int(index) + 1, JobStatus.RUNNING, values, decision)  # type: ignore[call-overload, arg-type]
                got = None
            if e is fast:
                expected_from = got
            else:
                assert got == expected_from
    assert {j: s.decision for j, s in fast.jobs.items()} == {
        j: s.decision for j, s in plain.jobs.items()
    }


class _Uncached:
    """The median rule through its plain `decide` (not a SageMakerMedianRule: no cached views)."""

    def __init__(self, rule: object) -> None:
        self.inner = rule
        self.name = "sagemaker"

    def decide(self, *, epoch: int, value: float, earlier: object, **_context: object) -> object:
        return self.inner.decide(epoch=epoch, value=value, earlier=earlier)  # type: ignore[attr-defined]
