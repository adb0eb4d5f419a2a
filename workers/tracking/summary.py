"""The study's parent run when the study ends: status, best trial, plots, no run left RUNNING."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from optuna.storages import RDBStorage

from storage.db import Database
from storage.optuna_store import folder_root
from storage.paths import trial_folder
from storage.tracking_rows import TrackedStudy, claim_summary, mark_summarized
from workers.tracking.models import current_best, log_best_model
from workers.tracking.run_tags import (
    STUDY_RUN_STATUS,
    TAG_KIND,
    TAG_STUDY_ID,
    TAG_TRIAL_NUMBER,
    clip,
    now_ms,
)
from workers.tracking.sweep import sweep_study

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyRuns:
    """An ended study and where it lives in MLflow: its experiment and parent run."""

    study: TrackedStudy
    experiment_id: str
    parent_run_id: str


def summarize_study(
    client: MlflowClient,
    db: Database,
    optuna_storage: RDBStorage,
    runs: StudyRuns,
    *,
    owner: str,
    trials_dir: Path,
) -> None:
    """Write the summary of an ended study whose trials have all ended.

    The caller checks that the study ended with no trial running. ``owner``
    names this process in the summary claim; ``trials_dir`` is where the
    best trial's model folder is looked for. The study's row lock is taken
    only to claim the summary and to mark it written, never across MLflow
    calls or plotting. Writing it twice is harmless (tags, params and plots
    are the same; the best model is not registered again), and a claim whose
    process died expires. A summary another process claimed is left to it.
    """
    with db.session_scope() as session:
        claimed = claim_summary(session, runs.study.id, owner)
    if claimed is None:
        return
    sweep_study(client, db, claimed.id, runs.experiment_id)
    _delete_stray_parents(client, runs)
    optuna_study = optuna.load_study(study_name=claimed.name, storage=optuna_storage)
    _log_outcome(client, runs.parent_run_id, claimed, optuna_study)
    _log_plots(client, runs.parent_run_id, optuna_study)
    _ensure_best_model(client, claimed, runs.experiment_id, optuna_study, trials_dir)
    client.set_terminated(runs.parent_run_id, STUDY_RUN_STATUS[claimed.status])
    with db.session_scope() as session:
        mark_summarized(session, claimed.id)
    logger.info("summarized study %s in MLflow", claimed.name)


def _delete_stray_parents(client: MlflowClient, runs: StudyRuns) -> None:
    """Delete the study's parent runs other than its own.

    A worker that creates a parent run while another's is being stored
    deletes its own at once; one killed between the two leaves it RUNNING.
    """
    query = f"tags.`{TAG_KIND}` = 'study' and tags.`{TAG_STUDY_ID}` = '{runs.study.id}'"
    for run in client.search_runs([runs.experiment_id], filter_string=query):
        if run.info.run_id != runs.parent_run_id:
            client.delete_run(run.info.run_id)
            logger.info("deleted a second parent run of study %s", runs.study.name)


def _log_outcome(client: MlflowClient, parent: str, row: TrackedStudy, study: optuna.Study) -> None:
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    tags = [
        RunTag("hpo.status", row.status),
        RunTag("hpo.status_reason", clip(row.status_reason)),
        *(RunTag(f"hpo.trials.{state}", str(n)) for state, n in states.items()),
    ]
    params: list[Param] = []
    metrics: list[Metric] = []
    best = _best_trials(study)
    names = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    if len(best) == 1:
        trial = best[0]
        tags.append(RunTag("hpo.best_trial", str(trial.number)))
        params = [Param(f"best.{k}", clip(v)) for k, v in trial.params.items()]
        metrics = [
            Metric(f"best_{name}", float(v), now_ms(), 0)
            for name, v in zip(names, trial.values or [], strict=False)
        ]
    elif best:
        tags.append(RunTag("hpo.pareto_front", ",".join(str(t.number) for t in best)))
    client.log_batch(parent, metrics=metrics, params=params, tags=tags)


def _best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    try:
        return list(study.best_trials) if len(study.directions) > 1 else [study.best_trial]
    except ValueError:
        return []


def _log_plots(client: MlflowClient, parent: str, study: optuna.Study) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    makers: dict[str, Any] = {
        "optimization_history": plots.plot_optimization_history,
        "intermediate_values": plots.plot_intermediate_values,
        "param_importances": plots.plot_param_importances,
    }
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
                axes = make(study, target=target) if name != "intermediate_values" else make(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            client.log_figure(parent, figure, f"plots/{name}.png")
            plt.close(figure)
        except Exception as exc:  # a plot that cannot be drawn (too few trials) is skipped
            logger.info("plot %s skipped for %s: %s", name, study.study_name, exc)


def _ensure_best_model(
    client: MlflowClient,
    row: TrackedStudy,
    experiment_id: str,
    study: optuna.Study,
    trials_dir: Path,
) -> None:
    """Point the alias ``best`` at the study's best trial if an earlier attempt failed.

    Needs that trial's model folder on this machine (the best ones are kept).
    """
    best = _best_trials(study)
    if len(best) != 1 or not best[0].values:
        return
    trial = best[0]
    registered = current_best(client, row.name, row.id)
    if registered is not None and registered[1] == trial.number:
        return
    model_dir = trial_folder(trials_dir, row.name, folder_root(trial)) / "model"
    run_id = _trial_run_id(client, experiment_id, trial.number)
    if not model_dir.is_dir() or run_id is None:
        return
    data = {
        "model_dir": str(model_dir),
        "task": row.spec["task"]["name"],
        "value": trial.values[0],
        "direction": study.direction.name.lower(),
        "number": trial.number,
    }
    log_best_model(client, run_id, row, experiment_id, data)


def _trial_run_id(client: MlflowClient, experiment_id: str, number: int) -> str | None:
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_TRIAL_NUMBER}` = '{number}' and tags.`{TAG_KIND}` = 'trial'",
        max_results=1,
    )
    return found[0].info.run_id if found else None
