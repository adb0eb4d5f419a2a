"""``POST /studies/import`` takes data only: trials in the spec's space, within its
budget, without the service's own markers, and every data error is a located 422."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from storage.optuna_store import folder_root
from storage.settings import Settings
from tests.conftest import make_settings

# Steps and attribute keys are about Postgres' columns (int4, varchar(512)).
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

NAME = "imported"
SPEC: dict[str, Any] = {
    "name": NAME,
    "task": {"name": "mlp-classifier"},
    "search_space": {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "hidden_size_1": {"type": "int", "low": 32, "high": 256, "step": 32},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    },
    "budget": {"n_trials": 5, "max_concurrent_trials": 1, "max_retries": 1},
}
SPACE = {
    "learning_rate": FloatDistribution(1e-4, 1e-1, log=True),
    "optimizer": CategoricalDistribution(["adam", "sgd"]),
    "hidden_size_1": IntDistribution(32, 256, step=32),
    "dropout": FloatDistribution(0.0, 0.5),
}
PARAMS = {"learning_rate": 0.01, "optimizer": "adam", "hidden_size_1": 64, "dropout": 0.1}


@pytest.fixture
def settings(tmp_path: Path, db_urls: tuple[str, str]) -> Settings:
    # python: tasks from tests/ may define parameters by run.
    return make_settings(tmp_path / "data", db_urls, allowed_task_modules="tests")


def _trial(number: int, **changes: Any) -> dict[str, Any]:
    """A finished trial as ``GET /studies/{name}/export`` writes it."""
    params = changes.pop("params", PARAMS)
    trial: dict[str, Any] = {
        "number": number,
        "state": "COMPLETE",
        "params": params,
        "distributions": {k: distribution_to_json(SPACE[k]) for k in params if k in SPACE},
        "values": [0.5 + number / 100],
        "intermediate_values": {"0": 0.4, "1": 0.5},
        "user_attrs": {},
        "datetime_start": "2026-01-01T00:00:00+00:00",
        "datetime_complete": "2026-01-01T00:01:00+00:00",
    }
    trial.update(changes)
    return trial


def _document(trials: list[dict[str, Any]], **budget: Any) -> dict[str, Any]:
    spec = {**SPEC, "budget": {**SPEC["budget"], **budget}}
    return {"format": "hpo-study", "version": 1, "spec": spec, "trials": trials}


def _import(client: TestClient, document: dict[str, Any]) -> Any:
    return client.post("/api/v1/studies/import", json=document)


def _assert_refused_cleanly(
    client: TestClient, settings: Settings, response: Any, loc: list[Any]
) -> None:
    """A located 422 that never quotes a whole value, with nothing left behind."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request" and "Retry-After" not in response.headers
    assert body["errors"][0]["loc"] == loc, body
    assert len(response.text) < 2000
    assert client.get(f"/api/v1/studies/{NAME}").status_code == 404
    names = [s.study_name for s in optuna.get_all_study_summaries(settings.optuna_storage)]
    assert NAME not in names


def test_service_markers_are_dropped_and_reported(client: TestClient, settings: Settings) -> None:
    markers = {
        "hpo.retry_root": "../../../tmp/x",
        "hpo.retry_of": 7,
        "hpo.error": "<script>alert(1)</script>",
        "hpo.fail_reason": "oom",
    }
    failed = _trial(0, state="FAIL", values=None, user_attrs={**markers, "note": "kept"})
    complete = _trial(1, user_attrs={"hpo.seed": 3, "hpo.retry_root": "../x"})
    response = _import(client, _document([failed, complete]))
    assert response.status_code == 201, response.text
    warnings = {tuple(w["loc"]): w["msg"] for w in response.json()["warnings"]}
    assert set(warnings) == {
        ("trials", 0, "user_attrs", "hpo.error"),
        ("trials", 0, "user_attrs", "hpo.fail_reason"),
        ("trials", 0, "user_attrs", "hpo.retry_of"),
        ("trials", 0, "user_attrs", "hpo.retry_root"),
        ("trials", 1, "user_attrs", "hpo.seed"),
    }
    assert "2 trials" in warnings[("trials", 0, "user_attrs", "hpo.retry_root")]
    shown = client.get(f"/api/v1/studies/{NAME}/trials/0").json()
    assert (shown["error"], shown["fail_reason"], shown["retry_of"]) == (None, None, None)
    assert shown["user_attrs"] == {"note": "kept"}
    study = optuna.load_study(study_name=NAME, storage=settings.optuna_storage)
    stored = study.get_trials(deepcopy=False)
    assert [t.user_attrs for t in stored] == [{"note": "kept"}, {}]
    # What a worker does after each trial to find the trial folders to clean.
    assert [folder_root(t) for t in stored] == [0, 1]


