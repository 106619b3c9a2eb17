"""Integrations with tuners: `sidecar.integrations.optuna` (extra `optuna`)."""
