"""Read models the routes return: service rows joined with Optuna's trials.

Each view is validated once, here, as it is built; FastAPI returns a model
instance of the declared ``response_model`` as it is, without validating it
again, so a view costs what the dictionaries it replaced cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from service.schemas import (
    BudgetState,
    StudyLinks,
    StudyOut,
    StudySummary,
    TrialOut,
    WorkerOut,
)
from service.state import AppState
from service.summary import TrialSummary
from storage.lease_reads import compute_saved_s, trial_placement_rows
from storage.models import Study, Worker
from storage.optuna_store import (
    ATTR_CONTINUES,
    ATTR_ERROR,
    ATTR_FAIL_REASON,
    ATTR_RETRY_OF,
    as_utc,
    finite_or_none,
)
from storage.spec import StudySpec
from storage.stopping import why_stopped


@dataclass(frozen=True)
class Placement:
    """Where a trial ran and what it used: what the lease knows and Optuna does not."""

    worker: str | None = None
    device: str | None = None
    mlflow_run_id: str | None = None
    compute_s: float | None = None
    train_examples: int | None = None


_NOWHERE = Placement()


def budget_view(study: Study, compute_saved: float | None = None) -> BudgetState:
    return BudgetState(
        n_trials=study.n_trials,
        finished=study.n_finished,
        active=study.n_active,
        lost=study.n_lost,
        max_concurrent_trials=study.max_concurrent_trials,
        compute_s=round(study.compute_s or 0.0, 3),
        max_compute_s=study.max_compute_s,
        train_examples=study.train_examples or 0,
        max_train_examples=study.max_train_examples,
        compute_saved_s=compute_saved,
        stop_reason=why_stopped(study),
    )


def study_links(state: AppState, study: Study) -> StudyLinks:
    settings = state.settings
    dashboard = None
    if settings.dashboard_url and study.optuna_study_id is not None:
        dashboard = (
            f"{settings.dashboard_url.rstrip('/')}/dashboard/studies/{study.optuna_study_id}"
        )
    mlflow = None
    if settings.mlflow_ui_url and study.mlflow_experiment_id:
        # The runs view: the bare experiment page of MLflow 3 may open on its traces tab.
        mlflow = (
            f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{study.mlflow_experiment_id}/runs"
        )
    return StudyLinks(dashboard=dashboard, mlflow=mlflow)


def trial_out(trial: FrozenTrial, placement: Placement, run_link: str | None) -> TrialOut:
    """The API's trial shape (see the REST contract); ``placement`` comes from the leases."""
    attrs = trial.user_attrs
    values = [finite_or_none(v) for v in trial.values] if trial.values is not None else None
    params = dict(trial.params)
    if trial.state == TrialState.WAITING and not params:
        # An enqueued trial keeps its fixed configuration in a system attribute.
        params = dict(trial.system_attrs.get("fixed_params", {}))
    # A reaper may have written its reason just before the worker's own
    # result won: the reason belongs to FAIL trials only.
    failed = trial.state == TrialState.FAIL
    return TrialOut(
        number=trial.number,
        state=trial.state.name,
        params=params,
        value=values[0] if values and len(values) == 1 else None,
        values=values,
        intermediate_values={
            str(step): finite_or_none(v) for step, v in sorted(trial.intermediate_values.items())
        },
        datetime_start=as_utc(trial.datetime_start),
        datetime_complete=as_utc(trial.datetime_complete),
        duration_s=trial.duration.total_seconds() if trial.duration is not None else None,
        worker=placement.worker,
        device=placement.device,
        retry_of=attrs.get(ATTR_RETRY_OF),
        continues=attrs.get(ATTR_CONTINUES),
        error=attrs.get(ATTR_ERROR) if failed else None,
        fail_reason=attrs.get(ATTR_FAIL_REASON) if failed else None,
        mlflow_run_id=placement.mlflow_run_id,
        compute_s=placement.compute_s,
        train_examples=placement.train_examples,
        user_attrs={k: v for k, v in attrs.items() if not k.startswith("hpo.")},
        links={"mlflow": run_link},
    )


def trial_view(
    state: AppState,
    study: Study,
    trial: FrozenTrial,
    placements: dict[int, Placement] | None = None,
) -> TrialOut:
    placement = (placements or {}).get(trial.number, _NOWHERE)
    run_id = placement.mlflow_run_id
    base = state.settings.mlflow_ui_url
    link = None
    if base and run_id and study.mlflow_experiment_id:
        link = f"{base.rstrip('/')}/#/experiments/{study.mlflow_experiment_id}/runs/{run_id}"
    return trial_out(trial, placement, link)


def study_summary(study: Study) -> StudySummary:
    return StudySummary(
        name=study.name,
        status=study.status,
        status_reason=study.status_reason,
        priority=study.priority,
        task=study.spec["task"]["name"],
        budget=budget_view(study),
        created_at=study.created_at,
        updated_at=study.updated_at,
    )


def trial_placements(state: AppState, study: Study, numbers: list[int]) -> dict[int, Placement]:
    """Worker, device, MLflow run and usage of the latest lease of each trial number."""
    with state.db.session_scope(read_only=True) as session:
        rows = trial_placement_rows(session, study.id, numbers)
    # In lease order: a retry's lease replaces the one before it.
    return {
        row.trial_number: Placement(
            row.worker_id, row.device, row.mlflow_run_id, row.compute_s, row.train_examples
        )
        for row in rows
        if row.trial_number is not None
    }


def trial_views(state: AppState, study: Study, trials: list[FrozenTrial]) -> list[TrialOut]:
    """Trials with the worker and device that ran them (from the leases)."""
    placements = trial_placements(state, study, [t.number for t in trials])
    return [trial_view(state, study, t, placements) for t in trials]


def study_view(state: AppState, study: Study) -> StudyOut:
    """The full study shape: counts by trial state, best so far, links.

    The counts, the best trial and the compute saved are reused while the
    study's row is unchanged (``state.summaries``), so a read of a large study
    does not scan Optuna's trials every time.
    """
    spec = StudySpec.model_validate(study.spec)
    trials = state.summaries.get(study, lambda: _trial_summary(state, study, spec))
    return StudyOut(
        name=study.name,
        status=study.status,
        status_reason=study.status_reason,
        spec=spec,
        priority=study.priority,
        counts=dict(trials.counts),
        budget=budget_view(study, trials.compute_saved_s),
        best=trials.best,
        created_at=study.created_at,
        updated_at=study.updated_at,
        started_at=study.started_at,
        finished_at=study.finished_at,
        links=study_links(state, study),
    )


def _trial_summary(state: AppState, study: Study, spec: StudySpec) -> TrialSummary:
    """What the study view reads from Optuna's trials and the leases, read now."""
    counts: dict[str, int] = {}
    best = None
    if study.optuna_study_id is not None:
        counts = state.reader.count_states(study.optuna_study_id)
        if not spec.is_multi_objective:
            try:
                found = state.reader.best(study.optuna_study_id, 1)
            except KeyError:
                # Its Optuna study is gone (deleted behind the service): no trials, no best.
                found = []
            best = trial_views(state, study, found)[0] if found else None
    with state.db.session_scope(read_only=True) as session:
        saved = compute_saved_s(session, study.id)
    return TrialSummary(counts, best, saved)


def worker_view(worker: Worker) -> WorkerOut:
    """A worker row as the API shows it: its columns under the same names, but ``study``."""
    columns = {name: getattr(worker, name) for name in WorkerOut.model_fields if name != "study"}
    return WorkerOut(**columns, study=worker.study_name)
