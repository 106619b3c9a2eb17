"""What-if: each candidate rule replayed over a finished sweep's parsed curves, in several launch
orders, and what it would have saved and cost (docs/rules.md, "Choosing a rule"). Pure: the
curves come in parsed; no IO, no clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.config import EarlyStopping, Objective, ObjectiveType
from sidecar.engine import TuningJobEngine
from sidecar.model import JobStatus, Sample


@dataclass(frozen=True, slots=True)
class Curve:
    """One job of the sweep: its objective values in the order the log printed them."""

    name: str
    values: tuple[tuple[int, float], ...]  # (epoch, value), log order

    @property
    def last_epoch(self) -> int:
        return max((e for e, _ in self.values), default=0)

    def final(self, direction: ObjectiveType) -> float:
        """The value at its last epoch (the last printed there); NaN counts as the worst."""
        last = self.last_epoch
        value = math.nan
        for e, v in self.values:
            if e == last:
                value = v
        if math.isnan(value):
            return math.inf if direction is ObjectiveType.MINIMIZE else -math.inf
        return value


@dataclass(frozen=True, slots=True)
class Outcome:
    """A candidate over the orders: the means (and `best_kept`, a fraction of the orders)."""

    early_stopping: dict[str, Any]
    stopped_jobs: float
    epochs_run: float
    epochs_total: float
    saved_fraction: float
    best_kept: float
    regret: float
    top_k_kept: float

    def doc(self) -> dict[str, Any]:
        return {
            "early_stopping": self.early_stopping,
            "stopped_jobs": self.stopped_jobs,
            "epochs_run": self.epochs_run,
            "epochs_total": self.epochs_total,
            "saved_fraction": self.saved_fraction,
            "best_kept": self.best_kept,
            "regret": self.regret if math.isfinite(self.regret) else None,
            "top_k_kept": self.top_k_kept,
        }


def better(a: float, b: float, direction: ObjectiveType) -> bool:
    return a < b if direction is ObjectiveType.MINIMIZE else a > b


def ranking(curves: Sequence[Curve], direction: ObjectiveType) -> list[int]:
    """Job indexes from the best final value down (ties: the one launched first)."""
    sign = 1.0 if direction is ObjectiveType.MINIMIZE else -1.0
    return sorted(range(len(curves)), key=lambda i: (sign * curves[i].final(direction), i))


def stops(settings: EarlyStopping, objective: Objective, curves: Sequence[Curve]) -> dict[int, int]:
    """{index in `curves`: stop epoch}: the rule run over the jobs in this order, each ending
    before the next starts, as `replay` runs them."""
    engine = TuningJobEngine("whatif", objective, settings)
    out: dict[int, int] = {}
    for order, curve in enumerate(curves, 1):
        engine.register(curve.name, order)
        for epoch, value in curve.values:
            decision = engine.observe(curve.name, [Sample(objective.metric, epoch, value)])
            if decision is not None:
                out[order - 1] = decision.epoch
                break
        engine.end(curve.name, JobStatus.COMPLETED)
    return out


def orders(n: int, count: int, seed: int) -> list[list[int]]:
    """The given order, then `count` - 1 seeded permutations of it."""
    rng = random.Random(seed)
    result = [list(range(n))]
    for _ in range(count - 1):
        perm = list(range(n))
        rng.shuffle(perm)
        result.append(perm)
    return result


def evaluate(
    settings: EarlyStopping,
    objective: Objective,
    curves: Sequence[Curve],
    permutations: Sequence[Sequence[int]],
    *,
    top: int,
) -> Outcome:
    """One candidate over every order."""
    direction = objective.type
    ranked = ranking(curves, direction)
    best = ranked[0]
    best_final = curves[best].final(direction)
    top_set = set(ranked[:top])
    total = float(sum(c.last_epoch for c in curves))
    stopped = run = kept = topk = 0.0
    regrets: list[float] = []
    for perm in permutations:
        ordered = [curves[i] for i in perm]
        stopped_at = {perm[i]: e for i, e in stops(settings, objective, ordered).items()}
        stopped += len(stopped_at)
        run += sum(stopped_at.get(i, c.last_epoch) for i, c in enumerate(curves))
        kept += best not in stopped_at
        topk += len(top_set - set(stopped_at))
        survivors = [curves[i].final(direction) for i in range(len(curves)) if i not in stopped_at]
        if survivors:
            best_left = survivors[0]
            for v in survivors[1:]:
                if better(v, best_left, direction):
                    best_left = v
            regret = abs(best_final - best_left) if best_left != best_final else 0.0
        else:
            regret = math.inf
        regrets.append(regret if not math.isnan(regret) else math.inf)
    n = len(permutations)
    epochs_run = run / n
    return Outcome(
        early_stopping=settings.model_dump(mode="json", exclude_defaults=True),
        stopped_jobs=stopped / n,
        epochs_run=epochs_run,
        epochs_total=total,
        saved_fraction=(1 - epochs_run / total) if total else 0.0,
        best_kept=kept / n,
        regret=sum(regrets) / n,
        top_k_kept=topk / n,
    )


def recommended(outcomes: Sequence[Outcome]) -> int:
    """The largest saved fraction among the candidates that always kept the best job (ties:
    smaller regret, then the earlier); if none did, the smallest regret (ties: larger saved
    fraction, then the earlier)."""
    keeping = [i for i, o in enumerate(outcomes) if o.best_kept == 1]
    if keeping:
        return min(keeping, key=lambda i: (-outcomes[i].saved_fraction, outcomes[i].regret, i))
    return min(
        range(len(outcomes)),
        key=lambda i: (outcomes[i].regret, -outcomes[i].saved_fraction, i),
    )


def why(outcome: Outcome, keeping_any: bool) -> str:
    """One sentence on why the recommended candidate is."""
    saved = f"{outcome.saved_fraction:.0%} of the epochs"
    if keeping_any:
        return (
            f"it saves {saved} and kept the best job in every order tried: "
            "the most saved among the candidates that never stopped the best job"
        )
    return (
        f"every candidate stopped the best job in some order; this one loses the least "
        f"(mean regret {outcome.regret:.4g}) and saves {saved}"
    )


def run_all(
    candidates: Sequence[EarlyStopping],
    objective: Objective,
    curves: Sequence[Curve],
    *,
    order_count: int,
    seed: int,
    top: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Outcome], int]:
    """Every candidate's outcome and the recommended one's index."""
    permutations = orders(len(curves), order_count, seed)
    outcomes = []
    for k, settings in enumerate(candidates):
        outcomes.append(evaluate(settings, objective, curves, permutations, top=top))
        if progress is not None:
            progress(k + 1, len(candidates))
    return outcomes, recommended(outcomes)


def grid(base: dict[str, Any], keys: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """The cartesian product of `--grid` keys (dotted paths under `early_stopping`) over `base`,
    in the order given (the first key varies slowest)."""
    blocks = [base]
    for path, values in keys:
        out = []
        for block in blocks:
            for value in values:
                out.append(with_key(block, path, value))
        blocks = out
    return blocks


def with_key(block: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `block` with the dotted `path` set to `value`."""
    head, _, rest = path.partition(".")
    copy = dict(block)
    if rest:
        inner = copy.get(head)
        copy[head] = with_key(inner if isinstance(inner, dict) else {}, rest, value)
    else:
        copy[head] = value
    return copy
