"""The JSON documents and tables that `replay` and `status` print (docs/commands.md). Pure."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from sidecar.config import Objective, RuleSettings
from sidecar.model import Decision, JobStatus, finite_or_none

RULE_PARAMETERS = {
    "optuna-median": ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
    "optuna-percentile": (
        "percentile",
        "n_startup_trials",
        "n_warmup_steps",
        "interval_steps",
        "n_min_trials",
    ),
    "optuna-successive-halving": (
        "min_resource",
        "reduction_factor",
        "min_early_stopping_rate",
        "bootstrap_count",
    ),
    "optuna-threshold": ("lower", "upper", "n_warmup_steps", "interval_steps"),
}


def rule_doc(settings: RuleSettings) -> dict[str, Any]:
    """The rule and its settings, as `status --json` shows them: `{"rule", "type",
    "parameters"}`, plus `patience` and `completion` when set."""
    if settings.rule == "sagemaker":
        parameters: dict[str, Any] = {
            "min_jobs": settings.min_jobs,
            "start_epoch": settings.start_epoch,
        }
    elif settings.rule == "katib-median":
        parameters = settings.katib.model_dump()
    else:
        optuna = settings.optuna.model_dump()
        parameters = {k: optuna[k] for k in RULE_PARAMETERS[settings.rule]}
    doc: dict[str, Any] = {
        "rule": settings.rule,
        "type": settings.type.value,
        "parameters": parameters,
    }
    if settings.patience is not None:
        doc["patience"] = settings.patience.model_dump()
    completion = getattr(settings, "completion", None)
    if completion is not None and (
        completion.target_objective_value is not None or completion.max_jobs_not_improving
    ):
        doc["completion"] = completion.model_dump()
    shadows = getattr(settings, "shadow", ())
    if shadows:
        doc["shadow"] = [rule_doc(block) for block in shadows]
    return doc


def rule_text(settings: RuleSettings) -> str:
    """`rule optuna-median (n_startup_trials 5, ...), early stopping Auto` for the tables."""
    doc = rule_doc(settings)
    shown = ", ".join(f"{k} {v}" for k, v in doc["parameters"].items())
    text = f"rule {doc['rule']} ({shown}"
    if "patience" in doc:
        p = doc["patience"]
        text += f"; patience {p['patience']}, min_delta {p['min_delta']}"
    if "completion" in doc:
        c = {k: v for k, v in doc["completion"].items() if v not in (None, False)}
        text += "; completion " + ", ".join(f"{k} {v}" for k, v in c.items())
    return text + f"), early stopping {doc['type']}"


def objective_doc(objective: Objective) -> dict[str, str]:
    return {"metric": objective.metric, "type": objective.type.value}


def job_doc(
    *,
    job: str,
    order: int,
    status: JobStatus,
    epochs: int,
    decision: Decision | None,
) -> dict[str, Any]:
    """One job as `replay --json` and `status --json` show it."""
    return {
        "job": job,
        "order": order,
        "status": status.value,
        "epochs": epochs,
        # a decision whose target had already exited (or whose stop failed) stopped nothing
        "stopped_at_epoch": decision.epoch if decision and status is JobStatus.STOPPED else None,
        "decision": decision.evidence() if decision else None,
    }


def values_doc(values: dict[str, list[tuple[int, float]]]) -> dict[str, list[list[Any]]]:
    """`{"metric": [[epoch, value], ...]}` with NaN and infinities as null."""
    return {
        metric: [[epoch, finite_or_none(value)] for epoch, value in sorted(series)]
        for metric, series in sorted(values.items())
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}"


def _fmt_evidence(value: float | None) -> str:
    """A decision's value or median: JSON has no NaN or infinity, so null there is one of them
    (never a missing number), shown as such rather than as an empty `-`."""
    return "non-finite" if value is None else f"{value:.6g}"


# bidirectional overrides and isolates: they reorder what follows them on a terminal
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """Text safe to print on a terminal: control characters (ESC and the rest of C0 and C1,
    DEL, bidirectional overrides) as escapes. Job and metric names come from log files and
    paths: `\x1b]0;...` in one must not retitle, recolour or rewrite the user's terminal."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _BIDI or unicodedata.category(ch) == "Cc":
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain aligned text table (cells made printable)."""
    body = [[printable(str(c)) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return "\n".join(lines)


def jobs_table(
    jobs: Sequence[dict[str, Any]],
    *,
    saved: dict[str, int] | None = None,
    why: dict[str, str] | None = None,
) -> str:
    """A readable table of job documents; `why`: the reason each job not stopped was not."""
    headers = ["ORDER", "JOB", "STATUS", "EPOCHS", "STOPPED AT", "VALUE", "MEDIAN", "COMPARED"]
    if saved is not None:
        headers.append("EPOCHS SAVED")
    if why is not None:
        headers.append("WHY NOT STOPPED")
    rows = []
    for job in jobs:
        decision = job.get("decision") or {}
        status = job["status"] + (" (dry run)" if decision.get("dry_run") else "")
        if decision.get("outcome") in ("already_exited", "refused", "failed"):
            status += f" (stop {decision['outcome'].replace('_', ' ')})"
        row = [
            str(job["order"]),
            job["job"],
            status,
            str(job["epochs"]),
            str(job["stopped_at_epoch"] or (f"({decision['epoch']})" if decision else "-")),
            _fmt_evidence(decision.get("value")) if decision else "-",
            _fmt_evidence(decision.get("median")) if decision else "-",
            str(decision.get("compared_jobs", "-")) if decision else "-",
        ]
        if saved is not None:
            row.append(str(saved.get(job["job"], 0)))
        if why is not None:
            row.append(why.get(job["job"], ""))
        rows.append(row)
    return table(headers, rows)
