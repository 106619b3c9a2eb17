"""Per-tuning-job state: samples in, stop decisions out. Pure: no IO, no clock, no globals."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from itertools import islice

from sidecar.completion import Completion, CompletionTracker
from sidecar.config import CompletionCriteria, EarlyStoppingType, Objective, RuleSettings
from sidecar.model import Decision, JobStatus, Sample
from sidecar.rule import JobHistory, Rule, Verdict
from sidecar.rules import make_rule


def stop_rung(decision: Decision) -> int | None:
    """The successive-halving rung a decision names in its evidence (None for other rules)."""
    for key, number in decision.details:
        if key == "rung":
            return int(number)
    return None


@dataclass(slots=True)
class JobState:
    """A job as the engine knows it."""

    name: str
    order: int
    history: JobHistory
    decision: Decision | None = None
    latest: dict[str, float] = field(default_factory=dict)
    verdict: Verdict | None = None  # the rule's last verdict on it
    # epoch -> what the rule compared the job's value with there (None: it could not decide)
    thresholds: dict[int, float | None] = field(default_factory=dict)
    compared: int = 0  # how many of its values the rule compared (warm-up over)

    @property
    def status(self) -> JobStatus:
        """Held by the history, where the rules that count Completed jobs read it."""
        return self.history.status

    @status.setter
    def status(self, value: JobStatus) -> None:
        self.history.status = value

    def why_not_stopped(self) -> str | None:
        """Why the rule has not stopped this job, in words (None once it has decided to)."""
        if self.decision is not None:
            return None
        verdict = self.verdict
        if verdict is None:
            return "no objective value decided on yet"
        if self.compared == 0:
            return verdict.reason
        times = "1 comparison" if self.compared == 1 else f"{self.compared} comparisons"
        if verdict.compared:
            return f"never worse than the median in {times} (last: {verdict.reason})"
        return f"never worse than the median in {times}; then {verdict.reason}"


class TuningJobEngine:
    """Decides for the jobs of one tuning job, in their launch order.

    The one consumer of samples for its tuning job: `observe` returns the decision to stop a job
    (at most once per job); what to do with it is the caller's business.
    """

    def __init__(
        self,
        name: str,
        objective: Objective,
        early_stopping: RuleSettings,
        *,
        dry_run: bool = False,
        rule: Rule | None = None,
    ) -> None:
        self.name = name
        self.objective = objective
        self.settings = early_stopping
        self.enabled = early_stopping.type is EarlyStoppingType.AUTO
        self.dry_run = dry_run
        self.rule = rule or make_rule(early_stopping, objective.type)
        self.jobs: dict[str, JobState] = {}
        self._orders: list[int] = []  # sorted launch orders, parallel to _histories
        self._histories: list[JobHistory] = []
        # a rule that keeps caches over the histories is told of every change (its `changed`)
        self._rule_changed: Callable[[JobHistory], None] | None = getattr(
            self.rule, "changed", None
        )
        # `early_stopping.completion`: when the tuning job is complete (docs/rules.md)
        self.completion = CompletionTracker(
            getattr(early_stopping, "completion", CompletionCriteria()), objective.type
        )
        self._ended: set[str] = set()
        self._completed_now: Completion | None = None
        # `early_stopping.shadow`: rules decided beside this one, never acted on; each sees the
        # same jobs and values and keeps its own stops (as if it were the live rule)
        self.shadows: list[tuple[str, TuningJobEngine]] = []
        for block in getattr(early_stopping, "shadow", ()):
            shadow = TuningJobEngine(name, objective, block, dry_run=True)
            label = shadow.rule.name
            taken = {lbl for lbl, _ in self.shadows}
            k = 2
            while label in taken:
                label, k = f"{shadow.rule.name}#{k}", k + 1
            self.shadows.append((label, shadow))
        self._shadow_decisions: list[tuple[str, Decision]] = []

    def register(self, job: str, order: int, *, status: JobStatus = JobStatus.RUNNING) -> JobState:
        """Add a job at its launch order (idempotent for a known job)."""
        known = self.jobs.get(job)
        if known is not None:
            return known
        for _, shadow in self.shadows:
            shadow.register(job, order, status=status)
        history = JobHistory(order, self.objective.type, status)
        history.on_change = self._changed
        state = JobState(job, order, history)
        self.jobs[job] = state
        at = bisect.bisect_left(self._orders, order)
        self._orders.insert(at, order)
        self._histories.insert(at, state.history)
        self._changed(state.history)
        return state

    def next_order(self) -> int:
        """A launch order after every known one: a job's order while the store cannot give one
        (an outage); `reorder` puts the store's in its place once it can."""
        return (self._orders[-1] + 1) if self._orders else 1

    def reorder(self, job: str, order: int) -> None:
        """Give a job its launch order from the store (it was registered while the store was
        down). Decisions already made stand; later ones use the store's order."""
        state = self.jobs.get(job)
        if state is None or state.order == order:
            return
        for _, shadow in self.shadows:
            shadow.reorder(job, order)
        at = self._histories.index(state.history)
        del self._orders[at], self._histories[at]
        state.order = order
        state.history.order = order
        at = bisect.bisect_left(self._orders, order)
        self._orders.insert(at, order)
        self._histories.insert(at, state.history)
        self._changed(state.history)  # a rule's caches by launch order move it

    def _changed(self, history: JobHistory) -> None:
        if self._rule_changed is not None:
            self._rule_changed(history)

    def restore(
        self,
        job: str,
        order: int,
        status: JobStatus,
        values: Iterable[tuple[int, float]],
        decision: Decision | None,
    ) -> None:
        """Rebuild a job from the store (after a restart, or from other nodes' history)."""
        values = list(values)
        for _, shadow in self.shadows:
            shadow.restore(job, order, status, values, None)
        state = self.register(job, order, status=status)
        state.status = status
        for epoch, value in values:
            state.history.set_value(epoch, value)
        if decision is not None:
            state.decision = decision
            state.history.stop_epoch = decision.epoch
            state.history.stop_rung = stop_rung(decision)
        self._changed(state.history)
        if self.completion.active:
            for epoch, value in sorted(state.history.values.items()):
                if state.history.stop_epoch is None or epoch <= state.history.stop_epoch:
                    self._completes(self.completion.value(job, epoch, value))
            if status is not JobStatus.RUNNING:
                self._count_ended(state)

    def frozen(self, job: str, sample: Sample) -> bool:
        """Whether `sample` would rewrite what the rule already used of a stopped job: an
        objective value at or before its stop epoch, sent again after the decision (a restarted
        container, a retry, a framework printing its best round again). Such values are ignored,
        never stored: a stopped job's history is what it was when the decision was made."""
        decision = self.jobs[job].decision
        return (
            decision is not None
            and sample.metric == self.objective.metric
            and sample.epoch <= decision.epoch
        )

    def observe(self, job: str, samples: Iterable[Sample]) -> Decision | None:
        """Take a job's new samples; return a decision if the rule stops it now."""
        if self.shadows:
            samples = list(samples)
            for label, shadow in self.shadows:
                if shadow.jobs[job].decision is None:
                    decided = shadow.observe(job, samples)
                    if decided is not None:
                        self._shadow_decisions.append((label, decided))
        state = self.jobs[job]
        decision: Decision | None = None
        metric = self.objective.metric
        for sample in samples:
            if self.frozen(job, sample):
                continue
            state.latest[sample.metric] = sample.value
            if sample.metric != metric:
                continue
            state.history.set_value(sample.epoch, sample.value)
            self._changed(state.history)
            if state.decision is None:
                self._completes(self.completion.value(job, sample.epoch, sample.value))
            if decision is None and state.decision is None and self.enabled:
                decision = self._decide(state, sample)
        return decision

    def _decide(self, state: JobState, sample: Sample) -> Decision | None:
        # the jobs launched before it, without copying a long list for rules that never look
        earlier = islice(self._histories, bisect.bisect_left(self._orders, state.order))
        verdict = self.rule.decide(
            epoch=sample.epoch,
            value=sample.value,
            earlier=earlier,
            job=state.history,
            others=self._histories,
        )
        state.verdict = verdict
        state.thresholds[sample.epoch] = verdict.median if verdict.compared else None
        if verdict.compared:
            state.compared += 1
        if not verdict.stop:
            return None
        decision = Decision(
            tuning_job=self.name,
            job=state.name,
            epoch=sample.epoch,
            value=sample.value,
            # what the rule compared with; NaN when it stopped on the value alone (Optuna's
            # NaN and bootstrap cases)
            median=math.nan if verdict.median is None else verdict.median,
            compared_jobs=verdict.compared_jobs,
            rule=self.rule.name,
            dry_run=self.dry_run,
            details=verdict.details,
        )
        state.decision = decision
        state.status = JobStatus.STOPPED
        state.history.stop_epoch = sample.epoch
        state.history.stop_rung = stop_rung(decision)
        self._changed(state.history)
        return decision

    def stop_outcome(self, job: str, outcome: str) -> bool:
        """Record how the stop of a job ended; True when that changed its status. A target that
        had already exited completed by itself; a refused or failed stop left it running. The
        decision stays, and so does the rule's view of the job (cut at the decision's epoch)."""
        state = self.jobs.get(job)
        if state is None or state.decision is None:
            return False
        state.decision = replace(state.decision, outcome=outcome)
        before = state.status
        if state.status is JobStatus.STOPPED:
            if outcome == "already_exited":
                state.status = JobStatus.COMPLETED
            elif outcome in ("refused", "failed"):
                state.status = JobStatus.RUNNING
        return state.status is not before

    def end(self, job: str, status: JobStatus) -> JobStatus:
        """The job's source ended; a stopped job stays Stopped. Returns the final status."""
        state = self.jobs[job]
        for _, shadow in self.shadows:
            shadow.end(job, status)
        if state.status is JobStatus.RUNNING:
            state.status = status
        self._count_ended(state)
        return state.status

    def take_shadow_decisions(self) -> list[tuple[str, Decision]]:
        """The shadow rules' decisions since the last call, (label, decision), for the caller to
        log, count and store; never acted on."""
        taken, self._shadow_decisions = self._shadow_decisions, []
        return taken

    # completion ----------------------------------------------------------------------------
    def _completes(self, completion: Completion | None) -> None:
        if completion is not None:
            self._completed_now = completion

    def _count_ended(self, state: JobState) -> None:
        """A job ended (once per job): for `max_jobs_not_improving`, with its last value."""
        if state.name in self._ended or not self.completion.active:
            return
        self._ended.add(state.name)
        history = state.history
        usable = [
            (e, v)
            for e, v in history.values.items()
            if history.stop_epoch is None or e <= history.stop_epoch
        ]
        self._completes(self.completion.ended(state.name, max(usable) if usable else None))

    def take_completion(self) -> Completion | None:
        """The tuning job's completion, once, when it has just happened (for the caller to log,
        count and act on); `completion.complete` keeps it."""
        done, self._completed_now = self._completed_now, None
        return done

    def stop_for_completion(self, job: str) -> Decision | None:
        """Stop a running job because its tuning job is complete (`stop_running`): the decision,
        or None when the job has one already or is not running."""
        state = self.jobs.get(job)
        complete = self.completion.complete
        if state is None or complete is None or state.decision is not None:
            return None
        if state.status is not JobStatus.RUNNING:
            return None
        values = state.history.values
        epoch = max(values) if values else 1
        decision = Decision(
            tuning_job=self.name,
            job=job,
            epoch=epoch,
            value=values.get(epoch, math.nan),
            median=math.nan,
            compared_jobs=0,
            rule=f"completion:{complete.reason}",
            dry_run=self.dry_run,
        )
        state.decision = decision
        state.status = JobStatus.STOPPED
        state.history.stop_epoch = epoch
        self._changed(state.history)
        return decision

    def why_not_stopped(self, job: str) -> str | None:
        """Why the rule has not stopped a job, in words; None when it has decided to."""
        if not self.enabled:
            return "early_stopping.type is Off"
        return self.jobs[job].why_not_stopped()

    def epochs(self, job: str) -> int:
        """The last epoch with an objective value (0 when none)."""
        values = self.jobs[job].history.values
        return max(values) if values else 0
