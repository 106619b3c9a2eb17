"""The stopper a config asks for."""

from __future__ import annotations

from sidecar.config import Config
from sidecar.errors import ConfigError
from sidecar.stoppers import NoneStopper, Stopper
from sidecar.stoppers.signal import SignalStopper, pid_file_resolver, process_match_resolver


def target_problem(config: Config) -> str | None:
    """What `run` would refuse in the stop section (a backend without a target), or None."""
    stop = config.stop
    if stop.backend == "signal" and not (stop.signal.pid_file or stop.signal.process_match):
        return (
            "stop.signal: the signal backend needs a target; set stop.signal.pid_file "
            "(e.g. '/run/training/{job}.pid') or stop.signal.process_match (a regex on the "
            "command line), or use stop.backend: none"
        )
    if stop.backend == "command" and not stop.command.argv:
        return (
            "stop.command.argv: the command backend needs an argv template, e.g. "
            "[kubectl, delete, pod, '{job}']"
        )
    return None


def make_prober(config: Config, stopper: Stopper) -> Stopper | None:
    """What can tell whether a job's process is alive (its exit then ends the job): the signal
    backend with a target and the docker backend, even under --dry-run; None for the others."""
    if stopper.backend in ("signal", "docker"):
        return stopper
    if config.stop.backend in ("signal", "docker") and target_problem(config) is None:
        return make_stopper(config)  # --dry-run: asking is harmless, stopping is not
    return None


def make_stopper(config: Config, *, dry_run: bool = False) -> Stopper:
    """The configured backend; `none` when dry-running. Raises ConfigError for a missing target."""
    stop = config.stop
    if dry_run or stop.backend == "none":
        return NoneStopper()
    problem = target_problem(config)
    if problem is not None:
        raise ConfigError(problem)
    if stop.backend == "signal":
        if stop.signal.pid_file:
            # with both, the command line checks that the pid file's pid is still the job's
            resolve = pid_file_resolver(stop.signal.pid_file, match=stop.signal.process_match)
        else:
            assert stop.signal.process_match is not None  # target_problem said so
            resolve = process_match_resolver(stop.signal.process_match)
        return SignalStopper(resolve, grace_seconds=stop.grace_seconds, scope=stop.signal.scope)
    if stop.backend == "docker":
        from sidecar.stoppers.docker import DockerStopper

        return DockerStopper(
            container=stop.docker.container,
            label=stop.docker.label,
            grace_seconds=stop.grace_seconds,
            host=stop.docker.host,
        )
    if stop.backend == "kubernetes":
        from sidecar.stoppers.kubernetes import KubernetesStopper

        return KubernetesStopper(
            namespace=stop.kubernetes.namespace,
            pod=stop.kubernetes.pod,
            job=stop.kubernetes.job,
            grace_seconds=stop.grace_seconds,
            kubeconfig=stop.kubernetes.kubeconfig,
        )
    from sidecar.stoppers.command import CommandStopper

    return CommandStopper(stop.command.argv, timeout=stop.command.timeout_seconds)
