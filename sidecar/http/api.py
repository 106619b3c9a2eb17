"""The read API, the live events and the token-guarded push (docs/api.md): routes on the daemon's
HTTP server. Reads take snapshots of the engines under the pipeline's lock (memory only) or read
the store; a push is handed to the consumer, the one decider, and its answer awaited."""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from sidecar.config import Config
from sidecar.engine import TuningJobEngine
from sidecar.errors import ConfigError
from sidecar.http.events import EventHub
from sidecar.http.server import Request, Response, Router, text
from sidecar.model import JobStatus, Sample, finite_or_none, json_safe
from sidecar.pipeline import Pipeline, Pushed
from sidecar.report import objective_doc, rule_doc
from sidecar.status import status_document
from sidecar.store import Store

STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
MAX_PUSH_BODY = 1 << 20  # bytes: a larger body is 413
MAX_PUSH_VALUES = 10_000
PUSH_TIMEOUT = 10.0  # seconds a push waits for the consumer's answer before it is 503


def read_token(path: str | None) -> str | None:
    """The push token from `http.token_file` (surrounding whitespace dropped); never logged."""
    if path is None:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"http.token_file: cannot read {path!r}: {exc}") from None
    if len(token) < 16:
        raise ConfigError(f"http.token_file: the token in {path!r} must be at least 16 characters")
    return token


def json_response(status: int, document: object) -> Response:
    body = json.dumps(document, allow_nan=False, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, content_type="application/json")


def summary(engine: TuningJobEngine, config: Config) -> dict[str, Any]:
    """One element of `GET /api/v1/tuning-jobs` (call under the pipeline's lock)."""
    counts = {s.value: 0 for s in JobStatus}
    best: tuple[str, float] | None = None
    minimize = engine.objective.type.value == "Minimize"
    for state in engine.jobs.values():
        counts[state.status.value] += 1
        for value in state.history.values.values():
            if not math.isfinite(value):
                continue
            if best is None or (value < best[1] if minimize else value > best[1]):
                best = (state.name, value)
    complete = engine.completion.complete
    return {
        "name": engine.name,
        "objective": objective_doc(engine.objective),
        "rule": rule_doc(config.early_stopping),
        "counts": counts,
        "best": {"job": best[0], "value": best[1]} if best else None,
        "completion": complete.doc() if complete else None,
    }


def thresholds(engine: TuningJobEngine) -> dict[str, list[list[Any]]]:
    """What the rule compared each job's value with, per epoch (None where it could not decide),
    as its own verdicts said (call under the pipeline's lock)."""
    return {
        state.name: [
            [e, None if t is None else finite_or_none(t)]
            for e, t in sorted(state.thresholds.items())
        ]
        for state in engine.jobs.values()
    }


class Api:
    """The handlers, over one pipeline, its store and the event hub."""

    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        store: Store,
        hub: EventHub,
        *,
        token: str | None,
        submit: Callable[[Pushed], bool],
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.store = store
        self.hub = hub
        self.token = token
        self.submit = submit

    def routes(self, router: Router) -> None:
        router.add("GET", "/", self.page)
        router.add("GET", "/ui", self.page)
        router.add("GET", "/static/{name}", self.static)
        router.add("GET", "/api/v1/tuning-jobs", self.tuning_jobs)
        router.add("GET", "/api/v1/tuning-jobs/{name}", self.tuning_job)
        router.add_async("GET", "/api/v1/events", self.events)
        router.add("POST", "/api/v1/tuning-jobs/{tuning_job}/jobs/{job}/values", self.push)

    def page(self, request: Request) -> Response:
        return self.static(Request("GET", "/", {}, {}, params={"name": "index.html"}))

    def static(self, request: Request) -> Response:
        """The page's files, from the package (no CDN: nothing leaves the machine)."""
        name = request.params["name"]
        kind = STATIC_TYPES.get(Path(name).suffix)
        path = STATIC / name
        if kind is None or "/" in name or name.startswith(".") or not path.is_file():
            return text(404, f"not found: /static/{name}")
        response = Response(200, path.read_bytes(), content_type=kind)
        response.headers.append(("Cache-Control", "no-cache"))
        return response

    def tuning_jobs(self, request: Request) -> Response:
        with self.pipeline.lock:
            docs = [summary(e, self.config) for _, e in sorted(self.pipeline.engines.items())]
        return json_response(200, {"tuning_jobs": docs})

    def tuning_job(self, request: Request) -> Response:
        name = request.params["name"]
        with self.pipeline.lock:
            live = name in self.pipeline.engines
        # the engine knows the completion: the store is replayed for it only for a tuning job
        # this daemon has no engine for
        document = status_document(
            self.store,
            tuning_job=name,
            values=True,
            early_stopping=None if live else self.config.early_stopping,
        )
        if not document["tuning_jobs"]:
            return json_response(404, {"error": f"no tuning job {name!r}"})
        element: dict[str, Any] = document["tuning_jobs"][0]
        with self.pipeline.lock:
            engine = self.pipeline.engines.get(name)
            known = thresholds(engine) if engine is not None else {}
            why = {n: engine.why_not_stopped(n) for n in engine.jobs} if engine is not None else {}
            if engine is not None:
                complete = engine.completion.complete
                element["rule"] = rule_doc(self.config.early_stopping)
                element["completion"] = complete.doc() if complete is not None else None
        for job in element["jobs"]:
            job["thresholds"] = known.get(job["job"], [])
            job["why_not_stopped"] = why.get(job["job"]) if job["decision"] is None else None
        return json_response(200, json_safe(element))

    async def events(self, request: Request) -> Response:
        if self.hub.full():
            return text(503, "too many event streams; try again later")
        return Response(200, content_type="text/event-stream", stream=self.hub.stream())

    def push(self, request: Request) -> Response:
        if self.token is None:
            return json_response(405, {"error": "push is off: set http.token_file to allow it"})
        given = request.headers.get("authorization", "")
        expected = f"Bearer {self.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return json_response(401, {"error": "missing or wrong token"})
        if len(request.body) > MAX_PUSH_BODY:
            return json_response(413, {"error": f"body over {MAX_PUSH_BODY} bytes"})
        try:
            samples = parse_values(request.body)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        reply: Future[dict[str, Any]] = Future()
        item = Pushed(request.params["tuning_job"], request.params["job"], samples, reply)
        if not self.submit(item):
            return json_response(503, {"error": "the daemon is stopping"})
        try:
            answer = reply.result(PUSH_TIMEOUT)
        except FutureTimeout:
            return json_response(503, {"error": "no answer in time (the daemon is busy)"})
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, json_safe(answer))


def parse_values(body: bytes) -> list[Sample]:
    """`{"values": [{"metric", "epoch", "value"}]}`; ValueError naming the field otherwise."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("body: not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("values"), list):
        raise ValueError('values: expected {"values": [{"metric", "epoch", "value"}, ...]}')
    values = document["values"]
    if not values or len(values) > MAX_PUSH_VALUES:
        raise ValueError(f"values: 1 to {MAX_PUSH_VALUES} entries")
    samples = []
    for i, entry in enumerate(values):
        where = f"values[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object")
        metric, epoch, value = entry.get("metric"), entry.get("epoch"), entry.get("value")
        if not isinstance(metric, str) or not metric or len(metric) > 256:
            raise ValueError(f"{where}.metric: a name of 1 to 256 characters")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= 1_000_000_000:
            raise ValueError(f"{where}.epoch: an integer from 1")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}.value: a number")
        samples.append(Sample(metric, epoch, float(value)))
    return samples
