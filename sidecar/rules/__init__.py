"""The stopping rules by name: SageMaker's, Optuna's pruners, Katib's medianstop (docs/rules.md)."""

from __future__ import annotations

from sidecar.config import ObjectiveType, RuleSettings
from sidecar.rule import Rule, SageMakerMedianRule
from sidecar.rules.katib import KatibMedianRule
from sidecar.rules.optuna import (
    OptunaPercentileRule,
    OptunaSuccessiveHalvingRule,
    OptunaThresholdRule,
)
from sidecar.rules.patience import PatientRule


def make_rule(settings: RuleSettings, direction: ObjectiveType) -> Rule:
    """The rule named in the config, wrapped in `patience` when that is set."""
    optuna, katib = settings.optuna, settings.katib
    rule: Rule
    if settings.rule == "sagemaker":
        rule = SageMakerMedianRule(
            direction=direction, min_jobs=settings.min_jobs, start_epoch=settings.start_epoch
        )
    elif settings.rule in ("optuna-median", "optuna-percentile"):
        median = settings.rule == "optuna-median"
        percentile = 50.0 if median or optuna.percentile is None else float(optuna.percentile)
        rule = OptunaPercentileRule(
            name=settings.rule,
            direction=direction,
            percentile=percentile,
            n_startup_trials=optuna.n_startup_trials,
            n_warmup_steps=optuna.n_warmup_steps,
            interval_steps=optuna.interval_steps,
            n_min_trials=optuna.n_min_trials,
        )
    elif settings.rule == "optuna-successive-halving":
        rule = OptunaSuccessiveHalvingRule(
            direction=direction,
            min_resource=None if optuna.min_resource == "auto" else optuna.min_resource,
            reduction_factor=optuna.reduction_factor,
            min_early_stopping_rate=optuna.min_early_stopping_rate,
            bootstrap_count=optuna.bootstrap_count,
        )
    elif settings.rule == "optuna-threshold":
        rule = OptunaThresholdRule(
            lower=None if optuna.lower is None else float(optuna.lower),
            upper=None if optuna.upper is None else float(optuna.upper),
            n_warmup_steps=optuna.n_warmup_steps,
            interval_steps=optuna.interval_steps,
        )
    else:
        rule = KatibMedianRule(
            direction=direction,
            min_trials_required=katib.min_trials_required,
            start_step=katib.start_step,
        )
    if settings.patience is not None:
        rule = PatientRule(
            rule,
            direction=direction,
            patience=settings.patience.patience,
            min_delta=float(settings.patience.min_delta),
        )
    return rule
