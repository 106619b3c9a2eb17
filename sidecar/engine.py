"""Per-tuning-job state: samples in, stop decisions out. Pure: no IO, no clock, no globals."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from sidecar.config import EarlyStopping, EarlyStoppingType, Objective
from sidecar.model import Decision, JobStatus, Sample
from sidecar.rule import JobHistory, Rule, make_rule


@dataclass(slots=True)
class JobState:
    """A job as the engine knows it."""

    name: str
    order: int
    history: JobHistory
    status: JobStatus = JobStatus.RUNNING
    decision: Decision | None = None
    latest: dict[str, float] = field(default_factory=dict)


class TuningJobEngine:
    """Decides for the jobs of one tuning job, in their launch order.

    The one consumer of samples for its tuning job: `observe` returns the decision to stop a job
    (at most once per job); what to do with it is the caller's business.
    """

    def __init__(
        self,
        name: str,
        objective: Objective,
        early_stopping: EarlyStopping,
        *,
        dry_run: bool = False,
        rule: Rule | None = None,
    ) -> None:
        self.name = name
        self.objective = objective
        self.enabled = early_stopping.type is EarlyStoppingType.AUTO
        self.dry_run = dry_run
        self.rule = rule or make_rule(early_stopping, objective.type)
        self.jobs: dict[str, JobState] = {}
        self._orders: list[int] = []  # sorted launch orders, parallel to _histories
        self._histories: list[JobHistory] = []

    def register(self, job: str, order: int, *, status: JobStatus = JobStatus.RUNNING) -> JobState:
        """Add a job at its launch order (idempotent for a known job)."""
        known = self.jobs.get(job)
        if known is not None:
            return known
        state = JobState(job, order, JobHistory(order, self.objective.type), status)
        self.jobs[job] = state
        at = bisect.bisect_left(self._orders, order)
        self._orders.insert(at, order)
        self._histories.insert(at, state.history)
        return state

    def restore(
        self,
        job: str,
        order: int,
        status: JobStatus,
        values: Iterable[tuple[int, float]],
        decision: Decision | None,
    ) -> None:
        """Rebuild a job from the store (after a restart, or from other nodes' history)."""
        state = self.register(job, order, status=status)
        state.status = status
        for epoch, value in values:
            state.history.set_value(epoch, value)
        if decision is not None:
            state.decision = decision
            state.history.stop_epoch = decision.epoch

    def observe(self, job: str, samples: Iterable[Sample]) -> Decision | None:
        """Take a job's new samples; return a decision if the rule stops it now."""
        state = self.jobs[job]
        decision: Decision | None = None
        metric = self.objective.metric
        for sample in samples:
            state.latest[sample.metric] = sample.value
            if sample.metric != metric:
                continue
            state.history.set_value(sample.epoch, sample.value)
            if decision is None and state.decision is None and self.enabled:
                decision = self._decide(state, sample)
        return decision

    def _decide(self, state: JobState, sample: Sample) -> Decision | None:
        earlier = self._histories[: bisect.bisect_left(self._orders, state.order)]
        verdict = self.rule.decide(epoch=sample.epoch, value=sample.value, earlier=earlier)
        if not verdict.stop or verdict.median is None:
            return None
        decision = Decision(
            tuning_job=self.name,
            job=state.name,
            epoch=sample.epoch,
            value=sample.value,
            median=verdict.median,
            compared_jobs=verdict.compared_jobs,
            rule=self.rule.name,
            dry_run=self.dry_run,
        )
        state.decision = decision
        state.status = JobStatus.STOPPED
        state.history.stop_epoch = sample.epoch
        return decision

    def end(self, job: str, status: JobStatus) -> JobStatus:
        """The job's source ended; a stopped job stays Stopped. Returns the final status."""
        state = self.jobs[job]
        if state.status is JobStatus.RUNNING:
            state.status = status
        return state.status

    def epochs(self, job: str) -> int:
        """The last epoch with an objective value (0 when none)."""
        values = self.jobs[job].history.values
        return max(values) if values else 0
