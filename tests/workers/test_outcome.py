"""Optuna's state mapping, and what a task's return value may be."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from storage.states import FailReason
from workers.errors import DatasetError, OutOfMemory, TrialInterrupted
from workers.outcome import run_task


def _raise(exc: BaseException) -> None:
    raise exc


@pytest.mark.parametrize(
    ("raised", "state", "reason", "counted"),
    [
        (optuna.TrialPruned(), TrialState.PRUNED, None, True),
        (ValueError("boom"), TrialState.FAIL, "exception", True),
        (DatasetError("no such column"), TrialState.FAIL, "dataset", True),
        (OutOfMemory("CUDA out of memory"), TrialState.FAIL, "oom", True),
        (TrialInterrupted(FailReason.TIMEOUT), TrialState.FAIL, "timeout", True),
        (TrialInterrupted(FailReason.CANCELLED), TrialState.FAIL, "cancelled", False),
        (TrialInterrupted(FailReason.INTERRUPTED), TrialState.FAIL, "interrupted", False),
    ],
)
def test_exceptions_map_to_states(
    raised: BaseException, state: TrialState, reason: str | None, counted: bool
) -> None:
    result = run_task(lambda: _raise(raised), ["loss"])  # type: ignore[arg-type, return-value]
    assert (result.outcome.state, result.outcome.fail_reason) == (state, reason)
    assert result.outcome.counted is counted
    assert result.retry is (reason == "interrupted")


def test_lost_trials_tell_nothing() -> None:
    result = run_task(lambda: _raise(TrialInterrupted(FailReason.LOST)), ["loss"])  # type: ignore[arg-type, return-value]
    assert result.lost and not result.outcome.counted


def test_a_completed_trial_keeps_every_metric() -> None:
    result = run_task(lambda: {"loss": 1, "accuracy": 0.5}, ["loss"])
    assert result.outcome.state == TrialState.COMPLETE and result.values == [1.0]
    assert result.metrics == {"loss": 1.0, "accuracy": 0.5}


@pytest.mark.parametrize(
    "returned", [None, 3.0, {"loss": "low"}, {"other": 1.0}, {"loss": math.nan}]
)
def test_unusable_returns_fail_the_trial(returned: object) -> None:
    result = run_task(lambda: returned, ["loss"])  # type: ignore[arg-type, return-value]
    assert result.outcome.state == TrialState.FAIL
    assert result.outcome.fail_reason in ("task_error", "nan")
    assert result.outcome.error