OUTSIDE = [
    ("learning_rate", 5.0, FloatDistribution(0.0, 10.0)),
    ("learning_rate", 0.0, FloatDistribution(0.0, 1.0)),
    ("momentum", 0.9, FloatDistribution(0.0, 1.0)),
    ("optimizer", "rmsprop", CategoricalDistribution(["adam", "sgd", "rmsprop"])),
    ("hidden_size_1", 40, IntDistribution(32, 256)),
    ("hidden_size_1", True, IntDistribution(0, 256)),
]


@pytest.mark.parametrize(("name", "value", "document_distribution"), OUTSIDE)
def test_params_must_lie_in_the_spec_search_space(
    client: TestClient,
    settings: Settings,
    name: str,
    value: Any,
    document_distribution: Any,
) -> None:
    # The document's own distribution holds the value: only the spec's does not.
    bad = _trial(1, params={**PARAMS, name: value})
    bad["distributions"][name] = distribution_to_json(document_distribution)
    response = _import(client, _document([_trial(0), bad]))
    _assert_refused_cleanly(client, settings, response, ["trials", 1, "params", name])


def test_the_spec_distributions_replace_the_document_ones(
    client: TestClient, settings: Settings
) -> None:
    wider = _trial(0)
    wider["distributions"]["learning_rate"] = distribution_to_json(FloatDistribution(1e-6, 1.0))
    wider["distributions"]["optimizer"] = distribution_to_json(
        CategoricalDistribution(["sgd", "adam", "rmsprop"])
    )
    partial = _trial(1, params={"learning_rate": 0.001, "optimizer": "sgd"})
    response = _import(client, _document([wider, partial]))
    assert response.status_code == 201, response.text
    assert response.json()["warnings"] == []
    study = optuna.load_study(study_name=NAME, storage=settings.optuna_storage)
    first, second = study.get_trials(deepcopy=False)
    assert first.distributions == SPACE and first.params == PARAMS
    assert second.params == {"learning_rate": 0.001, "optimizer": "sgd"}
    # A worker suggests from the spec: a different set of choices would refuse it.
    trial = study.ask()
    assert trial.suggest_categorical("optimizer", ["adam", "sgd"]) in ("adam", "sgd")


def test_a_python_task_may_bring_parameters_the_spec_does_not_list(
    client: TestClient, settings: Settings
) -> None:
    spec = {
        "name": NAME,
        "task": {"name": "python:tests.objectives:quadratic"},
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -10.0, "high": 10.0}},
        "budget": {"n_trials": 4},
    }
    own = {"y": distribution_to_json(IntDistribution(0, 5))}

    def trial(number: int, y: int, distributions: dict[str, str]) -> dict[str, Any]:
        return _trial(number, params={"x": 1.0, "y": y}, distributions=distributions)

    cases = [
        ([trial(0, 2, own), trial(1, 9, own)], ["trials", 1, "params", "y"]),
        ([trial(0, 2, own), trial(1, 2, {})], ["trials", 1, "distributions", "y"]),
        ([trial(0, 2, own), trial(1, 2, {"y": "{}"})], ["trials", 1, "distributions", "y"]),
        (
            [trial(0, 2, own), trial(1, 2, {"y": distribution_to_json(FloatDistribution(0, 5))})],
            ["trials", 1, "distributions", "y"],
        ),
    ]
    for trials, loc in cases:
        response = _import(client, {"spec": spec, "trials": trials})
        _assert_refused_cleanly(client, settings, response, loc)
    response = _import(client, {"spec": spec, "trials": [trial(0, 2, own), trial(1, 3, own)]})
    assert response.status_code == 201, response.text
    study = optuna.load_study(study_name=NAME, storage=settings.optuna_storage)
    assert [t.params for t in study.get_trials(deepcopy=False)] == [
        {"x": 1.0, "y": 2},
        {"x": 1.0, "y": 3},
    ]


