"""``/studies/{name}/export`` and ``/studies/import``: a study from one deployment to another."""

from __future__ import annotations

from fastapi import APIRouter, status

from service.deps import ReadDep, StateDep, WriteDep
from service.responses import errors_for
from service.schemas import ErrorItem, StudyExport, StudyImported
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
    response_model=StudyImported,
    responses=errors_for(400, 401, 403, 409, 413, 422, 503),
)
def import_study(body: StudyExport, state: StateDep, principal: WriteDep) -> StudyImported:
    """Create a study from an export: its trials' data, checked against the spec.

    Parameters must lie in the spec's search space, and the trials that count
    (all but failed ones another trial retried) must fit ``budget.n_trials``;
    the service's own ``hpo.*`` user attributes are dropped and listed in ``warnings``.
    """
    try:
        spec = resolve_spec(body.spec, state.policy)
    except InvalidSpecError as exc:
        raise InvalidSpecError(
            exc.message, [ErrorDetail(("spec", *e.loc), e.msg) for e in exc.errors]
        ) from None
    trials = [t.model_dump(mode="json") for t in body.trials]
    with state.db.session_scope() as session:
        imported = transfer.import_study(session, state.optuna, spec, trials, principal.name)
    warnings = [ErrorItem(loc=list(w.loc), msg=w.msg) for w in imported.warnings]
    return StudyImported(**dict(study_view(state, imported.study)), warnings=warnings)
