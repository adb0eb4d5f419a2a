"""The Python client against a real ``hpo serve`` and a real ``hpo worker``."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import hpo
from storage.spec import StudySpec
from tests.deployment import Deployment, quadratic_spec
from tests.procs import free_port


def test_submit_wait_and_analyse_a_study(
    client: hpo.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    study = client.submit(quadratic_spec("client-quadratic", n_trials=5))
    assert isinstance(study, hpo.Study) and study.name == "client-quadratic"
    assert study.status == "queued"

    assert study.wait(timeout=180, interval=0.5) is study
    assert study.status == "completed" and study.is_finished
    bar = capsys.readouterr().err
    assert "client-quadratic" in bar and "5/5" in bar

    trials = study.trials()
    assert [t.number for t in trials] == list(range(5))
    assert all(t.state == "COMPLETE" and t.worker for t in trials)
    assert all(sorted(t.intermediate_values) == [0, 1, 2] for t in trials)
    best = study.best_trial
    assert best is not None and best.state == "COMPLETE"
    assert best.value == min(t.value for t in trials if t.value is not None)
    assert best.values == [best.value] and set(best.params) == {"x"}
    assert best.value == pytest.approx((best.params["x"] - 2.0) ** 2)
    assert best.mlflow_run_id is None and best.model_uri is None  # MLflow is off here
    assert study.trials(state="FAIL") == [] and len(study.trials("COMPLETE")) == 5

    frame = study.trials_dataframe()
    assert list(frame.columns[:6]) == [
        "number",
        "value",
        "datetime_start",
        "datetime_complete",
        "duration",
        "params_x",
    ]
    assert {"state", "worker", "mlflow_run_id"} <= set(frame.columns)
    assert len(frame) == 5 and frame["value"].min() == best.value
    assert set(frame["state"]) == {"COMPLETE"} and frame["duration"].dt.total_seconds().gt(0).all()

    assert set(study.importance()) == {"x"}
    assert study.pareto_front == [best]
    assert any(s.name == "client-quadratic" for s in client.studies(status="completed"))
    assert client.study("client-quadratic").counts["COMPLETE"] == 5


def test_enqueue_pause_resume_cancel_delete(client: hpo.Client) -> None:
    study = client.submit(quadratic_spec("client-control", n_trials=3))
    assert study.pause().status == "paused"
    assert study.pause().status == "paused"  # already paused: nothing to do, no error
    answer = study.enqueue({"x": 2.0})
    assert answer["state"] == "WAITING" and answer["params"] == {"x": 2.0}
    assert [t.params for t in study.trials(state="WAITING")] == [{"x": 2.0}]
    with pytest.raises(TimeoutError, match="still paused"):
        study.wait(timeout=1, progress=False, interval=0.5)

    assert study.resume().status in ("queued", "running")
    assert study.resume().status in ("queued", "running", "completed")  # a no-op too
    study.wait(timeout=120, progress=False, interval=0.5)
    exact = [t for t in study.trials() if t.params == {"x": 2.0}]
    assert len(exact) == 1 and exact[0].value == 0.0

    with pytest.raises(hpo.ApiError) as refused:
        study.enqueue({"x": 1.0})
    assert refused.value.status == 409 and refused.value.code == "conflict"

    other = client.submit(quadratic_spec("client-cancelled", n_trials=50))
    assert other.cancel().status == "cancelled"
    other.wait(timeout=60, progress=False, interval=0.5)
    other.delete()
    with pytest.raises(hpo.ApiError) as gone:
        client.study("client-cancelled")
    assert gone.value.status == 404 and gone.value.code == "not_found"


def test_pareto_front_of_two_objectives(client: hpo.Client) -> None:
    spec = quadratic_spec(
        "client-pareto",
        n_trials=4,
        task={"name": "python:tests.objectives:two_objectives"},
        objective=None,
        objectives=[
            {"metric": "loss", "direction": "minimize"},
            {"metric": "size", "direction": "minimize"},
        ],
        sampler={"name": "nsga2", "seed": 3},
    )
    del spec["objective"]
    study = client.submit(spec).wait(timeout=120, progress=False, interval=0.5)
    front = study.pareto_front
    assert front and all(len(t.values or []) == 2 for t in front)
    with pytest.raises(ValueError, match="pareto_front"):
        _ = study.best_trial
    frame = study.trials_dataframe()
    assert {"values_0", "values_1", "params_x"} <= set(frame.columns)
    assert set(study.importance("size")) == {"x"}
    with pytest.raises(KeyError):
        study.importance("accuracy")


def test_specs_from_files_and_models(client: hpo.Client, tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("name: client-from-yaml\ntask: {name: mlp-classifier}\nbudget: {n_trials: 1}\n")
    study = client.submit(str(path))
    assert study.spec["task"]["name"] == "mlp-classifier"
    assert study.pause().status == "paused"

    model = StudySpec.model_validate(quadratic_spec("client-from-model", n_trials=1))
    assert client.submit(model).spec["budget"]["n_trials"] == 1

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: ok\ntask: {name: [unclosed\n")
    with pytest.raises(hpo.SpecFileError) as bad:
        client.submit(broken)
    assert bad.value.line == 3 and str(broken) in bad.value.message
    assert "broken.yaml:3:" in bad.value.message and "expected" in bad.value.message
    with pytest.raises(TypeError, match="not int"):
        client.submit(3)


def test_errors_carry_status_code_and_field_paths(client: hpo.Client, site: Deployment) -> None:
    with pytest.raises(hpo.ApiError) as invalid:
        client.submit(
            {"name": "Bad Name", "task": {"name": "mlp-classifier"}, "budget": {"n_trials": 0}}
        )
    error = invalid.value
    assert error.status == 422 and error.code == "invalid_spec"
    assert {e.path for e in error.errors} >= {"name", "budget.n_trials"}
    assert "budget.n_trials" in str(error)

    client.submit(quadratic_spec("client-taken", n_trials=1)).pause()
    with pytest.raises(hpo.ApiError) as taken:
        client.submit(quadratic_spec("client-taken", n_trials=1))
    assert taken.value.status == 409 and taken.value.code == "conflict"

    with pytest.raises(hpo.ApiError) as denied:
        hpo.Client(site.url, "not-a-token").studies()
    assert denied.value.status == 401 and "HPO_API_TOKEN" in denied.value.message

    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(hpo.ApiConnectionError) as unreachable:
        hpo.Client(down).study("x")
    assert unreachable.value.status == 0 and down in str(unreachable.value)

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        quiet = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(hpo.ApiTimeout) as slow:
            hpo.Client(quiet, timeout=0.5).study("x")
    assert slow.value.code == "timeout" and quiet in str(slow.value)


def test_defaults_come_from_the_environment(
    site: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPO_API_URL", site.url + "/")
    monkeypatch.setenv("HPO_API_TOKEN", site.token)
    with hpo.Client() as client:
        assert client.url == site.url
        tasks = {t.name: t for t in client.tasks()}
        assert "mlp-classifier" in tasks and tasks["mlp-classifier"].default_search_space
        assert client.task("mlp-classifier").metrics == tasks["mlp-classifier"].metrics
        workers = client.workers()
        assert workers and all(w.device == "cpu" and w.heartbeat_at for w in workers)


def test_export_and_import_move_a_study(client: hpo.Client) -> None:
    source = client.submit(quadratic_spec("client-export", n_trials=3)).wait(
        timeout=120, progress=False
    )
    document = source.export()
    assert document["format"] == "hpo-study" and len(document["trials"]) == 3
    document["spec"]["name"] = "client-imported"
    copy = client.import_study(document)
    assert copy.status == "completed" and copy.budget["finished"] == 3
    moved, original = copy.trials(), source.trials()
    assert [(t.params, t.value, t.intermediate_values) for t in moved] == [
        (t.params, t.value, t.intermediate_values) for t in original
    ]
    assert copy.best_trial is not None and math.isclose(
        copy.best_trial.value or 0.0, source.best_value or 0.0
    )


def test_the_client_imports_nothing_of_the_server_or_workers() -> None:
    code = (
        "import sys, hpo\n"
        "c = hpo.Client('http://127.0.0.1:9')\n"
        "heavy = {'service', 'storage', 'workers', 'torch', 'sqlalchemy', 'fastapi', 'optuna'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
