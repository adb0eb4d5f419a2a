"""Tracking operations: plain data (so they can be spooled to disk) plus how to run them."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from storage.db import Database
from storage.models import Lease, Study
from storage.settings import Settings

logger = logging.getLogger(__name__)
MAX_BATCH = 1000
MAX_TAG_CHARS = 5000


@dataclass
class Op:
    """One thing to send to MLflow; ``key`` names a trial run locally until it exists."""

    kind: str
    study_name: str
    key: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Op:
        return cls(raw["kind"], raw["study_name"], raw.get("key", ""), raw.get("data", {}))


def now_ms() -> int:
    return int(time.time() * 1000)


def clip(value: object) -> str:
    return str(value)[:MAX_TAG_CHARS]


class Executor:
    """Runs ops against MLflow; remembers run ids by key (and the service DB keeps them)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        self.run_ids: dict[str, str] = {}
        self.parents: dict[str, tuple[str, str]] = {}  # study -> (experiment id, parent run id)

    def run(self, op: Op) -> None:
        handler = getattr(self, f"_op_{op.kind}")
        handler(op)

    def parent_of(self, study_name: str) -> tuple[str, str]:
        """The study's experiment and parent run, created once (under the study's row lock)."""
        if study_name in self.parents:
            return self.parents[study_name]
        with self.db.session_scope() as session:
            study = session.query(Study).filter_by(name=study_name).with_for_update().one_or_none()
            if study is None:
                raise LookupError(f"study {study_name!r} no longer exists")
            if study.mlflow_experiment_id is None or study.mlflow_run_id is None:
                experiment_id = self._experiment(study_name)
                run = self.client.create_run(
                    experiment_id,
                    run_name=study_name,
                    tags={"hpo.study": study_name, "hpo.kind": "study"},
                )
                self._log_spec(run.info.run_id, study.spec)
                study.mlflow_experiment_id = experiment_id
                study.mlflow_run_id = run.info.run_id
            ids = (study.mlflow_experiment_id, study.mlflow_run_id)
        assert ids[0] is not None and ids[1] is not None
        self.parents[study_name] = (ids[0], ids[1])
        return self.parents[study_name]

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        location = None
        if not self.settings.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
            folder = (self.settings.mlflow_artifacts_dir / name).resolve()
            location = folder.as_uri()
        # Shown as a model-training experiment (MLflow 3 would open the GenAI view).
        tags = {"mlflow.experimentKind": "custom_model_development"}
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=tags)
        except Exception:
            # Another worker created it first.
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

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
        experiment_id, parent_id = self.parent_of(op.study_name)
        data = op.data
        tags = {
            "mlflow.parentRunId": parent_id,
            "hpo.study": op.study_name,
            "hpo.kind": "trial",
            "hpo.key": op.key,
            **{k: clip(v) for k, v in data["tags"].items()},
        }
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
        self._remember_run(data.get("lease_id"), run_id)

    def _existing_run(self, experiment_id: str, key: str) -> str | None:
        """The run a retried create already made (its answer may have been lost)."""
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`hpo.key` = '{key}'", max_results=1
        )
        return found[0].info.run_id if found else None

    def _remember_run(self, lease_id: int | None, run_id: str) -> None:
        if lease_id is None:
            return
        with self.db.session_scope() as session:
            lease = session.get(Lease, lease_id)
            if lease is not None:
                lease.mlflow_run_id = run_id

    def _op_metrics(self, op: Op) -> None:
        run_id = self.run_ids[op.key]
        metrics = [
            Metric(name, float(value), ts, step) for name, value, ts, step in op.data["metrics"]
        ]
        for start in range(0, len(metrics), MAX_BATCH):
            self.client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH])

    def _op_end_trial(self, op: Op) -> None:
        run_id = self.run_ids[op.key]
        data = op.data
        tags = [RunTag(k, clip(v)) for k, v in data["tags"].items() if v is not None]
        finals = [
            Metric(k, float(v), data["end_ms"], data["step"]) for k, v in data["metrics"].items()
        ]
        self.client.log_batch(run_id, metrics=finals, tags=tags)
        self.client.log_dict(run_id, data["config"], "config.json")
        self.client.set_terminated(run_id, data["status"], end_time=data["end_ms"])

    def _op_model(self, op: Op) -> None:
        from workers.tracking.models import log_best_model

        log_best_model(self.client, self.run_ids[op.key], op.study_name, op.data)

    def _op_summary(self, op: Op) -> None:
        from workers.tracking.summary import summarize_study

        summarize_study(self, op.study_name)


def model_dir_exists(op: Op) -> bool:
    return op.kind != "model" or Path(op.data["model_dir"]).is_dir()
