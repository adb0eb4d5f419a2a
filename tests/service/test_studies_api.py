"""The studies and trials endpoints against SQLite and Postgres."""

from __future__ import annotations

import time
from typing import Any

import optuna
from fastapi.testclient import TestClient

from service.summary import SUMMARY_MAX_AGE_S
from storage.settings import Settings

SPEC: dict[str, Any] = {
    "name": "api-study",
    "task": {"name": "mlp-classifier"},
    "search_space": {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    },
    "budget": {"n_trials": 5, "max_concurrent_trials": 2},
}


def _create(client: TestClient, **changes: Any) -> dict[str, Any]:
    response = client.post("/api/v1/studies", json={**SPEC, **changes})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _add_finished_trials(settings: Settings, name: str, values: list[float]) -> None:
    study = optuna.load_study(study_name=name, storage=settings.optuna_storage)
    for i, value in enumerate(values):
        trial = study.ask()
        trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        trial.suggest_categorical("optimizer", ["adam", "sgd"])
        trial.report(value / 2, 0)
        trial.report(value, 1)
        trial.set_user_attr("note", f"n{i}")
        study.tell(trial, value)


def test_create_then_get_has_the_contract_shape(client: TestClient) -> None:
    created = _create(client)
    assert created["status"] == "queued"
    got = client.get("/api/v1/studies/api-study").json()
    assert set(got) >= {
        "name",
        "status",
        "spec",
        "priority",
        "counts",
        "best",
        "created_at",
        "updated_at",
        "links",
    }
    assert got["counts"] == {"RUNNING": 0, "WAITING": 0, "COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    assert got["best"] is None
    assert set(got["links"]) == {"dashboard", "mlflow"}


def test_duplicate_name_is_409(client: TestClient) -> None:
    _create(client)
    response = client.post("/api/v1/studies", json=SPEC)
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"


def test_list_paginates_and_filters(client: TestClient) -> None:
    for i in range(5):
        _create(client, name=f"s{i}")
    client.post("/api/v1/studies/s1/pause")
    page = client.get("/api/v1/studies", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [s["name"] for s in page["items"]] == ["s3", "s2"]
    paused = client.get("/api/v1/studies", params={"status": "paused"}).json()
    assert [s["name"] for s in paused["items"]] == ["s1"]
    assert client.get("/api/v1/studies", params={"status": "sleeping"}).status_code == 422
    assert client.get("/api/v1/studies", params={"limit": 0}).status_code == 422


def test_transitions_and_illegal_ones(client: TestClient) -> None:
    _create(client)
    base = "/api/v1/studies/api-study"
    assert client.post(f"{base}/resume").status_code == 409
    assert client.post(f"{base}/pause").json()["status"] == "paused"
    assert client.post(f"{base}/pause").status_code == 409
    assert client.post(f"{base}/resume").json()["status"] == "queued"
    cancelled = client.post(f"{base}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["status_reason"]
    for action in ("pause", "resume", "cancel"):
        response = client.post(f"{base}/{action}")
        assert response.status_code == 409
        assert response.json()["code"] == "conflict"
    assert client.post("/api/v1/studies/nope/pause").status_code == 404


def test_delete_removes_service_and_optuna_study(client: TestClient, settings: Settings) -> None:
    _create(client)
    assert client.delete("/api/v1/studies/api-study").status_code == 204
    assert client.get("/api/v1/studies/api-study").status_code == 404
    assert "api-study" not in optuna.get_all_study_names(settings.optuna_storage)
    assert client.delete("/api/v1/studies/api-study").status_code == 404
    _create(client)  # the name is free again


def test_trials_best_and_importance_read_optuna(client: TestClient, settings: Settings) -> None:
    _create(client)
    base = "/api/v1/studies/api-study"
    assert client.get(f"{base}/best").status_code == 404
    assert client.get(f"{base}/importance").status_code == 409
    _add_finished_trials(settings, "api-study", [0.5, 0.9, 0.7, 0.6])
    page = client.get(f"{base}/trials", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 4 and [t["number"] for t in page["items"]] == [1, 2]
    trial = client.get(f"{base}/trials/1").json()
    assert trial["state"] == "COMPLETE" and trial["value"] == 0.9
    assert trial["intermediate_values"] == {"0": 0.45, "1": 0.9}
    assert trial["user_attrs"] == {"note": "n1"} and trial["duration_s"] is not None
    assert client.get(f"{base}/trials/99").status_code == 404
    assert client.get(f"{base}/trials", params={"state": "FAIL"}).json()["total"] == 0
    assert client.get(f"{base}/best").json()["number"] == 1
    # The trials were written straight into Optuna, behind the service: the study
    # view shows them within its cache's age bound (service/summary.py).
    deadline = time.monotonic() + 5 * SUMMARY_MAX_AGE_S
    study = client.get(base).json()
    while study["counts"].get("COMPLETE") != 4 and time.monotonic() < deadline:
        time.sleep(0.1)
        study = client.get(base).json()
    assert study["counts"]["COMPLETE"] == 4 and study["best"]["value"] == 0.9
    importance = client.get(f"{base}/importance").json()
    assert importance["items"][0]["metric"] == "val_accuracy"
    assert set(importance["items"][0]["importances"]) == {"learning_rate", "optimizer"}


def test_multi_objective_best_is_the_pareto_front(client: TestClient, settings: Settings) -> None:
    _create(
        client,
        objectives=[
            {"metric": "val_accuracy", "direction": "maximize"},
            {"metric": "params_m", "direction": "minimize"},
        ],
        pruner={"name": "none"},
    )
    study = optuna.load_study(study_name="api-study", storage=settings.optuna_storage)
    for values in ([0.9, 2.0], [0.8, 1.0], [0.7, 3.0]):
        trial = study.ask()
        trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        study.tell(trial, values)
    front = client.get("/api/v1/studies/api-study/best").json()
    assert sorted(t["number"] for t in front["pareto_front"]) == [0, 1]
    assert client.get("/api/v1/studies/api-study").json()["best"] is None


def test_enqueue_validates_params_and_shows_waiting(client: TestClient) -> None:
    _create(client)
    base = "/api/v1/studies/api-study/trials"
    response = client.post(base, json={"params": {"learning_rate": 0.01, "optimizer": "sgd"}})
    assert response.status_code == 202 and response.json()["state"] == "WAITING"
    waiting = client.get(base, params={"state": "WAITING"}).json()["items"]
    assert waiting[0]["params"] == {"learning_rate": 0.01, "optimizer": "sgd"}
    bad = client.post(base, json={"params": {"learning_rate": 5.0, "momentum": 1}})
    assert bad.status_code == 422
    assert sorted(e["loc"] for e in bad.json()["errors"]) == [
        ["params", "learning_rate"],
        ["params", "momentum"],
    ]
    assert client.post(base, json={"params": {}, "extra": 1}).status_code == 422
    client.post("/api/v1/studies/api-study/cancel")
    assert client.post(base, json={"params": {"optimizer": "adam"}}).status_code == 409


def test_tasks_workers_health_metrics(client: TestClient) -> None:
    tasks = {t["name"]: t for t in client.get("/api/v1/tasks").json()["items"]}
    assert {"mlp-classifier", "text-classification", "masked-lm"} <= set(tasks)
    mlp = tasks["mlp-classifier"]
    assert {"val_accuracy", "val_loss"} <= set(mlp["metrics"])
    assert mlp["config_schema"]["type"] == "object"
    assert mlp["default_search_space"]["learning_rate"]["type"] == "float"
    # Each task says what its training length is measured in (the pruner's rungs).
    assert mlp["fidelity"] == {"unit": "epochs", "maximum": "max_epochs"}
    assert "max_steps" in tasks["seq2seq"]["fidelity"]["maximum"]
    assert client.get("/api/v1/workers").json() == {"items": [], "total": 0}
    assert client.get("/api/v1/healthz").json()["status"] == "ok"
    assert client.get("/api/v1/readyz").json()["checks"] == {
        "database": "ok",
        "optuna_storage": "ok",
    }
    _create(client)
    metrics = client.get("/api/v1/metrics").text
    assert 'hpo_studies{status="queued"} 1.0' in metrics
    assert "hpo_http_requests_total" in metrics


def test_unknown_routes_and_methods_have_the_error_shape(client: TestClient) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong = client.put("/api/v1/studies")
    assert wrong.status_code == 405 and set(wrong.json()) == {"code", "message", "errors"}


def test_body_size_limit(client: TestClient) -> None:
    huge = {
        **SPEC,
        "name": "big",
        "task": {"name": "mlp-classifier", "config": {"x": "a" * 2_000_000}},
    }
    response = client.post("/api/v1/studies", json=huge)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_a_rejected_value_is_quoted_by_a_short_prefix(client: TestClient) -> None:
    _create(client)
    base = "/api/v1/studies/api-study/trials"
    huge = client.post(base, json={"params": {"optimizer": "x" * 900_000}})
    assert huge.status_code == 422 and len(huge.content) < 2000, len(huge.content)
    [error] = huge.json()["errors"]
    assert error["loc"] == ["params", "optimizer"]
    assert error["msg"].startswith("'xxx") and "900000 characters" in error["msg"]
    # A name is quoted the same way, in the message and in the field's path.
    unknown = client.post(base, json={"params": {"y" * 50_000: 1, "learning_rate": 5.0}})
    assert unknown.status_code == 422 and len(unknown.content) < 2000, len(unknown.content)
    assert ["params", "learning_rate"] in [e["loc"] for e in unknown.json()["errors"]]
