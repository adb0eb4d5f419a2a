"""Logging the best trial's model to MLflow and pointing the alias ``best`` at it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from storage.tracking_rows import TrackedStudy
from workers.tracking.owners import claim_registered_model
from workers.tracking.run_tags import TAG_OBJECTIVE, TAG_STUDY_ID, TAG_TRIAL

logger = logging.getLogger(__name__)
BEST_ALIAS = "best"
PIPELINE_TASKS = {"text-classification": "text-classification", "masked-lm": "fill-mask"}


def is_better(value: float, than: float, direction: str) -> bool:
    return value > than if direction == "maximize" else value < than


def current_best(client: MlflowClient, name: str, study_id: int) -> tuple[float, int] | None:
    """(objective value, trial number) of the version the alias points at, if it is the study's.

    A version tagged with another study's id (a deleted study of the same
    name) is no best to beat.
    """
    try:
        version = client.get_model_version_by_alias(name, BEST_ALIAS)
    except Exception:
        return None
    owner = version.tags.get(TAG_STUDY_ID)
    if owner is not None and owner != str(study_id):
        return None
    value, trial = version.tags.get(TAG_OBJECTIVE), version.tags.get(TAG_TRIAL)
    if value is None or trial is None:
        return None
    return float(value), int(trial)


def beats(value: float, number: int, best: tuple[float, int], direction: str) -> bool:
    """Better value, or the same value from an earlier trial (ties go to the first)."""
    return is_better(value, best[0], direction) or (value == best[0] and number < best[1])


def log_best_model(
    client: MlflowClient,
    run_id: str,
    study: TrackedStudy,
    experiment_id: str,
    data: dict[str, Any],
) -> None:
    """Log the model of a trial that was the study's best when it finished.

    Compared only with the study's own versions. A model that has since been
    beaten (another worker registered a better one first) is not registered
    again; one already registered from this run (a repeated attempt) is reused.
    """
    name = study.name
    value, direction = float(data["value"]), str(data["direction"])
    claim_registered_model(client, study, experiment_id, create=True)
    best = current_best(client, name, study.id)
    if best is not None and not beats(value, int(data["number"]), best, direction):
        number = data["number"]
        logger.info("trial %s of %s is no longer the best; not registering it", number, name)
        return
    version = _version_of_run(client, name, run_id)
    if version is None:
        mlflow.set_tracking_uri(client.tracking_uri)
        with mlflow.start_run(run_id=run_id):
            info = _log_by_flavor(Path(data["model_dir"]), str(data["task"]), name)
        version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, TAG_OBJECTIVE, str(value))
    client.set_model_version_tag(name, version, TAG_TRIAL, str(data["number"]))
    client.set_model_version_tag(name, version, TAG_STUDY_ID, str(study.id))
    client.set_registered_model_alias(name, BEST_ALIAS, version)
    logger.info(
        "registered trial %s of %s as model version %s (alias %s)",
        data["number"],
        name,
        version,
        BEST_ALIAS,
    )


def _version_of_run(client: MlflowClient, name: str, run_id: str) -> str | None:
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'", max_results=1)
    return str(found[0].version) if found else None


def _log_by_flavor(model_dir: Path, task: str, study: str) -> Any:
    requirements = _requirements()
    if task == "seq2seq":
        # transformers 5 has no text2text pipeline for MLflow's flavor to wrap.
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("seq2seq_pyfunc.py")),
            artifacts={"model": str(model_dir.resolve())},
            registered_model_name=study,
            pip_requirements=requirements,
        )
    if task in PIPELINE_TASKS:
        import transformers

        # Absolute paths: a relative one is taken for a hub id and looked up online.
        path = str(model_dir.resolve())
        make_pipeline: Any = transformers.pipeline
        pipeline = make_pipeline(PIPELINE_TASKS[task], model=path, tokenizer=path)
        return mlflow.transformers.log_model(
            transformers_model=pipeline,
            name="model",
            registered_model_name=study,
            pip_requirements=requirements,
        )
    import numpy as np
    import torch

    module = torch.load(model_dir / "model.pt", weights_only=False)
    first = next((m for m in module.modules() if isinstance(m, torch.nn.Linear)), None)
    example = np.zeros((2, first.in_features), np.float32) if first is not None else None
    # The traced pt2 format (safe to load, unlike pickle) needs an example input.
    return mlflow.pytorch.log_model(
        module,
        name="model",
        registered_model_name=study,
        pip_requirements=requirements,
        serialization_format="pt2",
        input_example=example,
    )


def _requirements() -> list[str]:
    # Given explicitly: inferring them imports the model in a subprocess (slow).
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "transformers", "mlflow")]
