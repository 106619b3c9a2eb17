"""Shadow rules in real `sidecar exec` runs: only the live rule stops; each shadow's decisions
are logged, stored and shown by `status`, and equal what `replay` decides with that rule live."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import replay_stops
from tests.integration.test_execute import config, run_exec

CURVES = {
    "a": [1.0, 0.8, 0.6, 0.5],
    "b": [1.2, 1.1, 1.0, 0.9],
    "c": [0.9, 0.7, 0.5, 0.4],
    "d": [1.1, 0.95, 0.9, 0.85],
}
LIVE = (
    "{rule: optuna-threshold, optuna: {upper: 100},"
    " shadow: [{rule: sagemaker, min_jobs: 1}, {rule: optuna-median, optuna: {n_startup_trials: 1}}]}"
)


def lines(values: list[float]) -> str:
    return "".join(f"epoch {e} val_loss={v}\n" for e, v in enumerate(values, 1))


def test_shadow_rules_decide_beside_the_live_rule_and_never_stop(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        early_stopping=LIVE,
        epoch="{regex: '^epoch (\\d+)'}",
        log_level="info",
        early_stopped_exit_code="7",
    )
    events = []
    for job, values in CURVES.items():
        script = f"import sys; sys.stdout.write({lines(values)!r})"
        done = run_exec(cfg, job, script)
        assert done.returncode == 0, done.stderr  # never stopped: only the live rule stops
        events += [
            json.loads(line)
            for line in done.stderr.decode().splitlines()
            if line.startswith("{") and '"shadow_stop_decision"' in line
        ]
    status = subprocess.run(
        [sys.executable, "-m", "sidecar", "status", "-c", str(cfg), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    jobs = json.loads(status.stdout)["tuning_jobs"][0]["jobs"]
    assert all(j["status"] == "Completed" for j in jobs)
    shown = {(j["job"], d["rule"]): d["epoch"] for j in jobs for d in j["shadow_decisions"]}
    assert shown == {(e["job"], e["rule"]): e["epoch"] for e in events}
    for label, block in (
        ("sagemaker", "{rule: sagemaker, min_jobs: 1}"),
        ("optuna-median", "{rule: optuna-median, optuna: {n_startup_trials: 1}}"),
    ):
        logs = []
        for job, values in CURVES.items():
            path = tmp_path / f"{job}.log"
            path.write_text(lines(values))
            logs.append(str(path))
        (tmp_path / label).mkdir()
        live = config(tmp_path / label, early_stopping=block, epoch="{regex: '^epoch (\\d+)'}")
        stops = replay_stops(live, logs)
        assert stops, label  # not vacuous: this rule stops something here
        assert stops == {job: epoch for (job, rule), epoch in shown.items() if rule == label}
