"""Exceptions that tasks raise and the runner maps to trial outcomes.

Following Optuna: ``optuna.TrialPruned`` -> PRUNED; any other exception -> FAIL,
with a ``fail_reason`` taken from the exception (``exception`` by default).
"""

from __future__ import annotations

from storage.states import FailReason


class TaskError(Exception):
    """A failure that the task explains to the user; the trial is not retried."""

    reason = FailReason.TASK_ERROR


class DatasetError(TaskError):
    """The dataset of a spec cannot be used (missing, empty, wrong columns...)."""

    reason = FailReason.DATASET


class ModelLoadError(TaskError):
    """A model could not be loaded (unknown path, no internet for a hub id...)."""

    reason = FailReason.MODEL


class OutOfMemory(TaskError):
    """The device ran out of memory; retrying the same configuration would too."""

    reason = FailReason.OOM


class TrialInterrupted(BaseException):
    """The trial must stop now: it timed out, its lease was lost, the worker shuts
    down, or the study was cancelled (``reason`` says which).

    A ``BaseException`` so that a task's ``except Exception`` does not swallow it.
    """

    def __init__(self, reason: FailReason) -> None:
        super().__init__(reason)
        self.reason = reason
