"""The fixed vocabularies shared by storage, the workers and the API.

Both are ``StrEnum``: a member is its string, so the stored rows, Optuna's
user attributes, MLflow tags and JSON bodies keep the exact values they had
as bare strings. A trial's own state is Optuna's ``TrialState``.
"""

from __future__ import annotations

import enum


class FailReason(enum.StrEnum):
    """Why a trial failed, or why its lease ended without counting.

    Trials show it as ``fail_reason`` (API) and ``hpo.fail_reason`` (Optuna
    user attribute, MLflow tag); leases store it in ``fail_reason``.
    """

    # The task's own failures (FAIL, counted against the budget).
    EXCEPTION = "exception"  # any exception the task did not explain
    TASK_ERROR = "task_error"  # the task explained it, or returned unusable metrics
    TASK_IMPORT = "task_import"  # a python:module:function task could not be loaded
    DATASET = "dataset"
    MODEL = "model"
    OOM = "oom"
    NAN = "nan"  # a non-finite objective value
    TIMEOUT = "timeout"  # ran past budget.trial_timeout_s
    # Ends the worker did not choose (the slot is handed back, or retried).
    LOST = "lost"  # the worker stopped heartbeating; a reaper took the trial
    ORPHANED = "orphaned"  # RUNNING in Optuna while no lease runs it
    INTERRUPTED = "interrupted"  # the worker shut down mid-trial; retried
    CANCELLED = "cancelled"  # the study was cancelled
    # Leases that never ran a trial.
    SHUTDOWN = "shutdown"  # the worker stopped between its claim and its ask
    ASK_FAILED = "ask_failed"  # Optuna's ask failed
    MISSING = "missing"  # the Optuna study was deleted behind the service
    # MLflow runs of a deleted study.
    STUDY_DELETED = "study_deleted"


class ErrorCode(enum.StrEnum):
    """The stable ``code`` of an error body; ``service/errors.py`` maps each to HTTP."""

    INVALID_SPEC = "invalid_spec"
    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    TOO_MANY_REQUESTS = "too_many_requests"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
