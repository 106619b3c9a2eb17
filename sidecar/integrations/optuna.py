"""Optuna drives, the sidecar prunes (docs/optuna.md): `run_trial` runs a trial's command as
`sidecar exec` does and reports its logged objective values to the trial; `SidecarPruner` asks a
running sidecar (its push endpoint) whether to prune. Needs the `optuna` extra; importing
`sidecar` never imports optuna."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from sidecar.config import Config

log = logging.getLogger("sidecar.integrations.optuna")


class TrialCommandFailed(RuntimeError):  # noqa: N818 - the name says what happened
    """The trial's command ended with a non-zero exit code (and the sidecar had not stopped it)."""

    def __init__(self, argv: Sequence[str], code: int) -> None:
        super().__init__(f"{argv[0]!r} exited with code {code}")
        self.code = code


def _load(config: str | Path | Config) -> Config:
    if isinstance(config, Config):
        return config
    from sidecar.cli import read_runnable_config

    return read_runnable_config(str(config))


def run_trial(
    trial: optuna.Trial,
    argv: Sequence[str],
    *,
    config: str | Path | Config,
    job: str | None = None,
) -> float:
    """Run `argv` as `sidecar exec` runs it; report each objective value to `trial` at its
    epoch; raise `optuna.TrialPruned` when the sidecar stopped it, TrialCommandFailed when it
    failed; return its last objective value when it ended by itself.

    The job is `trial-<number>` unless `job` names it; the tuning job is the config's
    `tuning_job` when the config sets one, else the study's name.
    """
    from sidecar.execute import execute

    settings = _load(config)
    from sidecar.logsetup import configure

    configure(settings.log_level)  # the sidecar's own events, at the config's level, on stderr
    tuning_job = (
        settings.tuning_job if "tuning_job" in settings.model_fields_set else trial.study.study_name
    )
    name = job or f"trial-{trial.number}"
    metric = settings.objective.metric
    reported: dict[int, float] = {}
    last: list[float] = []
    lock = threading.Lock()

    def publish(kind: str, data: dict[str, Any]) -> None:
        # the job's key is the name, or `name~N` for a rerun: both are this trial's
        if kind != "value" or data.get("tuning_job") != tuning_job:
            return
        if data.get("job", "").split("~")[0] != name:
            return
        epoch, value = int(data["epoch"]), float(data["value"])
        with lock:
            last[:] = [value]
            if epoch in reported:
                return  # Optuna keeps the first value of a step: so does its report
            reported[epoch] = value
        trial.report(value, step=epoch)

    outcome = execute(settings, job=name, argv=argv, tuning_job=tuning_job, publish=publish)
    if outcome.stopped:
        epoch = outcome.decision.epoch if outcome.decision else None
        raise optuna.TrialPruned(f"stopped by the sidecar ({metric}) at epoch {epoch}")
    if outcome.code != 0:
        raise TrialCommandFailed(argv, outcome.code)
    if not last:
        raise TrialCommandFailed(argv, outcome.code) from ValueError(
            f"{argv[0]!r} printed no {metric!r} value the config's definitions extract"
        )
    return last[0]


class SidecarPruner(optuna.pruners.BasePruner):
    """Prunes as a running sidecar decides: `prune` pushes the trial's latest intermediate value
    to the sidecar's push endpoint (docs/api.md) and returns its answer. Workers on many hosts
    share one history and any rule. A sidecar that cannot be reached never prunes (logged and
    counted in `errors`): an outage degrades to no pruning."""

    def __init__(
        self,
        url: str,
        *,
        tuning_job: str | None = None,
        token: str | None = None,
        timeout: float = 5,
    ) -> None:
        self.url = url.rstrip("/")
        self.tuning_job = tuning_job
        self.token = token
        self.timeout = timeout
        self.errors = 0
        self._metric: dict[str, str] = {}

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read())

    def _objective(self, tuning_job: str) -> str:
        if tuning_job not in self._metric:
            listing = self._call("GET", "/api/v1/tuning-jobs")
            for entry in listing["tuning_jobs"]:
                self._metric[entry["name"]] = entry["objective"]["metric"]
        return self._metric[tuning_job]

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        tuning_job = self.tuning_job or study.study_name
        job = urllib.parse.quote(f"trial-{trial.number}", safe="")
        try:
            metric = self._objective(tuning_job)
            answer = self._call(
                "POST",
                f"/api/v1/tuning-jobs/{urllib.parse.quote(tuning_job, safe='')}/jobs/{job}/values",
                {"values": [{"metric": metric, "epoch": step, "value": value}]},
            )
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            self.errors += 1
            log.warning("sidecar unreachable, not pruning trial %s: %s", trial.number, exc)
            return False
        return bool(answer.get("stop"))
