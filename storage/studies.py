"""Studies: create, read, list, transitions and delete (one unit of work each).

Functions take the caller's session and never commit; the Optuna side effects
happen inside the caller's transaction so that a failure rolls both back.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RDBStorage
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.budget import update_status
from storage.errors import ConflictError, ErrorDetail, InvalidRequestError, NotFoundError, quote
from storage.events import notify_claimable, record_event
from storage.models import CLAIMABLE, TERMINAL, Study, StudyStatus, utcnow
from storage.optuna_store import ATTR_ENQUEUED_BY, create_optuna_study
from storage.search_space import param_problem, to_distributions
from storage.spec import NAME_PATTERN, StudySpec
from storage.warm_start import enqueue_warm_start, plan_warm_start

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transition:
    allowed_from: frozenset[StudyStatus]
    target: Callable[[Study], StudyStatus]


TRANSITIONS: dict[str, Transition] = {
    "pause": Transition(frozenset(CLAIMABLE), lambda s: StudyStatus.PAUSED),
    "resume": Transition(
        frozenset({StudyStatus.PAUSED}),
        lambda s: StudyStatus.RUNNING if s.started_at else StudyStatus.QUEUED,
    ),
    "cancel": Transition(
        frozenset({*CLAIMABLE, StudyStatus.PAUSED}), lambda s: StudyStatus.CANCELLED
    ),
}


def get_study(session: Session, name: str, *, lock: bool = False) -> Study:
    """The study called ``name``; ``lock`` takes its row lock for the transaction.

    Raises:
        NotFoundError: no such study.
    """
    if not re.fullmatch(NAME_PATTERN, name):
        raise NotFoundError(f"study {quote(name)} not found")  # no study can have that name
    query = select(Study).where(Study.name == name)
    if lock:
        query = query.with_for_update()
    study = session.scalars(query).one_or_none()
    if study is None:
        raise NotFoundError(f"study {name!r} not found")
    return study


def list_studies(
    session: Session, status: StudyStatus | None, limit: int, offset: int
) -> tuple[list[Study], int]:
    """A page of studies, newest first, and the total that match."""
    query = select(Study)
    if status is not None:
        query = query.where(Study.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(query.order_by(Study.id.desc()).limit(limit).offset(offset)).all()
    return list(page), total


def create_study(
    session: Session, optuna_storage: RDBStorage, spec: StudySpec, actor: str | None
) -> Study:
    """Store a validated spec and create its Optuna study.

    Raises:
        ConflictError: the name is taken (here or in Optuna's storage).
        InvalidSpecError: ``warm_start`` names no usable study.
    """
    if session.scalar(select(Study.id).where(Study.name == spec.name)) is not None:
        raise ConflictError(f"a study named {spec.name!r} already exists")
    warm = plan_warm_start(session, optuna_storage, spec)
    study = Study(
        name=spec.name,
        status=StudyStatus.QUEUED,
        spec=spec.model_dump(mode="json"),
        priority=spec.priority,
        n_trials=spec.budget.n_trials,
        max_concurrent_trials=spec.budget.max_concurrent_trials,
        max_compute_s=spec.budget.max_compute_s,
        max_train_examples=spec.budget.max_train_examples,
        n_active=0,
        n_finished=0,
        n_lost=0,
        n_claims=0,
        created_by=actor,
    )
    session.add(study)
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(f"a study named {spec.name!r} already exists") from None
    try:
        study.optuna_study_id = create_optuna_study(optuna_storage, spec)
    except optuna.exceptions.DuplicatedStudyError:
        raise ConflictError(
            f"Optuna's storage already holds a study named {spec.name!r}; "
            "delete it there or choose another name"
        ) from None
    enqueue_warm_start(optuna_storage, study.optuna_study_id, warm, actor)
    record_event(
        session,
        "created",
        spec.name,
        actor,
        n_trials=spec.budget.n_trials,
        warm_start=[item.source for item in warm],
    )
    notify_claimable(session)
    return study


def transition_study(session: Session, name: str, action: str, actor: str | None) -> Study:
    """Apply ``pause``, ``resume`` or ``cancel``.

    Raises:
        NotFoundError: no such study.
        ConflictError: the transition is not allowed from the current status.
    """
    transition = TRANSITIONS[action]
    study = get_study(session, name, lock=True)
    if StudyStatus(study.status) not in transition.allowed_from:
        raise ConflictError(f"cannot {action} a study that is {study.status}")
    previous = study.status
    study.status = transition.target(study)
    study.updated_at = utcnow()
    if study.status == StudyStatus.CANCELLED:
        study.finished_at = utcnow()
        study.status_reason = f"cancelled by {actor or 'a user'}"
    record_event(session, action, name, actor, previous=previous, status=study.status)
    if action == "resume":
        # A study whose budget ran out while paused completes now rather than idle forever.
        update_status(session, study, utcnow(), None)
        notify_claimable(session)
    return study


def delete_study(
    session: Session, optuna_storage: RDBStorage, name: str, actor: str | None
) -> None:
    """Delete a study, its leases and its Optuna study (MLflow runs are kept).

    Raises:
        NotFoundError: no such study.
        ConflictError: trials of the study are running.
    """
    study = get_study(session, name, lock=True)
    if study.n_active > 0:
        raise ConflictError(
            f"{study.n_active} trial(s) of {name!r} are running; cancel the study and "
            "wait for them to stop"
        )
    session.delete(study)
    session.flush()
    if study.optuna_study_id is not None:
        # By id: a study created under the same name behind the service is not ours.
        with contextlib.suppress(KeyError):
            optuna_storage.delete_study(study.optuna_study_id)
    record_event(session, "deleted", name, actor)


def enqueue_trial(
    session: Session,
    optuna_storage: RDBStorage,
    name: str,
    params: dict[str, Any],
    actor: str | None,
) -> dict[str, Any]:
    """Enqueue a fixed configuration; workers run enqueued trials first.

    Returns the params as Optuna will use them.

    Raises:
        NotFoundError: no such study.
        ConflictError: the study has ended, or its Optuna study no longer exists.
        InvalidRequestError: a parameter is unknown or outside its range.
    """
    study = get_study(session, name)
    if StudyStatus(study.status) in TERMINAL:
        raise ConflictError(f"study {name!r} is {study.status}; it takes no more trials")
    spec = StudySpec.model_validate(study.spec)
    distributions = to_distributions(spec.search_space or {})
    problems = {key: param_problem(key, value, distributions) for key, value in params.items()}
    errors = [ErrorDetail(("params", key), p) for key, p in problems.items() if p is not None]
    if errors:
        raise InvalidRequestError("invalid parameters", errors)
    _optuna_study(optuna_storage, study).enqueue_trial(
        params, user_attrs={ATTR_ENQUEUED_BY: actor or "anonymous"}
    )
    study.updated_at = utcnow()  # the row's version: readers recount the trials
    record_event(session, "enqueued", name, actor, params=params)
    notify_claimable(session)
    return params


def _optuna_study(optuna_storage: RDBStorage, study: Study) -> optuna.Study:
    """The Optuna study of ``study``, found by id (a name may have been reused).

    Raises:
        ConflictError: it no longer exists (deleted or renamed behind the service).
    """
    try:
        if study.optuna_study_id is None:
            raise KeyError(study.name)
        name = optuna_storage.get_study_name_from_id(study.optuna_study_id)
    except KeyError:
        raise ConflictError(
            f"the Optuna study of {study.name!r} no longer exists; it takes no more trials"
        ) from None
    return optuna.load_study(study_name=name, storage=optuna_storage)
