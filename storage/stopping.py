"""When a study stops starting trials: compute budgets spent, stop conditions met.

Both are checked under the study's row lock by whoever settles a trial (a
worker or the reaper). Once one holds, no new trial is claimed; the study
completes, with the reason, when its last running trial has finished.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, or_

from storage.models import Study


@dataclass(frozen=True)
class Usage:
    """What one trial used: device-seconds of training and training examples seen."""

    compute_s: float = 0.0
    train_examples: int = 0


def add_usage(study: Study, usage: Usage | None) -> None:
    """Charge a settled trial's usage to its study (counted or not: it was spent)."""
    if usage is None:
        return
    study.compute_s = (study.compute_s or 0.0) + max(0.0, usage.compute_s)
    study.train_examples = (study.train_examples or 0) + max(0, usage.train_examples)


def budget_spent(study: Study) -> str | None:
    """Why the study's compute budget allows no new trial, or None."""
    if study.max_compute_s is not None and study.compute_s >= study.max_compute_s:
        return (
            f"compute budget spent ({study.compute_s:.0f} of {study.max_compute_s:g} "
            "device-seconds)"
        )
    if study.max_train_examples is not None and study.train_examples >= study.max_train_examples:
        return (
            f"training-example budget spent ({study.train_examples} of "
            f"{study.max_train_examples} examples)"
        )
    return None


def may_start_trials() -> ColumnElement[bool]:
    """The SQL form of "no stop reason and budget left" for the claim query."""
    return and_(
        Study.stop_reason.is_(None),
        or_(Study.max_compute_s.is_(None), Study.compute_s < Study.max_compute_s),
        or_(
            Study.max_train_examples.is_(None),
            Study.train_examples < Study.max_train_examples,
        ),
    )


def why_stopped(study: Study) -> str | None:
    """Why no new trial may start (besides ``n_trials`` and concurrency), or None."""
    return study.stop_reason or budget_spent(study)


def record_value(study: Study, value: float | None, trial_number: int | None) -> None:
    """Track the best value of a single-objective study and check ``budget.stop_when``.

    Called for every counted trial, after ``n_finished`` counted it; ``value``
    is None for a pruned or failed one (it did not improve). Sets
    ``stop_reason`` when a condition holds.
    """
    if study.stop_reason is not None:
        return
    objectives = study.spec.get("objectives") or [study.spec.get("objective") or {}]
    if len(objectives) != 1:
        return
    maximize = objectives[0].get("direction", "minimize") == "maximize"
    stop_when = (study.spec.get("budget") or {}).get("stop_when") or {}
    min_delta = float(stop_when.get("min_delta") or 0.0)
    if value is not None and _improves(value, study.best_value, maximize, min_delta):
        study.best_value = value
        study.best_at_finished = study.n_finished
    target = stop_when.get("target")
    if (
        value is not None
        and target is not None
        and (value >= target if maximize else value <= target)
    ):
        study.stop_reason = f"target {target:g} reached by trial {trial_number} ({value:g})"
        return
    patience = stop_when.get("no_improvement_trials")
    stale = study.n_finished - (study.best_at_finished or 0)
    if patience is not None and stale >= patience:
        best = "none" if study.best_value is None else f"{study.best_value:g}"
        study.stop_reason = (
            f"no improvement over {stale} finished trials (best {best}, min_delta {min_delta:g})"
        )


def _improves(value: float, best: float | None, maximize: bool, min_delta: float) -> bool:
    if best is None:
        return True
    gain = value - best if maximize else best - value
    return gain > min_delta
