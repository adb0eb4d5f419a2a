"""Read models the routes return: service rows joined with Optuna's trials."""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

from service.state import AppState
from service.summary import TrialSummary
from storage.budget import Placement, compute_saved_s, trial_placements
from storage.models import Study, Worker
from storage.optuna_store import trial_to_dict
from storage.spec import StudySpec
from storage.stopping import why_stopped


def budget_view(study: Study) -> dict[str, Any]:
    return {
        "n_trials": study.n_trials,
        "finished": study.n_finished,
        "active": study.n_active,
        "lost": study.n_lost,
        "max_concurrent_trials": study.max_concurrent_trials,
        "compute_s": round(study.compute_s or 0.0, 3),
        "max_compute_s": study.max_compute_s,
        "train_examples": study.train_examples or 0,
        "max_train_examples": study.max_train_examples,
        "stop_reason": why_stopped(study),
    }


def study_links(state: AppState, study: Study) -> dict[str, str | None]:
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
    return {"dashboard": dashboard, "mlflow": mlflow}


def trial_view(
    state: AppState,
    study: Study,
    trial: FrozenTrial,
    placements: dict[int, Placement] | None = None,
) -> dict[str, Any]:
    placement = (placements or {}).get(trial.number, Placement(None, None, None))
    view = trial_to_dict(trial, placement.worker, placement.device, placement.mlflow_run_id)
    view["compute_s"] = placement.compute_s
    view["train_examples"] = placement.train_examples
    run_id = view["mlflow_run_id"]
    base = state.settings.mlflow_ui_url
    link = None
    if base and run_id and study.mlflow_experiment_id:
        link = f"{base.rstrip('/')}/#/experiments/{study.mlflow_experiment_id}/runs/{run_id}"
    view["links"] = {"mlflow": link}
    return view


def study_summary(study: Study) -> dict[str, Any]:
    return {
        "name": study.name,
        "status": study.status,
        "status_reason": study.status_reason,
        "priority": study.priority,
        "task": study.spec["task"]["name"],
        "budget": budget_view(study),
        "created_at": study.created_at,
        "updated_at": study.updated_at,
    }


def trial_views(state: AppState, study: Study, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """Trials with the worker and device that ran them (from the leases)."""
    with state.db.session_scope(read_only=True) as session:
        placements = trial_placements(session, study.id, [t.number for t in trials])
    return [trial_view(state, study, t, placements) for t in trials]


def study_view(state: AppState, study: Study) -> dict[str, Any]:
    """The full study shape: counts by trial state, best so far, links.

    The counts, the best trial and the compute saved are reused while the
    study's row is unchanged (``state.summaries``), so a read of a large study
    does not scan Optuna's trials every time.
    """
    spec = StudySpec.model_validate(study.spec)
    trials = state.summaries.get(study, lambda: _trial_summary(state, study, spec))
    summary = study_summary(study)
    summary["budget"]["compute_saved_s"] = trials.compute_saved_s
    return {
        **summary,
        "spec": spec,
        "counts": dict(trials.counts),
        "best": trials.best,
        "started_at": study.started_at,
        "finished_at": study.finished_at,
        "links": study_links(state, study),
    }


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


def worker_view(worker: Worker) -> dict[str, Any]:
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "device": worker.device,
        "slot": worker.slot,
        "status": worker.status,
        "study": worker.study_name,
        "trial_number": worker.trial_number,
        "trials_run": worker.trials_run,
        "started_at": worker.started_at,
        "heartbeat_at": worker.heartbeat_at,
    }
