"""Mapping how a task ended to a trial outcome (Optuna's state mapping, plus reasons)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from storage.budget import Outcome
from storage.states import FailReason
from workers.errors import TaskError, TrialInterrupted

logger = logging.getLogger(__name__)
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class TrialResult:
    """The outcome plus what to tell Optuna."""

    outcome: Outcome
    values: list[float] | None = None
    retry: bool = False  # enqueue the same configuration again (a clean hand-back)
    lost: bool = False  # the lease was taken away: tell nothing
    metrics: dict[str, float] = field(default_factory=dict)  # everything the task returned


def run_task(task: Callable[[], Mapping[str, float]], objectives: list[str]) -> TrialResult:
    """Run ``task`` and map its end: TrialPruned -> PRUNED, exceptions -> FAIL."""
    try:
        metrics = task()
    except optuna.TrialPruned:
        return TrialResult(Outcome(TrialState.PRUNED, counted=True))
    except TrialInterrupted as exc:
        return interrupted(exc.reason)
    except TaskError as exc:
        return failed(exc.reason, exc)
    except Exception as exc:
        logger.exception("trial raised %s", type(exc).__name__)
        oom = type(exc).__name__ == "OutOfMemoryError"
        return failed(FailReason.OOM if oom else FailReason.EXCEPTION, exc)
    return completed(metrics, objectives)


def completed(metrics: Mapping[str, float], objectives: list[str]) -> TrialResult:
    """COMPLETE with the objective values, or FAIL when the task returned unusable metrics."""
    try:
        reported = {str(k): float(v) for k, v in dict(metrics).items()}
    except (TypeError, ValueError):
        message = f"the task must return a mapping of metric names to numbers, got {metrics!r}"
        return _failed_with(FailReason.TASK_ERROR, message)
    missing = [m for m in objectives if m not in reported]
    if missing:
        returned = ", ".join(sorted(reported)) or "nothing"
        message = f"the task returned no value for {', '.join(missing)} (it returned {returned})"
        return _failed_with(FailReason.TASK_ERROR, message)
    values = [reported[m] for m in objectives]
    if not all(math.isfinite(v) for v in values):
        message = f"non-finite objective value {values}"
        return _failed_with(FailReason.NAN, message, reported)
    return TrialResult(Outcome(TrialState.COMPLETE, counted=True), values=values, metrics=reported)


def failed(reason: FailReason, exc: BaseException) -> TrialResult:
    """FAIL, counted, with the exception's type and text as the error."""
    return _failed_with(reason, f"{type(exc).__name__}: {exc}")


def _failed_with(
    reason: FailReason, message: str, metrics: dict[str, float] | None = None
) -> TrialResult:
    outcome = Outcome(TrialState.FAIL, True, reason, message[:MAX_ERROR_CHARS])
    return TrialResult(outcome, metrics=metrics or {})


def lost(error: str | None = None) -> TrialResult:
    """FAIL, not counted: the lease was taken away, so nothing is told."""
    return TrialResult(Outcome(TrialState.FAIL, False, FailReason.LOST, error), lost=True)


def interrupted(reason: FailReason) -> TrialResult:
    """Timeouts count against the budget; cancels and shutdowns hand the slot back."""
    if reason == FailReason.LOST:
        return lost()
    if reason == FailReason.TIMEOUT:
        return _failed_with(FailReason.TIMEOUT, "the trial ran past trial_timeout_s")
    if reason == FailReason.CANCELLED:
        return TrialResult(
            Outcome(TrialState.FAIL, False, FailReason.CANCELLED, "the study was cancelled")
        )
    shutdown = "the worker shut down; the trial was retried"
    return TrialResult(
        Outcome(TrialState.FAIL, False, FailReason.INTERRUPTED, shutdown), retry=True
    )
