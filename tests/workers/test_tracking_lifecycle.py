"""MLflow runs stay true to the trials: lost leases, deletes and resubmits, slow MLflow.

Against Postgres, a real MLflow store (SQLite file) and, where the feature is
about them, real ``hpo worker`` processes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from sqlalchemy import select, text, update

from service.app import create_app
from storage.budget import Claim, Outcome, claim_slot, finish_lease, lock_study
from storage.db import Database
from storage.models import Lease, Study, StudyStatus, utcnow
from storage.optuna_store import open_optuna_storage
from storage.reaper import Reaper
from storage.settings import Settings
from storage.spec import StudySpec
from storage.studies import create_study
from tests.conftest import Fleet, make_settings, migrated_mlflow_store
from workers.context import TrialContext
from workers.outcome import TrialResult
from workers.slot_env import FinishedTrial, SlotEnv, SlotOptions
from workers.tracking.hooks import TrialTracking
from workers.tracking.ops import Executor, Op
from workers.tracking.tracker import MlflowTracker

pytestmark = pytest.mark.slow
QUADRATIC = "python:tests.objectives:quadratic"


def quadratic_spec(name: str, **budget: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task": {"name": QUADRATIC, "config": budget.pop("config", {"steps": 2})},
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -5, "high": 5}},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 3, "max_concurrent_trials": 3, **budget},
    }


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    values = make_settings(
        tmp_path / "data", pg_urls, mlflow_enabled=True, allowed_task_modules="tests"
    )
    migrated_mlflow_store(values)
    return values


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    yield database
    database.dispose()


def new_study(settings: Settings, db: Database, body: dict[str, Any]) -> int:
    storage = open_optuna_storage(settings.optuna_storage)
    with db.session_scope() as session:
        study = create_study(session, storage, StudySpec.model_validate(body), "test")
        session.flush()
        study_id = study.id
    storage.engine.dispose()
    return study_id


def claim(db: Database, worker: str = "w") -> Claim:
    with db.session_scope() as session:
        found = claim_slot(session, worker, "cpu")
    assert found is not None
    return found


def attach(db: Database, settings: Settings, found: Claim) -> optuna.Trial:
    """Ask Optuna for the claim's trial and record it on the lease, as a worker does."""
    study = optuna.load_study(study_name=found.study_name, storage=settings.optuna_storage)
    trial = study.ask()
    with db.session_scope() as session:
        session.execute(
            update(Lease)
            .where(Lease.id == found.lease_id)
            .values(trial_number=trial.number, optuna_trial_id=trial._trial_id)
        )
    return trial


def reap(db: Database, settings: Settings, lease_id: int) -> None:
    """Make the lease stale (and only that one) and let a real reaper take it."""
    with db.session_scope() as session:
        session.execute(update(Lease).values(heartbeat_at=utcnow() + timedelta(minutes=5)))
        session.execute(
            update(Lease)
            .where(Lease.id == lease_id)
            .values(heartbeat_at=utcnow() - timedelta(minutes=5))
        )
    storage = open_optuna_storage(settings.optuna_storage)
    reaper = Reaper(db, storage, grace_s=0.2, fail_fast_trials=0)
    time.sleep(0.3)  # the reaper first sees the database healthy for a grace period
    assert [r.trial_number for r in reaper.run_once()]
    storage.engine.dispose()


def trial_runs(client: MlflowClient, experiment: str) -> list[Run]:
    experiment_found = client.get_experiment_by_name(experiment)
    assert experiment_found is not None
    runs = client.search_runs([experiment_found.experiment_id], "tags.`hpo.kind` = 'trial'")
    return list(runs)


