"""Mapping how a task ended to a trial outcome (Optuna's state mapping, plus reasons)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import optuna

from storage.budget import Outcome
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
        return TrialResult(Outcome("PRUNED", counted=True))
    except TrialInterrupted as exc:
        return interrupted(exc.reason)
    except TaskError as exc:
        return failed(exc.reason, exc)
    except Exception as exc:
        logger.exception("trial raised %s", type(exc).__name__)
        reason = "oom" if type(exc).__name__ == "OutOfMemoryError" else "exception"
        return failed(reason, exc)
    return completed(metrics, objectives)


def completed(metrics: Mapping[str, float], objectives: list[str]) -> TrialResult:
    """COMPLETE with the objective values, or FAIL when the task returned unusable metrics."""
    try:
        reported = {str(k): float(v) for k, v in dict(metrics).items()}
    except (TypeError, ValueError):
        message = f"the task must return a mapping of metric names to numbers, got {metrics!r}"
        return TrialResult(Outcome("FAIL", True, "task_error", message[:MAX_ERROR_CHARS]))
    missing = [m for m in objectives if m not in reported]
    if missing:
        returned = ", ".join(sorted(reported)) or "nothing"
        message = f"the task returned no value for {', '.join(missing)} (it returned {returned})"
        return TrialResult(Outcome("FAIL", True, "task_error", message))
    values = [reported[m] for m in objectives]
    if not all(math.isfinite(v) for v in values):
        message = f"non-finite objective value {values}"
        return TrialResult(Outcome("FAIL", True, "nan", message), metrics=reported)
    return TrialResult(Outcome("COMPLETE", counted=True), values=values, metrics=reported)


def failed(reason: str, exc: BaseException) -> TrialResult:
    message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    return TrialResult(Outcome("FAIL", True, reason, message))


def interrupted(reason: str) -> TrialResult:
    """Timeouts count against the budget; cancels and shutdowns hand the slot back."""
    if reason == "lost":
        return TrialResult(Outcome("FAIL", False, "lost"), lost=True)
    if reason == "timeout":
        return TrialResult(Outcome("FAIL", True, "timeout", "the trial ran past trial_timeout_s"))
    if reason == "cancelled":
        return TrialResult(Outcome("FAIL", False, "cancelled", "the study was cancelled"))
    return TrialResult(
        Outcome("FAIL", False, "interrupted", "the worker shut down; the trial was retried"),
        retry=True,
    )
