"""Moving a study between deployments: its spec and finished trials as one document.

An export holds the spec and every finished trial (params with their
distributions, values, learning curve, user attributes, times). An import
creates the study from the spec and adds those trials to its Optuna study
(data only: storage.trial_documents checks them); they count against
``n_trials`` as they did where they ran, so the study goes on where it stopped.
Compute counters and MLflow runs stay behind (they belong to the old
deployment's tracking server).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.distributions import distribution_to_json
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial
from sqlalchemy.orm import Session

from storage.budget import update_status
from storage.errors import ErrorDetail, InvalidRequestError
from storage.events import record_event
from storage.models import Study, utcnow
from storage.optuna_store import delete_optuna_study, finite_or_none
from storage.spec import StudySpec
from storage.studies import create_study
from storage.trial_documents import FINISHED, check_trials

FORMAT = "hpo-study"
VERSION = 1


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


@dataclass(frozen=True)
class Imported:
    """An imported study, and what the import dropped from its trials."""

    study: Study
    warnings: list[ErrorDetail]


def import_study(
    session: Session,
    storage: RDBStorage,
    spec: StudySpec,
    trials: list[dict[str, Any]],
    actor: str | None,
) -> Imported:
    """Create the study of ``spec`` with ``trials`` (export documents) already finished.

    ``spec`` is validated and resolved by the caller; its ``warm_start`` is
    dropped (the trials it brought are in the history). The trials are
    checked whole before anything is written (storage.trial_documents: the
    spec's search space, Optuna's columns, the budget); ``hpo.*`` user
    attributes are dropped and reported as warnings. The study completes at
    once when the trials fill its budget.

    Raises:
        ConflictError: the name is taken.
        InvalidRequestError: a trial is invalid (located at ``trials.<i>.<field>``),
            or more trials count than ``budget.n_trials`` (located at ``trials``).
    """
    checked = check_trials(spec, trials)
    study = create_study(session, storage, spec.model_copy(update={"warm_start": None}), actor)
    assert study.optuna_study_id is not None
    target = optuna.load_study(
        study_name=storage.get_study_name_from_id(study.optuna_study_id), storage=storage
    )
    try:
        for index, trial in enumerate(checked.trials):
            try:
                target.add_trial(trial)
            except ValueError:
                # check_trials found none; Optuna's text may quote whole values.
                raise _bad(index, "Optuna refused the trial") from None
    except Exception:
        # Optuna's storage is another database: the caller's rollback does not reach it.
        delete_optuna_study(storage, spec.name)
        raise
    study.n_finished = checked.counted
    record_event(session, "imported", study.name, actor, trials=len(checked.trials))
    update_status(session, study, utcnow(), None)
    return Imported(study, checked.warnings)


def _bad(index: int, msg: str) -> InvalidRequestError:
    return InvalidRequestError("invalid trial in the import", [ErrorDetail(("trials", index), msg)])


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
