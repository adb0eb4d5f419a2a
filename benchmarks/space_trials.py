"""The trials of a default-space study, read back for the report."""

from __future__ import annotations

import math

import optuna


def study_trials(optuna_url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials in the order they were asked."""
    study = optuna.load_study(study_name=name, storage=optuna_url)
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def describe_trial(trial: optuna.trial.FrozenTrial, n_train: int) -> str:
    """The sampled values, then how long the trial trained: steps, epochs and seconds.

    Steps are the last reported step (optimizer steps); an epoch is
    ``n_train / batch_size`` of them, rounded up.
    """
    params = ", ".join(
        f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
    )
    steps = trial.last_step or 0
    per_epoch = math.ceil(n_train / int(trial.params.get("batch_size", 32)))
    seconds = (
        (trial.datetime_complete - trial.datetime_start).total_seconds()
        if trial.datetime_complete and trial.datetime_start
        else math.nan
    )
    return f"{params} | {steps} ({steps / per_epoch:.1f} ep) | {seconds:.0f}"
