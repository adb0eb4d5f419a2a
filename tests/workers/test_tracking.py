"""MLflow tracking against a real ``mlflow server``: runs, curves, the best model, outages."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient
from sqlalchemy import update

from service.app import create_app
from storage.db import Database
from storage.models import Study
from storage.settings import Settings
from tests.conftest import Fleet, make_settings
from tests.procs import free_port, start_mlflow_server, stop_group
from workers.tracking.ops import Executor, Op

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """One MLflow server for the module (its tests use different experiment names)."""
    tmp_path = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    backend = f"sqlite:///{tmp_path / 'mlflow-server.db'}"
    artifacts = tmp_path / "mlflow-artifacts"
    log = tmp_path / "mlflow.log"
    state = {"proc": start_mlflow_server(backend, artifacts, port, log)}

    def restart() -> None:
        state["proc"] = start_mlflow_server(backend, artifacts, port, log)

    yield f"http://127.0.0.1:{port}", (state, restart)
    stop_group(state["proc"])


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str], mlflow_url: tuple[str, Any]) -> Settings:
    return make_settings(
        tmp_path / "data",
        pg_urls,
        mlflow_enabled=True,
        mlflow_tracking_uri=mlflow_url[0],
        allowed_task_modules="tests",
        mlflow_ui_url="http://mlflow.example",
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _wait_completed(api: TestClient, name: str, fleet: Fleet, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.get(f"/api/v1/studies/{name}").json()["status"] == "completed":
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} did not complete\n{fleet.logs()[-5000:]}")


def test_study_runs_curves_and_best_model(
    api: TestClient, fleet: Fleet, mlflow_url: tuple[str, Any], settings: Settings
) -> None:
    spec = {
        "name": "tracked",
        "task": {"name": "mlp-classifier", "config": {"max_epochs": 3}},
        "sampler": {"name": "tpe", "seed": 3},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 4, "max_concurrent_trials": 2},
    }
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    worker = fleet.start("--per-device", "2", "--exit-when-idle")
    _wait_completed(api, "tracked", fleet)
    assert worker.wait(timeout=120) == 0

    client = MlflowClient(mlflow_url[0])
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("hpo.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("hpo.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert "best_val_accuracy" in parent.data.metrics
    plots = [a.path for a in client.list_artifacts(parent.info.run_id, "plots")]
    assert "plots/optimization_history.png" in plots
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2, 3]
        assert {"hpo.seed", "hpo.version.torch", "hpo.dataset_fingerprint"} <= set(child.data.tags)
        assert child.data.params["optimizer"] in ("adam", "sgd")

    best = api.get("/api/v1/studies/tracked/best").json()
    by_number = {int(r.data.tags["hpo.trial_number"]): r for r in children}
    assert best["mlflow_run_id"] == by_number[best["number"]].info.run_id
    assert best["links"]["mlflow"].startswith("http://mlflow.example/#/experiments/")
    assert api.get("/api/v1/studies/tracked").json()["links"]["mlflow"]
    version = client.get_model_version_by_alias("tracked", "best")
    # On a tie the registered trial may differ from Optuna's pick; its value may not.
    assert float(version.tags["hpo.objective"]) == best["value"]
    mlflow.set_tracking_uri(mlflow_url[0])
    model = mlflow.pytorch.load_model("models:/tracked@best")
    import torch

    assert model(torch.zeros(3, 64)).shape == (3, 10)

    # A registration lost earlier is repaired when the study is summarized.
    client.delete_registered_model_alias("tracked", "best")
    database = Database(settings.database_url)
    with database.session_scope() as session:
        session.execute(update(Study).values(mlflow_summarized_at=None))
    Executor(settings, database).run(Op("summary", "tracked"))
    database.dispose()
    repaired = client.get_model_version_by_alias("tracked", "best")
    assert float(repaired.tags["hpo.objective"]) == best["value"]


def test_mlflow_outage_loses_no_metrics(
    api: TestClient, fleet: Fleet, mlflow_url: tuple[str, Any]
) -> None:
    url, (state, restart) = mlflow_url
    spec = {
        "name": "outage",
        "task": {
            "name": "python:tests.objectives:quadratic",
            "config": {"steps": 8, "sleep_s": 0.25},
        },
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -5, "high": 5}},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 6, "max_concurrent_trials": 1},
    }
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    worker = fleet.start("--exit-when-idle")
    while api.get("/api/v1/studies/outage").json()["budget"]["finished"] < 1:
        time.sleep(0.2)
    os.killpg(state["proc"].pid, signal.SIGKILL)
    state["proc"].wait()
    before = api.get("/api/v1/studies/outage").json()["budget"]["finished"]
    deadline = time.monotonic() + 90
    # Trials go on while MLflow is down, and the worker says that it is down.
    while (
        api.get("/api/v1/studies/outage").json()["budget"]["finished"] < before + 2
        or "MLflow unavailable" not in fleet.logs()
    ):
        assert time.monotonic() < deadline, fleet.logs()[-3000:]
        time.sleep(0.5)
    restart()
    _wait_completed(api, "outage", fleet)
    assert worker.wait(timeout=120) == 0
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("outage")
    assert experiment is not None
    children = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("hpo.kind") == "trial"
    ]
    assert len(children) == 6
    for child in children:
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "loss"))
        assert steps == list(range(8)), child.info.run_name
        assert child.info.status == "FINISHED"
