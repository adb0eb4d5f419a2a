"""``/studies/{name}/trials``, ``/best``, ``/importance``: read from Optuna's storage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from service.deps import ReadDep, StateDep, WriteDep
from service.responses import MAX_OFFSET, errors_for
from service.schemas import (
    EnqueueIn,
    EnqueueOut,
    ImportancesOut,
    ObjectiveImportances,
    ParetoFront,
    TrialOut,
    TrialPage,
    TrialStateName,
)
from service.state import AppState
from service.views import trial_views
from storage import studies
from storage.errors import ConflictError, NotFoundError
from storage.models import Study
from storage.spec import StudySpec

router = APIRouter(prefix="/studies/{name}", tags=["trials"])


def _load(state: AppState, name: str) -> Study:
    with state.db.session_scope(read_only=True) as session:
        study = studies.get_study(session, name)
    if study.optuna_study_id is None:
        raise NotFoundError(f"study {name!r} has no Optuna study")
    return study


@router.get("/trials", response_model=TrialPage, responses=errors_for(401, 403, 404, 422, 503))
def list_trials(
    name: str,
    state: StateDep,
    _: ReadDep,
    trial_state: Annotated[TrialStateName | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> TrialPage:
    """A page of trials in order of number."""
    study = _load(state, name)
    assert study.optuna_study_id is not None
    page, total = state.reader.page(study.optuna_study_id, trial_state, limit, offset)
    return TrialPage(items=trial_views(state, study, page), total=total, limit=limit, offset=offset)


@router.get(
    "/trials/{number}", response_model=TrialOut, responses=errors_for(401, 403, 404, 422, 503)
)
def get_trial(
    name: str, number: Annotated[int, Path(ge=0, le=2**31 - 1)], state: StateDep, _: ReadDep
) -> TrialOut:
    """Params, values, learning curve, state, worker, timings, retry_of, error, MLflow run."""
    study = _load(state, name)
    assert study.optuna_study_id is not None
    trial = state.reader.trial(study.optuna_study_id, number)
    if trial is None:
        raise NotFoundError(f"study {name!r} has no trial {number}")
    return trial_views(state, study, [trial])[0]


@router.post(
    "/trials",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EnqueueOut,
    responses=errors_for(400, 401, 403, 404, 409, 413, 422, 503),
)
def enqueue_trial(name: str, body: EnqueueIn, state: StateDep, principal: WriteDep) -> EnqueueOut:
    """Enqueue a fixed configuration (warm start); it runs before sampled ones."""
    with state.db.session_scope() as session:
        params = studies.enqueue_trial(session, state.optuna, name, body.params, principal.name)
    return EnqueueOut(study=name, params=params)


@router.get(
    "/best", response_model=TrialOut | ParetoFront, responses=errors_for(401, 403, 404, 503)
)
def best(name: str, state: StateDep, _: ReadDep) -> TrialOut | ParetoFront:
    """The best trial, or the Pareto front of a multi-objective study."""
    study = _load(state, name)
    assert study.optuna_study_id is not None
    n_objectives = len(StudySpec.model_validate(study.spec).objective_list)
    try:
        found = state.reader.best(study.optuna_study_id, n_objectives)
    except KeyError:
        raise NotFoundError(f"the Optuna study of {name!r} no longer exists") from None
    if not found:
        raise NotFoundError(f"no trial of {name!r} has completed yet")
    views = trial_views(state, study, found)
    if n_objectives == 1:
        return views[0]
    return ParetoFront(pareto_front=views)


@router.get(
    "/importance", response_model=ImportancesOut, responses=errors_for(401, 403, 404, 409, 503)
)
def importance(name: str, state: StateDep, _: ReadDep) -> ImportancesOut:
    """Hyperparameter importances for each objective."""
    study = _load(state, name)
    assert study.optuna_study_id is not None
    objectives = StudySpec.model_validate(study.spec).objective_list
    items = []
    for index, objective in enumerate(objectives):
        target = None if len(objectives) == 1 else index
        try:
            values = state.reader.importances(study.optuna_study_id, target)
        except KeyError:
            raise NotFoundError(f"the Optuna study of {name!r} no longer exists") from None
        except (ValueError, RuntimeError) as exc:
            raise ConflictError(
                "importances need at least two completed trials whose parameters differ"
            ) from exc
        items.append(ObjectiveImportances(metric=objective.metric, importances=values))
    return ImportancesOut(items=items)
