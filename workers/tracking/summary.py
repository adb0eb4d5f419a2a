"""The study's parent run when the study ends: status, best trial, plots."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import optuna
from mlflow.entities import Metric, Param, RunTag

from storage.models import Study, utcnow
from workers.tracking.ops import clip, now_ms

if TYPE_CHECKING:
    from workers.tracking.ops import Executor

logger = logging.getLogger(__name__)
RUN_STATUS = {"completed": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


def summarize_study(executor: Executor, study_name: str) -> None:
    """Write the summary once (the study row remembers that it was written)."""
    _, parent = executor.parent_of(study_name)
    with executor.db.session_scope() as session:
        row = session.query(Study).filter_by(name=study_name).with_for_update().one_or_none()
        if row is None or row.mlflow_summarized_at is not None or row.status not in RUN_STATUS:
            return
        study = optuna.load_study(study_name=study_name, storage=executor.settings.optuna_storage)
        _log_outcome(executor, parent, row, study)
        _log_plots(executor, parent, study)
        _ensure_best_model(executor, row, study)
        executor.client.set_terminated(parent, RUN_STATUS[row.status])
        row.mlflow_summarized_at = utcnow()
    logger.info("summarized study %s in MLflow", study_name)


def _log_outcome(executor: Executor, parent: str, row: Study, study: optuna.Study) -> None:
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
    executor.client.log_batch(parent, metrics=metrics, params=params, tags=tags)


def _best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    try:
        return list(study.best_trials) if len(study.directions) > 1 else [study.best_trial]
    except ValueError:
        return []


def _log_plots(executor: Executor, parent: str, study: optuna.Study) -> None:
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
            executor.client.log_figure(parent, figure, f"plots/{name}.png")
            plt.close(figure)
        except Exception as exc:  # a plot that cannot be drawn (too few trials) is skipped
            logger.info("plot %s skipped for %s: %s", name, study.study_name, exc)


def _ensure_best_model(executor: Executor, row: Study, study: optuna.Study) -> None:
    """Point the alias ``best`` at the study's best trial if an earlier attempt failed.

    Needs that trial's model folder on this machine (the best ones are kept).
    """
    from workers.tracking.models import current_best, log_best_model

    best = _best_trials(study)
    if len(best) != 1 or not best[0].values:
        return
    trial = best[0]
    registered = current_best(executor.client, row.name)
    if registered is not None and registered[1] == trial.number:
        return
    root = trial.user_attrs.get("hpo.retry_root", trial.number)
    model_dir = executor.settings.trials_dir / row.name / f"trial-{root:05d}" / "model"
    run_id = _trial_run_id(executor, row, trial.number)
    if not model_dir.is_dir() or run_id is None:
        return
    data = {
        "model_dir": str(model_dir),
        "task": row.spec["task"]["name"],
        "value": trial.values[0],
        "direction": study.direction.name.lower(),
        "number": trial.number,
    }
    log_best_model(executor.client, run_id, row.name, data)


def _trial_run_id(executor: Executor, row: Study, number: int) -> str | None:
    if row.mlflow_experiment_id is None:
        return None
    found = executor.client.search_runs(
        [row.mlflow_experiment_id],
        filter_string=f"tags.`hpo.trial_number` = '{number}' and tags.`hpo.kind` = 'trial'",
        max_results=1,
    )
    return found[0].info.run_id if found else None
