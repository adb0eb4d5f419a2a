"""Moving a study between deployments: its spec and finished trials as one document.

An export holds the spec and every finished trial (params with their
distributions, values, learning curve, user attributes, times). An import
creates the study from the spec and adds those trials to its Optuna study;
they count against ``n_trials``, so the study goes on where it stopped.
Compute counters and MLflow runs stay behind (they belong to the old
deployment's tracking server).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session

from storage.budget import update_status
from storage.errors import ErrorDetail, InvalidRequestError
from storage.events import record_event
from storage.models import Study, utcnow
from storage.optuna_store import delete_optuna_study, finite_or_none
from storage.spec import StudySpec
from storage.studies import create_study

FORMAT = "hpo-study"
VERSION = 1
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def export_study(storage: RDBStorage, study: Study) -> dict[str, Any]:
    """The export document of ``study``: spec, status and finished trials in number order.

    Raises:
        KeyError: its Optuna study no longer exists.
    """
    if study.optuna_study_id is None:
        raise KeyError(study.name)
    trials = storage.get_all_trials(study.optuna_study_id, deepcopy=False, states=FINISHED)
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": datetime.now(UTC).isoformat(),
        "name": study.name,
        "status": study.status,
        "spec": study.spec,
        "trials": [_trial_document(t) for t in sorted(trials, key=lambda t: t.number)],
    }


def _trial_document(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": dict(trial.params),
        "distributions": {k: distribution_to_json(d) for k, d in trial.distributions.items()},
        "values": [finite_or_none(v) for v in trial.values] if trial.values is not None else None,
        "intermediate_values": {
            str(step): finite_or_none(v) for step, v in sorted(trial.intermediate_values.items())
        },
        "user_attrs": dict(trial.user_attrs),
        "datetime_start": _iso(trial.datetime_start),
        "datetime_complete": _iso(trial.datetime_complete),
    }


def import_study(
    session: Session,
    storage: RDBStorage,
    spec: StudySpec,
    trials: list[dict[str, Any]],
    actor: str | None,
) -> Study:
    """Create the study of ``spec`` with ``trials`` (export documents) already finished.

    ``spec`` is validated and resolved by the caller; its ``warm_start`` is
    dropped (the trials it brought are in the history). The study completes
    at once when the trials fill its budget.

    Raises:
        ConflictError: the name is taken.
        InvalidRequestError: a trial is inconsistent (located at ``trials.<i>``).
    """
    frozen = [_frozen_trial(index, item) for index, item in enumerate(trials)]
    study = create_study(session, storage, spec.model_copy(update={"warm_start": None}), actor)
    assert study.optuna_study_id is not None
    target = optuna.load_study(
        study_name=storage.get_study_name_from_id(study.optuna_study_id), storage=storage
    )
    try:
        for index, trial in enumerate(frozen):
            try:
                target.add_trial(trial)
            except ValueError as exc:
                raise _bad(index, (), str(exc)) from None
    except Exception:
        # Optuna's storage is another database: the caller's rollback does not reach it.
        delete_optuna_study(storage, spec.name)
        raise
    study.n_finished = len(frozen)
    record_event(session, "imported", study.name, actor, trials=len(frozen))
    update_status(session, study, utcnow(), None)
    return study


def _frozen_trial(index: int, item: dict[str, Any]) -> FrozenTrial:
    try:
        state = TrialState[str(item.get("state"))]
    except KeyError:
        raise _bad(index, ("state",), "must be COMPLETE, PRUNED or FAIL") from None
    if state not in FINISHED:
        raise _bad(index, ("state",), "must be COMPLETE, PRUNED or FAIL")
    try:
        distributions = {
            name: json_to_distribution(text)
            for name, text in (item.get("distributions") or {}).items()
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise _bad(index, ("distributions",), f"not an Optuna distribution ({exc})") from None
    try:
        trial = FrozenTrial(
            number=index,
            state=state,
            value=None,
            values=item.get("values") if state != TrialState.FAIL else None,
            datetime_start=_time(item.get("datetime_start")),
            datetime_complete=_time(item.get("datetime_complete")),
            params=dict(item.get("params") or {}),
            distributions=distributions,
            user_attrs=dict(item.get("user_attrs") or {}),
            system_attrs={},
            intermediate_values={
                int(step): (math.nan if v is None else float(v))
                for step, v in (item.get("intermediate_values") or {}).items()
            },
            trial_id=index,
        )
        trial._validate()
    except (ValueError, TypeError) as exc:
        raise _bad(index, (), str(exc)) from None
    return trial


def _bad(index: int, loc: tuple[str, ...], msg: str) -> InvalidRequestError:
    return InvalidRequestError(
        "invalid trial in the import", [ErrorDetail(("trials", index, *loc), msg)]
    )


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is None else parsed.astimezone(UTC).replace(tzinfo=None)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
