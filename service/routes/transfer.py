"""``/studies/{name}/export`` and ``/studies/import``: a study from one deployment to another."""

from __future__ import annotations

from fastapi import APIRouter, status

from service.deps import ReadDep, StateDep, WriteDep
from service.responses import errors_for
from service.schemas import StudyExport, StudyOut
from service.views import study_view
from storage import studies, transfer
from storage.errors import ErrorDetail, InvalidSpecError, NotFoundError
from storage.validation import resolve_spec

router = APIRouter(prefix="/studies", tags=["studies"])


@router.get("/{name}/export", response_model=StudyExport, responses=errors_for(401, 403, 404, 503))
def export_study(name: str, state: StateDep, _: ReadDep) -> StudyExport:
    """The spec and every finished trial (params, values, learning curves, user attributes)."""
    with state.db.session_scope(read_only=True) as session:
        study = studies.get_study(session, name)
    try:
        document = transfer.export_study(state.optuna, study)
    except KeyError:
        raise NotFoundError(f"the Optuna study of {name!r} no longer exists") from None
    return StudyExport.model_validate(document)


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyOut,
    responses=errors_for(400, 401, 403, 409, 413, 422, 503),
)
def import_study(body: StudyExport, state: StateDep, principal: WriteDep) -> StudyOut:
    """Create a study from an export; its finished trials count against its budget."""
    try:
        spec = resolve_spec(body.spec, state.policy)
    except InvalidSpecError as exc:
        raise InvalidSpecError(
            exc.message, [ErrorDetail(("spec", *e.loc), e.msg) for e in exc.errors]
        ) from None
    trials = [t.model_dump(mode="json") for t in body.trials]
    with state.db.session_scope() as session:
        study = transfer.import_study(session, state.optuna, spec, trials, principal.name)
    return study_view(state, study)
