"""An Optuna study tuning the shipped demo trainer's learning rate; the sidecar prunes the
losers from their printed output (docs/optuna.md).

    .venv/bin/python docs/optuna_example.py        # about 20 s

The trainer (`python -m sidecar.demo.trainer`) only prints its metrics; it knows nothing of
Optuna or the sidecar.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import optuna

from sidecar.integrations.optuna import run_trial

CONFIG = """
objective: {metric: val_loss, type: Minimize}
metric_definitions: [{Name: val_loss, Regex: 'val_loss=(\\S+)'}]
epoch: {regex: ' epoch (\\d+) '}
early_stopping: {rule: optuna-median, optuna: {n_startup_trials: 3}}
store: 'sqlite://%s'
log_level: warning
"""


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sidecar.yaml"
        config.write_text(CONFIG % (Path(tmp) / "history.db"))

        def objective(trial: optuna.Trial) -> float:
            lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
            argv = [sys.executable, "-m", "sidecar.demo.trainer", "--job", f"lr-{lr:.4f}"]
            argv += ["--lr", str(lr), "--epochs", "8", "--epoch-seconds", "0.1"]
            argv += ["--seed", str(trial.number)]
            return run_trial(trial, argv, config=config)  # prints the trainer's output through

        study = optuna.create_study(study_name="demo", sampler=optuna.samplers.TPESampler(seed=0))
        study.optimize(objective, n_trials=16)
    print()
    for t in study.trials:
        epochs = max(t.intermediate_values, default=0)
        shown = f"{t.value:.4f}" if t.value is not None else "-"
        print(
            f"trial {t.number:2d}  lr {t.params['lr']:.5f}  {t.state.name:8s}  epochs {epochs}  {shown}"
        )
    pruned = sum(t.state.name == "PRUNED" for t in study.trials)
    print(
        f"{pruned} of {len(study.trials)} trials pruned; best lr {study.best_params['lr']:.5f}, "
        f"val_loss {study.best_value:.4f}"
    )


if __name__ == "__main__":
    main()
