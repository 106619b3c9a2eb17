"""The kubernetes backend: delete the job's pod, or its owning batch Job, with a grace period."""

from __future__ import annotations

import math
import threading
from typing import Any

from sidecar.config import render_template
from sidecar.errors import ConfigError
from sidecar.stoppers import PermanentStopError, StopError, StopRequest, StopResult


class KubernetesStopper:
    """Deletes a Pod (`pod` template) or, when `job` is set, the batch Job so it is not recreated."""

    backend = "kubernetes"

    def __init__(
        self,
        *,
        namespace: str,
        pod: str,
        job: str | None,
        grace_seconds: float,
        kubeconfig: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.pod = pod
        self.job = job
        self.grace_seconds = grace_seconds
        self.kubeconfig = kubeconfig
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

    def stop(self, request: StopRequest) -> StopResult:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        api = self.api_client()
        namespace = render_template(self.namespace, request.context)
        grace = math.ceil(self.grace_seconds)
        if self.job is not None:
            name, resource, verb_target = (
                render_template(self.job, request.context),
                "jobs",
                "jobs.batch",
            )
        else:
            name, resource, verb_target = render_template(self.pod, request.context), "pods", "pods"
        try:
            if self.job is not None:
                client.BatchV1Api(api).delete_namespaced_job(
                    name,
                    namespace,
                    grace_period_seconds=grace,
                    propagation_policy="Background",  # its pods go too, with their grace period
                )
            else:
                client.CoreV1Api(api).delete_namespaced_pod(
                    name, namespace, grace_period_seconds=grace
                )
        except ApiException as exc:
            if exc.status == 404:
                return StopResult.ALREADY_GONE
            if exc.status == 403:
                raise PermanentStopError(
                    f"Kubernetes RBAC: not allowed to delete {resource} {name!r} in namespace "
                    f"{namespace!r}; grant the verb 'delete' on resource '{verb_target}' to the "
                    "sidecar's service account"
                ) from None
            raise StopError(f"Kubernetes API {exc.status}: {exc.reason}") from None
        except Exception as exc:  # connection errors: retried
            raise StopError(f"Kubernetes API: {exc}") from None
        return StopResult.STOPPED
