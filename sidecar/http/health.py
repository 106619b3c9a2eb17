"""The operations endpoints: `/metrics` (Prometheus), `/healthz` (alive), `/readyz` (working)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from sidecar.http.server import Request, Response, Router, text

Ready = Callable[[], tuple[bool, str]]


def add_health_routes(router: Router, registry: CollectorRegistry, ready: Ready) -> None:
    """`/metrics`, `/healthz` and `/readyz` on `router`."""

    def metrics(request: Request) -> Response:
        del request
        return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    def healthz(request: Request) -> Response:
        del request
        return text(200, "ok")

    def readyz(request: Request) -> Response:
        del request
        ok, why = ready()
        return text(200 if ok else 503, why or "ready")

    router.add("GET", "/metrics", metrics)
    router.add("GET", "/healthz", healthz)
    router.add("GET", "/readyz", readyz)
