"""``/studies``: create, list, inspect, pause/resume/cancel, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from service.deps import ReadDep, StateDep, WriteDep
from service.responses import MAX_OFFSET, errors_for
from service.schemas import StudyOut, StudyPage, StudyStatusName
from service.views import study_summary, study_view
from storage import studies
from storage.models import StudyStatus
from storage.spec import StudySpec
from storage.validation import resolve_spec

router = APIRouter(prefix="/studies", tags=["studies"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyOut,
    responses=errors_for(400, 401, 403, 409, 413, 422, 503),
)
def create_study(spec: StudySpec, state: StateDep, principal: WriteDep) -> StudyOut:
    """Validate a study spec, store it and create its Optuna study."""
    resolved = resolve_spec(spec, state.policy)
    with state.db.session_scope() as session:
        study = studies.create_study(session, state.optuna, resolved, principal.name)
    return study_view(state, study)


@router.get("", response_model=StudyPage, responses=errors_for(401, 403, 422, 503))
def list_studies(
    state: StateDep,
    _: ReadDep,
    status: StudyStatusName | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> StudyPage:
    """Studies, newest first."""
    with state.db.session_scope(read_only=True) as session:
        items, total = studies.list_studies(
            session, StudyStatus(status) if status else None, limit, offset
        )
        summaries = [study_summary(s) for s in items]
    return StudyPage(items=summaries, total=total, limit=limit, offset=offset)


@router.get("/{name}", response_model=StudyOut, responses=errors_for(401, 403, 404, 503))
def get_study(name: str, state: StateDep, _: ReadDep) -> StudyOut:
    """Status, spec, trial counts by state, best so far and links."""
    with state.db.session_scope(read_only=True) as session:
        study = studies.get_study(session, name)
    return study_view(state, study)


def _transition(name: str, action: str, state: StateDep, actor: str) -> StudyOut:
    with state.db.session_scope() as session:
        study = studies.transition_study(session, name, action, actor)
    return study_view(state, study)


@router.post(
    "/{name}/pause", response_model=StudyOut, responses=errors_for(401, 403, 404, 409, 503)
)
def pause_study(name: str, state: StateDep, principal: WriteDep) -> StudyOut:
    """Stop claiming new trials; running trials finish."""
    return _transition(name, "pause", state, principal.name)


@router.post(
    "/{name}/resume", response_model=StudyOut, responses=errors_for(401, 403, 404, 409, 503)
)
def resume_study(name: str, state: StateDep, principal: WriteDep) -> StudyOut:
    """Claim trials again."""
    return _transition(name, "resume", state, principal.name)


@router.post(
    "/{name}/cancel", response_model=StudyOut, responses=errors_for(401, 403, 404, 409, 503)
)
def cancel_study(name: str, state: StateDep, principal: WriteDep) -> StudyOut:
    """Stop the study; running trials stop at their next report."""
    return _transition(name, "cancel", state, principal.name)


@router.delete(
    "/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=errors_for(401, 403, 404, 409, 503)
)
def delete_study(name: str, state: StateDep, principal: WriteDep) -> Response:
    """Delete the study and its Optuna trials (409 while trials run)."""
    with state.db.session_scope() as session:
        studies.delete_study(session, state.optuna, name, principal.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
