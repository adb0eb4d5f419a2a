"""Which study an MLflow experiment and registered model belong to.

Both are named after the study, and tagged ``hpo.study_id`` with the service's
id of the study. A study deleted and submitted again under its name gets a new
id: when it first reaches MLflow, the experiment and registered model left by
the deleted study are renamed out of the way (``NAME (deleted study ID)``), so
that the new study starts with its own, and its best model is never compared
with the deleted study's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from mlflow.entities import Experiment
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from storage.states import FailReason
from storage.tracking_rows import TrackedStudy
from workers.tracking.run_tags import TAG_FAIL_REASON, TAG_STUDY, TAG_STUDY_ID

logger = logging.getLogger(__name__)
RENAMED_FROM_TAG = "hpo.renamed_from"
# What MLflow answers when another process renamed or created the same thing first.
_RACE_CODES = {"RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST"}
_ATTEMPTS = 4


def lost_race(exc: MlflowException) -> bool:
    return exc.error_code in _RACE_CODES


def retired_name(name: str, owner: str | None, taken: Callable[[str], bool]) -> str:
    """``NAME (deleted study ID)``, numbered when that is taken too."""
    base = f"{name} (deleted study {owner})" if owner else f"{name} (deleted study)"
    candidate, n = base, 1
    while taken(candidate):
        n += 1
        candidate = f"{base} {n}"
    return candidate


def claim_experiment(client: MlflowClient, study: TrackedStudy, artifacts: Path | None) -> str:
    """The id of the study's experiment (named after it), created if needed.

    An experiment of that name that belongs to another study (or to none) is
    renamed out of the way first; its runs still running are ended (KILLED).
    ``artifacts`` is the folder for local stores (None for a tracking server).
    """
    for _ in range(_ATTEMPTS):
        found = client.get_experiment_by_name(study.name)
        if found is None:
            try:
                return _create_experiment(client, study, artifacts)
            except MlflowException as exc:
                if not lost_race(exc):
                    raise
                continue  # another worker of the study created it first
        if found.tags.get(TAG_STUDY_ID) == str(study.id):
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        try:
            _retire_experiment(client, found)
        except MlflowException as exc:
            if not lost_race(exc):
                raise
    raise RuntimeError(f"could not claim the MLflow experiment {study.name!r}")


def _create_experiment(client: MlflowClient, study: TrackedStudy, artifacts: Path | None) -> str:
    location = None
    if artifacts is not None:
        folder = artifacts / study.name
        if folder.exists():  # a deleted study's artifacts
            folder = artifacts / f"{study.name}-study-{study.id}"
        location = folder.resolve().as_uri()
    tags = {
        # Shown as a model-training experiment (MLflow 3 would open the GenAI view).
        "mlflow.experimentKind": "custom_model_development",
        TAG_STUDY_ID: str(study.id),
        TAG_STUDY: study.name,
    }
    return str(client.create_experiment(study.name, artifact_location=location, tags=tags))


def _retire_experiment(client: MlflowClient, found: Experiment) -> None:
    owner = found.tags.get(TAG_STUDY_ID)
    deleted = found.lifecycle_stage == "deleted"
    if deleted:
        client.restore_experiment(found.experiment_id)  # MLflow renames active ones only
    new_name = retired_name(
        found.name, owner, lambda n: client.get_experiment_by_name(n) is not None
    )
    client.rename_experiment(found.experiment_id, new_name)
    client.set_experiment_tag(found.experiment_id, RENAMED_FROM_TAG, found.name)
    _end_running_runs(client, found.experiment_id)
    if deleted:
        client.delete_experiment(found.experiment_id)
    logger.info("renamed the MLflow experiment %r of a deleted study to %r", found.name, new_name)


def _end_running_runs(client: MlflowClient, experiment_id: str) -> None:
    """Runs of a deleted study cannot finish any more."""
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
        client.set_tag(run.info.run_id, TAG_FAIL_REASON, FailReason.STUDY_DELETED)
        client.set_terminated(run.info.run_id, "KILLED")


def claim_registered_model(
    client: MlflowClient, study: TrackedStudy, experiment_id: str, *, create: bool
) -> None:
    """Make sure the registered model named after the study is this study's.

    One of another study is renamed out of the way; with ``create``, the
    study's own is created (tagged) when missing. An untagged one whose
    versions come from this study's experiment (registered before models were
    tagged) is tagged and kept.
    """
    for _ in range(_ATTEMPTS):
        try:
            model = client.get_registered_model(study.name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            if not create:
                return
            try:
                client.create_registered_model(study.name, tags={TAG_STUDY_ID: str(study.id)})
                return
            except MlflowException as again:
                if not lost_race(again):
                    raise
                continue
        owner = model.tags.get(TAG_STUDY_ID)
        if owner == str(study.id):
            return
        if owner is None and _registered_from(client, study.name, experiment_id):
            client.set_registered_model_tag(study.name, TAG_STUDY_ID, str(study.id))
            return
        try:
            _retire_model(client, model)
        except MlflowException as exc:
            if not lost_race(exc):
                raise
    raise RuntimeError(f"could not claim the registered model {study.name!r}")


def _registered_from(client: MlflowClient, name: str, experiment_id: str) -> bool:
    versions = client.search_model_versions(f"name = '{name}'", max_results=1)
    if not versions or not versions[0].run_id:
        return False
    try:
        return str(client.get_run(versions[0].run_id).info.experiment_id) == experiment_id
    except MlflowException:
        return False


def _retire_model(client: MlflowClient, model: RegisteredModel) -> None:
    owner = model.tags.get(TAG_STUDY_ID)

    def taken(name: str) -> bool:
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    new_name = retired_name(model.name, owner, taken)
    client.rename_registered_model(model.name, new_name)
    client.set_registered_model_tag(new_name, RENAMED_FROM_TAG, model.name)
    logger.info("renamed the registered model %r of a deleted study to %r", model.name, new_name)
