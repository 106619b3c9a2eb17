"""The kubernetes backend: delete the job's pod, or its owning batch Job, with a grace period."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

from sidecar.errors import ConfigError
from sidecar.stoppers import PermanentStopError, StopError, StopRequest, StopResult
from sidecar.templates import render_template

# (connect, read) seconds for one API call: a hung API server must not hold a stopper thread
REQUEST_TIMEOUT = (10.0, 30.0)


class KubernetesStopper:
    """Deletes a Pod (`pod` template) or, when `job` is set, the batch Job so it is not recreated.

    A Job is deleted with `propagationPolicy: Background`: the Job object goes at once (so its
    controller cannot start a replacement pod) and the garbage collector deletes its pods, each
    with its own `terminationGracePeriodSeconds`. Without a policy the API would orphan them.
    """

    backend = "kubernetes"

    def __init__(
        self,
        *,
        namespace: str,
        pod: str,
        job: str | None,
        grace_seconds: float,
        kubeconfig: str | None = None,
        request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self.namespace = namespace
        self.pod = pod
        self.job = job
        self.grace_seconds = grace_seconds
        self.kubeconfig = kubeconfig
        self.request_timeout = request_timeout
        self._api: Any = None
        self._lock = threading.Lock()

    def api_client(self) -> Any:
        """The client: in-cluster config inside a pod, else the kubeconfig."""
        with self._lock:
            if self._api is None:
                try:
                    from kubernetes import client, config
                except ImportError:
                    raise ConfigError(
                        "the kubernetes backend needs the kubernetes extra: "
                        "pip install 'early-stopping-sidecar[kubernetes]'"
                    ) from None
                configuration = client.Configuration()
                try:
                    if self.kubeconfig is None:
                        config.load_incluster_config(client_configuration=configuration)
                    else:
                        raise config.ConfigException("kubeconfig given")
                except config.ConfigException:
                    config.load_kube_config(
                        config_file=self.kubeconfig, client_configuration=configuration
                    )
                self._api = client.ApiClient(configuration)
            return self._api

    def probe(self, context: dict[str, str]) -> bool | None:
        """Not asked of this runtime: its sources report their own ends."""
        del context
        return None

    def stop(self, request: StopRequest) -> StopResult:
        try:
            from kubernetes import client
            from kubernetes.client.rest import ApiException
            from kubernetes.config import ConfigException
        except ImportError:
            raise PermanentStopError(
                "the kubernetes backend needs the kubernetes extra: "
                "pip install 'early-stopping-sidecar[kubernetes]'"
            ) from None
        try:
            api = self.api_client()
        except (ConfigException, OSError) as exc:
            where = self.kubeconfig or "in-cluster config or ~/.kube/config"
            raise PermanentStopError(
                f"Kubernetes client configuration ({where}) could not be loaded: {exc}"
            ) from None
        namespace = render_template(self.namespace, request.context)
        grace = math.ceil(self.grace_seconds)
        try:
            if self.job is not None:
                name = render_template(self.job, request.context)
                client.BatchV1Api(api).delete_namespaced_job(
                    name,
                    namespace,
                    grace_period_seconds=grace,
                    propagation_policy="Background",
                    _request_timeout=self.request_timeout,
                )
            else:
                name = render_template(self.pod, request.context)
                client.CoreV1Api(api).delete_namespaced_pod(
                    name,
                    namespace,
                    grace_period_seconds=grace,
                    _request_timeout=self.request_timeout,
                )
        except ApiException as exc:
            if exc.status == 404:
                return StopResult.ALREADY_EXITED
            if exc.status == 403:
                raise PermanentStopError(self._forbidden(name, namespace, exc)) from None
            detail = _message(exc)
            raise StopError(
                f"Kubernetes API {exc.status} {exc.reason}" + (f": {detail}" if detail else "")
            ) from None
        except Exception as exc:  # connection errors and timeouts: retried
            raise StopError(f"Kubernetes API: {type(exc).__name__}: {exc}") from None
        return StopResult.STOPPED

    def _forbidden(self, name: str, namespace: str, exc: Any) -> str:
        """One message naming the verb, the resource and the Role rule that grants them."""
        if self.job is not None:
            kind, resource, group = "job", "jobs.batch", "batch"
        else:
            kind, resource, group = "pod", "pods", ""
        rule = (
            f"{{apiGroups: [{group!r}], resources: [{resource.split('.')[0]!r}], "
            "verbs: ['delete']}"
        )
        detail = _message(exc)
        return (
            f"Kubernetes RBAC: forbidden to delete {kind} {name!r} in namespace {namespace!r}: "
            f"the sidecar's service account lacks the verb 'delete' on resource '{resource}' "
            f"there; grant it with a Role rule {rule} in namespace {namespace!r}"
            + (f" (API server: {detail})" if detail else "")
        )


def _message(exc: Any) -> str:
    """The `message` of the API server's Status body, if it sent one."""
    try:
        doc = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return ""
    return str(doc.get("message", "")) if isinstance(doc, dict) else ""
