"""`sidecar status`: the status document read from a store."""

from __future__ import annotations

from typing import Any

from sidecar.completion import Completion
from sidecar.config import EarlyStopping, Objective
from sidecar.engine import TuningJobEngine
from sidecar.model import Decision
from sidecar.report import job_doc, jobs_table, objective_doc, printable, rule_doc, values_doc
from sidecar.store import Store


def shadow_docs(decisions: dict[str, Decision]) -> list[dict[str, Any]]:
    """A job's shadow decisions: `[{"rule": label, <the decision's evidence>}]`."""
    return [{"rule": label, **d.evidence()} for label, d in sorted(decisions.items())]


def completion_in_store(
    store: Store, tuning_job: str, objective: Objective, settings: EarlyStopping
) -> Completion | None:
    """Whether the stored history says the tuning job is complete (`early_stopping.completion`):
    its jobs replayed into an engine in launch order, ended jobs counted in that order."""
    engine = TuningJobEngine(tuning_job, objective, settings, dry_run=True)
    if not engine.completion.active:
        return None
    for stored in store.load_jobs(tuning_job, metrics={objective.metric}):
        engine.restore(
            stored.name,
            stored.order,
            stored.status,
            stored.values.get(objective.metric, []),
            stored.decision,
        )
    return engine.completion.complete


def status_document(
    store: Store,
    *,
    tuning_job: str | None,
    values: bool,
    early_stopping: EarlyStopping | None = None,
) -> dict[str, Any]:
    """`{"tuning_jobs": [...]}`: one tuning job (when named) or every one in the store. With
    the config's `early_stopping`, each says its rule and settings and, when complete, why."""
    tuning_jobs = []
    for name, objective in store.tuning_jobs():
        if tuning_job is not None and name != tuning_job:
            continue
        wanted = None if values else {objective.metric}
        shadows = store.shadow_decisions(name)
        jobs = []
        for stored in store.load_jobs(name, metrics=wanted):
            series = stored.values.get(objective.metric, [])
            doc = job_doc(
                job=stored.name,
                order=stored.order,
                status=stored.status,
                epochs=max((e for e, _ in series), default=0),
                decision=stored.decision,
            )
            if values:
                doc["values"] = values_doc(stored.values)
            if shadows:
                doc["shadow_decisions"] = shadow_docs(shadows.get(stored.name, {}))
            jobs.append(doc)
        entry: dict[str, Any] = {"name": name, "objective": objective_doc(objective), "jobs": jobs}
        if early_stopping is not None:
            entry["rule"] = rule_doc(early_stopping)
            done = completion_in_store(store, name, objective, early_stopping)
            entry["completion"] = done.doc() if done is not None else None
        tuning_jobs.append(entry)
    return {"tuning_jobs": tuning_jobs}


def status_text(document: dict[str, Any]) -> str:
    """The status document as readable tables."""
    if not document["tuning_jobs"]:
        return "no tuning jobs in the store yet"
    parts = []
    tuning_jobs = document["tuning_jobs"]
    if len(tuning_jobs) > 1:  # a tuning job created by a config but given no job says nothing
        tuning_jobs = [tj for tj in tuning_jobs if tj["jobs"]] or tuning_jobs[:1]
    for tj in tuning_jobs:
        objective = tj["objective"]
        counts: dict[str, int] = {}
        for job in tj["jobs"]:
            counts[job["status"]] = counts.get(job["status"], 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs"
        text = (
            f"tuning job {printable(tj['name'])}: objective {printable(objective['metric'])} "
            f"({objective['type']}); {summary}\n" + jobs_table(tj["jobs"])
        )
        if "rule" in tj:
            params = ", ".join(f"{k} {v}" for k, v in tj["rule"]["parameters"].items())
            text += f"\nrule {tj['rule']['rule']} ({params}), early stopping {tj['rule']['type']}"
        if tj.get("completion"):
            c = tj["completion"]
            text += f"\ncomplete ({c['reason']}): job {printable(c['job'])}, epoch {c['at']}"
        series = [(job["job"], job["values"]) for job in tj["jobs"] if "values" in job]
        for name, values in series:  # under --values: every metric's series, epoch=value
            for metric, points in sorted(values.items()):
                shown = " ".join(f"{e}={'nan' if v is None else f'{v:g}'}" for e, v in points)
                text += f"\n  {printable(name)} {printable(metric)}: {shown}"
        parts.append(text)
    return "\n\n".join(parts)
