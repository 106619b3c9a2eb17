"""Optuna drives, the sidecar prunes: real studies running the shipped trainer through
`run_trial`, and `SidecarPruner` against a real daemon (docs/optuna.md)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from sidecar.integrations.optuna import SidecarPruner, run_trial  # noqa: E402
from tests.helpers import replay_stops, write_curve_logs  # noqa: E402
from tests.integration.test_api import TOKEN, Daemon, push  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
LOGGED = re.compile(r"epoch (\d+) train_loss=\S+ val_loss=(\S+)")


def write_config(tmp: Path) -> Path:
    path = tmp / "config.yaml"
    path.write_text(
        "tuning_job: opt\nobjective: {metric: val_loss}\n"
        "metric_definitions: [{Name: val_loss, Regex: 'val_loss=(\\S+)'}]\n"
        "epoch: {regex: ' epoch (\\d+) '}\n"
        "early_stopping: {min_jobs: 2, start_epoch: 2}\n"
        f"store: 'sqlite://{tmp / 'h.db'}'\n"
        "stop: {grace_seconds: 5}\nlog_level: warning\n"
    )
    return path


def objective_for(cfg: Path, logs: Path) -> Any:
    def objective(trial: Any) -> float:
        lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
        argv = [sys.executable, "-m", "sidecar.demo.trainer", "--job", f"t{trial.number}"]
        argv += ["--lr", str(lr), "--epochs", "6", "--seed", str(trial.number)]
        argv += ["--epoch-seconds", "0.02", "--log", str(logs / f"trial-{trial.number:03d}.log")]
        return run_trial(trial, argv, config=cfg)

    return objective


def logged(path: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for m in LOGGED.finditer(path.read_text()):
        out.setdefault(int(m.group(1)), float(m.group(2)))
    return out


def same(a: dict[int, float], b: dict[int, float]) -> bool:
    """Equal, NaN equal to NaN (a diverged trainer prints nan)."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )


def test_a_study_prunes_exactly_the_jobs_replay_stops(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective_for(cfg, logs), n_trials=12)
    paths = sorted(logs.glob("*.log"))
    assert len(paths) == 12
    stops = replay_stops(cfg, paths)
    pruned = {f"trial-{t.number:03d}" for t in study.trials if t.state.name == "PRUNED"}
    assert pruned, "the sweep has losers"
    assert pruned == set(stops)
    for t in study.trials:
        values = logged(logs / f"trial-{t.number:03d}.log")
        assert same(t.intermediate_values, values)  # every logged value reported, at its epoch
        if t.state.name == "COMPLETE":
            last = values[max(values)]
            assert t.value == last or (math.isnan(t.value) and math.isnan(last))


def test_threads_keep_each_trial_s_reports_on_its_own_trial(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # n_jobs > 1 warns of the GIL
        study.optimize(objective_for(cfg, logs), n_trials=6, n_jobs=3)
    assert len(study.trials) == 6
    for t in study.trials:
        assert same(t.intermediate_values, logged(logs / f"trial-{t.number:03d}.log"))


def test_a_failing_command_raises_naming_its_exit_code(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    study = optuna.create_study()

    def objective(trial: Any) -> float:
        return run_trial(trial, [sys.executable, "-c", "raise SystemExit(3)"], config=cfg)

    with pytest.raises(RuntimeError, match="code 3"):
        study.optimize(objective, n_trials=1, catch=())


CURVES = [[1.0, 0.8, 0.6, 0.5], [0.9, 0.7, 0.5, 0.4], [1.5, 1.4, 1.3, 1.2], [2.0, 1.9, 1.8, 1.7]]


def test_sidecar_pruner_prunes_as_the_daemon_decides(tmp_path: Path) -> None:
    with Daemon(tmp_path).running() as d:
        pruner = SidecarPruner(f"http://127.0.0.1:{d.port}", tuning_job="api", token=TOKEN)
        study = optuna.create_study(pruner=pruner)
        for values in CURVES:
            trial = study.ask()
            for epoch, v in enumerate(values, 1):
                trial.report(v, step=epoch)
                if trial.should_prune():
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    break
            else:
                study.tell(trial, values[-1])
        pruned = {
            f"trial-{t.number}": t.last_step for t in study.trials if t.state.name == "PRUNED"
        }
        curves = {f"trial-{k}": values for k, values in enumerate(CURVES)}
        expected = replay_stops(d.config, write_curve_logs(tmp_path, curves))
        assert expected and pruned == expected
        assert pruner.errors == 0
        assert push(d, "x", {"values": []})[0] == 400  # the endpoint is the one in use
    down = SidecarPruner(f"http://127.0.0.1:{d.port}", tuning_job="api", token=TOKEN, timeout=1)
    study = optuna.create_study(pruner=down)
    trial = study.ask()
    trial.report(5.0, step=1)
    assert trial.should_prune() is False  # an unreachable sidecar never prunes
    assert down.errors == 1


def test_importing_sidecar_does_not_import_optuna() -> None:
    code = "import sys, sidecar, sidecar.cli, sidecar.daemon; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_documented_example_runs_and_prunes() -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "optuna_example.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.match(r"\d+ of 16 trials pruned; best lr", summary)
    assert not summary.startswith("0 of")
