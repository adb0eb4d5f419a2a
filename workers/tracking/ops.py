"""Tracking operations: plain data (so they can be spooled to disk) plus how to run them."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from storage.db import Database
from storage.optuna_store import open_optuna_storage
from storage.pools import SUMMARY_OPTUNA
from storage.settings import Settings
from storage.tracking_rows import (
    TrackedStudy,
    find_study,
    lease_end,
    record_lease_run,
    record_study_runs,
)
from workers.tracking.models import log_best_model
from workers.tracking.owners import claim_experiment, claim_registered_model
from workers.tracking.run_tags import (
    TAG_ERROR,
    TAG_FAIL_REASON,
    TAG_KEY,
    TAG_KIND,
    TAG_LEASE_ID,
    TAG_STUDY,
    TAG_STUDY_ID,
    clip,
)
from workers.tracking.summary import StudyRuns, summarize_study
from workers.tracking.sweep import run_end_of, sweep_study

logger = logging.getLogger(__name__)
MAX_BATCH = 1000


@dataclass
class Op:
    """One thing to send to MLflow; ``key`` names a trial run locally until it exists."""

    kind: str
    study_name: str
    key: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    # The service's id of the study: a study deleted and created again under
    # its name has another one, and must not receive the old study's ops.
    study_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Op:
        return cls(
            raw["kind"],
            raw["study_name"],
            raw.get("key", ""),
            raw.get("data", {}),
            raw.get("study_id"),
        )


class Executor:
    """Runs ops against MLflow; remembers run ids by key (and the service DB keeps them).

    No study or lease row is locked while MLflow is called: a slow or
    unreachable MLflow never holds up claims and finishes of the study.
    """

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.run_ids: dict[str, str] = {}
        self.parents: dict[int, tuple[str, str]] = {}  # study id -> (experiment, parent run)

    def run(self, op: Op) -> None:
        handler = getattr(self, f"_op_{op.kind}")
        handler(op)

    def study(self, op: Op) -> TrackedStudy:
        """The op's study (by id; by name for ops spooled before ops carried it).

        Raises:
            LookupError: the study was deleted.
        """
        with self.db.session_scope(read_only=True) as session:
            found = find_study(session, study_id=op.study_id, name=op.study_name)
        if found is None:
            raise LookupError(f"study {op.study_name!r} no longer exists")
        return found

    def parent_of(self, study: TrackedStudy) -> tuple[str, str]:
        """The study's experiment and parent run, created once.

        Two workers may both create a parent run; the first one stored on the
        study row is kept and the other deleted.
        """
        if study.id in self.parents:
            return self.parents[study.id]
        ids = (study.experiment_id, study.run_id)
        if ids[0] is None or ids[1] is None:
            ids = self._create_parent(study)
        assert ids[0] is not None and ids[1] is not None
        self.parents[study.id] = (ids[0], ids[1])
        return self.parents[study.id]

    def _create_parent(self, study: TrackedStudy) -> tuple[str, str]:
        experiment_id = claim_experiment(self.client, study, self._artifacts_dir())
        claim_registered_model(self.client, study, experiment_id, create=False)
        run_id = self._parent_run(experiment_id, study)
        with self.db.session_scope() as session:
            stored = record_study_runs(session, study.id, experiment_id, run_id)
        if stored is None:
            raise LookupError(f"study {study.name!r} no longer exists")
        if stored[1] != run_id:
            self.client.delete_run(run_id)  # another worker's parent run was stored first
        return stored

    def _artifacts_dir(self) -> Path | None:
        if self.settings.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
            return None  # the tracking server decides
        return self.settings.mlflow_artifacts_dir

    def _parent_run(self, experiment_id: str, study: TrackedStudy) -> str:
        """The study's parent run: one an earlier attempt created, else a new one."""
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_KIND}` = 'study' and tags.`{TAG_STUDY_ID}` = '{study.id}'",
            max_results=1,
        )
        if found:
            return str(found[0].info.run_id)
        run = self.client.create_run(
            experiment_id,
            run_name=study.name,
            tags={TAG_STUDY: study.name, TAG_KIND: "study", TAG_STUDY_ID: str(study.id)},
        )
        self._log_spec(run.info.run_id, study.spec)
        return str(run.info.run_id)

    def _log_spec(self, run_id: str, spec: dict[str, Any]) -> None:
        self.client.log_dict(run_id, spec, "spec.json")
        budget = spec.get("budget", {})
        params = {
            "task": spec["task"]["name"],
            "sampler": spec["sampler"]["name"],
            "pruner": (spec.get("pruner") or {}).get("name", "none"),
            "n_trials": budget.get("n_trials"),
            "seed": spec["sampler"].get("seed"),
        }
        self.client.log_batch(run_id, params=[Param(k, clip(v)) for k, v in params.items()])

    def _op_start_trial(self, op: Op) -> None:
        if op.key in self.run_ids:
            return
        if op.study_id is not None and op.study_id in self.parents:
            study_id = op.study_id  # known here: no database read per trial
            experiment_id, parent_id = self.parents[study_id]
        else:
            study = self.study(op)
            study_id = study.id
            experiment_id, parent_id = self.parent_of(study)
        data = op.data
        lease_id = data.get("lease_id")
        tags = {
            "mlflow.parentRunId": parent_id,
            TAG_STUDY: op.study_name,
            TAG_STUDY_ID: str(study_id),
            TAG_KIND: "trial",
            TAG_KEY: op.key,
            **{k: clip(v) for k, v in data["tags"].items()},
        }
        if lease_id is not None:
            # On the run from its creation: the sweep finds the run of a worker
            # that died before the run id reached the lease row.
            tags[TAG_LEASE_ID] = str(lease_id)
        run_id = self._existing_run(experiment_id, op.key)
        if run_id is None:
            run = self.client.create_run(
                experiment_id,
                start_time=data["start_ms"],
                tags=tags,
                run_name=f"trial-{data['number']}",
            )
            run_id = run.info.run_id
        params = [Param(k, clip(v)) for k, v in data["params"].items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[start : start + 100])
        self.run_ids[op.key] = run_id
        if lease_id is not None:
            with self.db.session_scope() as session:
                record_lease_run(session, lease_id, run_id)

    def _existing_run(self, experiment_id: str, key: str) -> str | None:
        """The run a retried create already made (its answer may have been lost)."""
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_KEY}` = '{key}'", max_results=1
        )
        return found[0].info.run_id if found else None

    def _op_metrics(self, op: Op) -> None:
        run_id = self.run_ids[op.key]
        metrics = [
            Metric(name, float(value), ts, step) for name, value, ts, step in op.data["metrics"]
        ]
        for start in range(0, len(metrics), MAX_BATCH):
            self.client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH])

    def _op_end_trial(self, op: Op) -> None:
        run_id = self.run_ids[op.key]
        data = self._as_lease_ended(op.data) if op.data.get("lost") else op.data
        tags = [RunTag(k, clip(v)) for k, v in data["tags"].items() if v is not None]
        finals = [
            Metric(k, float(v), data["end_ms"], data["step"]) for k, v in data["metrics"].items()
        ]
        self.client.log_batch(run_id, metrics=finals, tags=tags)
        self.client.log_dict(run_id, data["config"], "config.json")
        self.client.set_terminated(run_id, data["status"], end_time=data["end_ms"])

    def _as_lease_ended(self, data: dict[str, Any]) -> dict[str, Any]:
        """A lost trial's run ends as its lease did (the reaper may have counted its result)."""
        with self.db.session_scope(read_only=True) as session:
            end = lease_end(session, int(data["lease_id"]))
        if end is None or end.active:
            return data  # FAILED, lost: what the worker knows
        status, tags = run_end_of(end)
        # The lease's reason and error replace the worker's guess (None: no tag).
        merged = {**data["tags"], TAG_FAIL_REASON: None, TAG_ERROR: None, **tags}
        return {**data, "status": status, "tags": merged}

    def _op_model(self, op: Op) -> None:
        study = self.study(op)
        experiment_id, _ = self.parent_of(study)
        log_best_model(self.client, self.run_ids[op.key], study, experiment_id, op.data)

    def _op_summary(self, op: Op) -> None:
        try:
            study = self.study(op)
        except LookupError:
            logger.info("study %s was deleted before its MLflow summary", op.study_name)
            return
        if not study.ended or study.n_active > 0 or study.summarized_at is not None:
            return
        experiment_id, parent = self.parent_of(study)
        runs = StudyRuns(study, experiment_id, parent)
        optuna_storage = open_optuna_storage(self.settings.optuna_storage, pool=SUMMARY_OPTUNA)
        try:
            summarize_study(
                self.client,
                self.db,
                optuna_storage,
                runs,
                owner=self.owner,
                trials_dir=self.settings.trials_dir,
            )
        finally:
            optuna_storage.engine.dispose()

    def _op_sweep(self, op: Op) -> None:
        study = self.study(op)
        if study.experiment_id is not None:
            sweep_study(self.client, self.db, study.id, study.experiment_id)


def model_dir_exists(op: Op) -> bool:
    return op.kind != "model" or Path(op.data["model_dir"]).is_dir()