def test_more_counted_trials_than_n_trials_are_refused(
    client: TestClient, settings: Settings
) -> None:
    trials = [_trial(i) for i in range(6)]
    response = _import(client, _document(trials))
    _assert_refused_cleanly(client, settings, response, ["trials"])
    assert "6 trials count" in response.json()["errors"][0]["msg"]


def test_retried_failures_do_not_count_as_they_did_not_where_they_ran(
    client: TestClient, settings: Settings
) -> None:
    lost = _trial(0, state="FAIL", values=None, user_attrs={"hpo.fail_reason": "lost"})
    retry = _trial(1, user_attrs={"hpo.retry_of": 0})
    trials = [lost, retry, *(_trial(i) for i in range(2, 6))]
    response = _import(client, _document(trials))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["budget"]["finished"] == 5 and body["status"] == "completed"
    assert body["counts"]["FAIL"] == 1 and body["counts"]["COMPLETE"] == 5


def test_more_retried_failures_than_retries_allow_are_refused(
    client: TestClient, settings: Settings
) -> None:
    # n_trials 1, max_retries 0: one retried attempt at most (a shutdown's hand-back).
    chain = [_trial(i, state="FAIL", values=None) for i in range(3)]
    for i in (1, 2):
        chain[i]["user_attrs"] = {"hpo.retry_of": i - 1}
    chain.append(_trial(3, user_attrs={"hpo.retry_of": 2}))
    response = _import(client, _document(chain, n_trials=1, max_retries=0))
    _assert_refused_cleanly(client, settings, response, ["trials"])


LONG_KEY = "k" * 5000
MIN_INT64 = str(-(2**63))
DATA_ERRORS: list[tuple[dict[str, Any], list[Any]]] = [
    ({"intermediate_values": {MIN_INT64: 0.1}}, ["intermediate_values", MIN_INT64]),
    ({"intermediate_values": {str(10**30): 0.1}}, ["intermediate_values", str(10**30)]),
    ({"intermediate_values": {"2147483648": 0.1}}, ["intermediate_values", "2147483648"]),
    ({"intermediate_values": {"1_0": 0.1}}, ["intermediate_values", "1_0"]),
    ({"user_attrs": {LONG_KEY: 1}}, ["user_attrs"]),
    ({"values": [0.1, 0.2]}, ["values"]),
    ({"values": None}, ["values"]),
    ({"values": [None]}, ["values", 0]),
    ({"datetime_complete": None}, ["datetime_complete"]),
    ({"datetime_complete": "2025-12-31T00:00:00+00:00"}, ["datetime_complete"]),
]


@pytest.mark.parametrize(("changes", "loc"), DATA_ERRORS)
def test_data_errors_are_located_422s_at_once(
    client: TestClient, settings: Settings, changes: dict[str, Any], loc: list[Any]
) -> None:
    started = time.monotonic()
    response = _import(client, _document([_trial(0), _trial(1, **changes)]))
    assert time.monotonic() - started < 3
    assert response.status_code == 422, response.text
    got = response.json()["errors"][0]["loc"]
    # A long key is located by a prefix of it, never quoted whole.
    assert got[: 2 + len(loc)] == ["trials", 1, *loc], got
    assert all(len(str(part)) <= 100 for part in got)
    _assert_refused_cleanly(client, settings, response, got)