def test_sweep_ends_runs_of_ended_leases_as_the_lease_ended(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = new_study(settings, db, quadratic_spec("swept"))
    lost, counted, active = claim(db), claim(db), claim(db)
    executor = Executor(settings, db)
    # Workers that die right after MLflow created their run: the run id never
    # reaches the lease row, only the run's lease tag knows where it belongs.
    monkeypatch.setattr("workers.tracking.ops.record_lease_run", lambda *args: None)
    for number, lease in enumerate((lost, counted, active)):
        attach(db, settings, lease)
        data = {"number": number, "params": {}, "tags": {}, "start_ms": 0}
        op = Op("start_trial", "swept", f"k{number}", {**data, "lease_id": lease.lease_id})
        executor.run(Op(op.kind, op.study_name, op.key, op.data, study_id))
    monkeypatch.undo()

    reap(db, settings, lost.lease_id)
    with db.session_scope() as session:
        assert finish_lease(
            session,
            counted.lease_id,
            "w",
            study_id=study_id,
            outcome=Outcome(TrialState.COMPLETE, counted=True),
            final_state=TrialState.COMPLETE,
            fail_fast_trials=0,
        )
    executor.run(Op("sweep", "swept", study_id=study_id))

    client = MlflowClient(settings.mlflow_tracking_uri)
    runs = {r.data.tags["hpo.key"]: r for r in trial_runs(client, "swept")}
    assert runs["k0"].info.status == "FAILED"
    assert runs["k0"].data.tags["hpo.fail_reason"] == "lost"
    assert runs["k0"].data.tags["hpo.state"] == "FAIL"
    assert "stopped heartbeating" in runs["k0"].data.tags["hpo.error"]
    assert runs["k1"].info.status == "FINISHED"
    assert runs["k1"].data.tags["hpo.state"] == "COMPLETE"
    assert runs["k2"].info.status == "RUNNING"  # its worker is still at work
    with db.session_scope(read_only=True) as session:
        recorded = dict(session.execute(text("SELECT id, mlflow_run_id FROM hpo_leases")).all())
    assert recorded[lost.lease_id] == runs["k0"].info.run_id
    assert recorded[active.lease_id] is None


def _context(settings: Settings, found: Claim, trial: optuna.Trial, tmp: Path) -> TrialContext:
    return TrialContext(
        trial=trial,
        params={"x": 1.0},
        config={},
        objective_metrics=["loss"],
        seed=0,
        device="cpu",
        work_dir=tmp / "work",
        cache_dir=tmp / "cache",
        dataset_roots=[tmp],
    )


def test_worker_that_lost_its_trial_ends_the_run_failed(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    new_study(settings, db, quadratic_spec("late"))
    env = SlotEnv(settings, SlotOptions(device="cpu", device_label="cpu", slot=0))
    tracker = MlflowTracker(settings, env.db, spool_name="late")
    tracking = TrialTracking(env, tracker)
    found = claim(env.db, env.worker_id)
    trial = attach(env.db, settings, found)
    ctx = _context(settings, found, trial, tmp_path)
    spec = StudySpec.model_validate(found.spec)
    tracking.on_start(ctx, spec, found)
    ctx.report_hooks[-1](0, {"loss": 2.0})
    model = tmp_path / "work" / "model"
    model.mkdir(parents=True)
    ctx.set_model_dir(model)
    reap(env.db, settings, found.lease_id)
    # A late result, refused because the lease was reaped meanwhile.
    late = TrialResult(
        Outcome(TrialState.COMPLETE, True), values=[0.1], lost=True, metrics={"loss": 0.1}
    )
    tracking.on_end(FinishedTrial(found, spec, trial, ctx, late))
    assert tracker.flush(60)
    tracker.close(5)
    env.close()

    client = MlflowClient(settings.mlflow_tracking_uri)
    (run,) = trial_runs(client, "late")
    assert run.info.status == "FAILED"
    assert run.data.tags["hpo.state"] == "FAIL"
    assert run.data.tags["hpo.fail_reason"] == "lost"
    assert "hpo.ended_by" not in run.data.tags  # the worker ended it, not a sweep
    with pytest.raises(MlflowException):
        client.get_registered_model("late")


class SlowMlflow:
    """An MLflow server that answers nothing until released (then 503)."""

    def __init__(self) -> None:
        self.called = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _hold(self) -> None:
                outer.called.set()
                outer.release.wait(60)
                self.send_response(503)
                self.end_headers()

            def do_GET(self) -> None:
                self._hold()

            def do_POST(self) -> None:
                self._hold()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("stage", ["first trial", "summary"])
def test_slow_mlflow_never_holds_the_study_row(
    settings: Settings, db: Database, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    study_id = new_study(settings, db, quadratic_spec("held"))
    if stage == "summary":
        with db.session_scope() as session:
            session.execute(
                update(Study)
                .where(Study.id == study_id)
                .values(status=StudyStatus.CANCELLED, mlflow_experiment_id="1", mlflow_run_id="abc")
            )
        op = Op("summary", "held", study_id=study_id)
    else:
        data = {"number": 0, "params": {}, "tags": {}, "start_ms": 0, "lease_id": None}
        op = Op("start_trial", "held", "k", data, study_id)
    slow = SlowMlflow()
    executor = Executor(settings.model_copy(update={"mlflow_tracking_uri": slow.url}), db)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            executor.run(op)
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        assert slow.called.wait(30), errors
        # What claims and finishes of the study take first, with no patience.
        with db.session_scope() as session:
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert lock_study(session, study_id) is not None
        if stage == "first trial":
            with db.session_scope() as session:
                session.execute(text("SET LOCAL lock_timeout = '2s'"))
                assert claim_slot(session, "other", "cpu") is not None
    finally:
        slow.close()
        worker.join(60)
    assert errors  # MLflow never answered


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def wait_for(predicate: Callable[[], bool], what: str, fleet: Fleet, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{fleet.logs()[-5000:]}")


def status(api: TestClient, name: str) -> str:
    return str(api.get(f"/api/v1/studies/{name}").json()["status"])


def study_id_of(db: Database, name: str) -> int:
    with db.session_scope(read_only=True) as session:
        found = session.scalar(select(Study.id).where(Study.name == name))
    assert found is not None
    return int(found)


def mlp_spec(name: str, optimizer: str, low: float, high: float, epochs: int) -> dict[str, Any]:
    return {
        "name": name,
        "task": {"name": "mlp-classifier", "config": {"max_epochs": epochs}},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": [optimizer]},
            "learning_rate": {"type": "float", "low": low, "high": high, "log": True},
        },
        "pruner": {"name": "none"},
        "budget": {"n_trials": 1, "max_concurrent_trials": 1},
    }


def summarized(db: Database, study_id: int) -> bool:
    """The study ended and its MLflow summary (the last op of its last trial) is written."""
    with db.session_scope(read_only=True) as session:
        row = session.get(Study, study_id)
        return row is not None and row.mlflow_summarized_at is not None


def test_resubmitted_study_gets_its_own_experiment_and_best_model(
    api: TestClient, fleet: Fleet, settings: Settings, db: Database
) -> None:
    client = MlflowClient(settings.mlflow_tracking_uri)
    good = mlp_spec("resub", "adam", 2e-3, 3e-3, epochs=3)
    assert api.post("/api/v1/studies", json=good).status_code == 201
    first = study_id_of(db, "resub")
    fleet.start()
    wait_for(lambda: summarized(db, first), "the first study", fleet)
    old_version = client.get_model_version_by_alias("resub", "best")
    old_experiment = client.get_experiment_by_name("resub")
    assert old_experiment is not None

    assert api.delete("/api/v1/studies/resub").status_code == 204
    # Far worse: plain SGD with a tiny step for one epoch.
    bad = mlp_spec("resub", "sgd", 1e-6, 2e-6, epochs=1)
    assert api.post("/api/v1/studies", json=bad).status_code == 201
    second = study_id_of(db, "resub")
    assert second != first
    wait_for(lambda: summarized(db, second), "the second study", fleet)

    experiment = client.get_experiment_by_name("resub")
    assert experiment is not None and experiment.experiment_id != old_experiment.experiment_id
    assert experiment.tags["hpo.study_id"] == str(second)
    renamed = client.get_experiment(old_experiment.experiment_id)
    assert renamed.name == f"resub (deleted study {first})"
    (run,) = trial_runs(client, "resub")
    assert run.data.tags["hpo.study_id"] == str(second)

    version = client.get_model_version_by_alias("resub", "best")
    assert version.run_id == run.info.run_id
    assert version.tags["hpo.study_id"] == str(second)
    new_value = api.get("/api/v1/studies/resub/best").json()["value"]
    assert float(version.tags["hpo.objective"]) == new_value
    assert new_value < float(old_version.tags["hpo.objective"])  # worse, and registered anyway
    kept = client.get_model_version_by_alias(f"resub (deleted study {first})", "best")
    assert kept.run_id == old_version.run_id
    owner = settings.trials_dir / "resub" / ".study-id"
    assert owner.read_text().strip() == str(second)


def test_runs_of_a_killed_worker_end_failed_and_lost(
    api: TestClient, fleet: Fleet, settings: Settings
) -> None:
    body = quadratic_spec(
        "killed", config={"steps": 8, "sleep_s": 0.5}, n_trials=2, max_concurrent_trials=1
    )
    assert api.post("/api/v1/studies", json=body).status_code == 201
    client = MlflowClient(settings.mlflow_tracking_uri)

    def running_run() -> bool:
        experiment = client.get_experiment_by_name("killed")
        return experiment is not None and any(
            run.info.status == "RUNNING" for run in trial_runs(client, "killed")
        )

    doomed = fleet.start()
    wait_for(running_run, "a trial's run", fleet)
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    survivor = fleet.start("--exit-when-idle")
    wait_for(lambda: status(api, "killed") == "completed", "the study", fleet)
    assert survivor.wait(timeout=120) == 0

    runs = trial_runs(client, "killed")
    assert [r.info.status for r in runs].count("RUNNING") == 0
    (lost,) = [r for r in runs if r.info.status == "FAILED"]
    assert lost.data.tags["hpo.fail_reason"] == "lost"
    assert lost.data.tags["hpo.ended_by"] == "sweep"
    assert "stopped heartbeating" in lost.data.tags["hpo.error"]
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED", "FINISHED"]


def test_the_summary_deletes_a_parent_run_left_by_a_killed_worker(
    settings: Settings, db: Database
) -> None:
    study_id = new_study(settings, db, quadratic_spec("stray"))
    executor = Executor(settings, db)
    op = Op("summary", "stray", study_id=study_id)
    experiment_id, parent = executor.parent_of(executor.study(op))
    # A worker killed between creating its own parent run and finding another's stored.
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    tags = {"hpo.kind": "study", "hpo.study_id": str(study_id), "hpo.study": "stray"}
    stray = client.create_run(experiment_id, run_name="stray", tags=tags).info.run_id
    with db.session_scope() as session:
        session.execute(
            update(Study).where(Study.id == study_id).values(status=StudyStatus.CANCELLED)
        )
    executor.run(op)
    assert client.get_run(stray).info.lifecycle_stage == "deleted"
    assert client.get_run(parent).info.status == "KILLED"
    assert not client.search_runs([experiment_id], "attributes.status = 'RUNNING'")
