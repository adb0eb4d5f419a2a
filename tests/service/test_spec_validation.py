"""Every kind of invalid spec is answered 422 with the path of the offending field."""

from __future__ import annotations

import copy
import tracemalloc
from typing import Any

import pytest
from fastapi.testclient import TestClient

from storage.documents import MAX_DEPTH
from storage.optimizers import check_sampler
from storage.search_space import MAX_GRID_POINTS, grid_points, grid_size
from storage.spec import FloatParam, IntParam, StudySpec

VALID: dict[str, Any] = {
    "name": "valid-study",
    "task": {"name": "mlp-classifier", "config": {"max_epochs": 2}},
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "search_space": {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "hidden_size_1": {"type": "int", "low": 16, "high": 64},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    },
    "sampler": {"name": "tpe", "seed": 1},
    "pruner": {"name": "median"},
    "budget": {"n_trials": 4, "max_concurrent_trials": 2},
}


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        doc = doc.setdefault(key, {})
    if value is _DELETE:
        doc.pop(keys[-1])
    else:
        doc[keys[-1]] = value


_DELETE = object()
SS = "search_space"

# (id, {path: value}, expected loc)
INVALID: list[tuple[str, dict[str, Any], list[str | int]]] = [
    ("unknown-top-key", {"colour": "red"}, ["colour"]),
    ("unknown-budget-key", {"budget.n_trails": 3}, ["budget", "n_trails"]),
    ("name-uppercase", {"name": "Bad-Name"}, ["name"]),
    ("name-too-long", {"name": "a" * 65}, ["name"]),
    ("name-missing", {"name": _DELETE}, ["name"]),
    ("task-missing", {"task": _DELETE}, ["task"]),
    ("task-unknown", {"task.name": "image-gen"}, ["task", "name"]),
    ("task-python-not-allowed", {"task.name": "python:os:system"}, ["task", "name"]),
    ("task-config-unknown-key", {"task.config.epochs": 3}, ["task", "config", "epochs"]),
    ("task-config-bad-value", {"task.config.max_epochs": 0}, ["task", "config", "max_epochs"]),
    (
        "task-config-bad-dataset",
        {"task.config.dataset": {"name": "cifar"}},
        ["task", "config", "dataset", "name"],
    ),
    (
        "float-low-ge-high",
        {f"{SS}.learning_rate.low": 0.5, f"{SS}.learning_rate.high": 0.1},
        [SS, "learning_rate"],
    ),
    ("float-log-low-zero", {f"{SS}.learning_rate.low": 0.0}, [SS, "learning_rate"]),
    ("float-step-and-log", {f"{SS}.learning_rate.step": 0.01}, [SS, "learning_rate"]),
    ("float-not-a-number", {f"{SS}.learning_rate.low": "small"}, [SS, "learning_rate", "low"]),
    (
        "int-low-ge-high",
        {f"{SS}.hidden_size_1.low": 64, f"{SS}.hidden_size_1.high": 64},
        [SS, "hidden_size_1"],
    ),
    ("int-zero-step", {f"{SS}.hidden_size_1.step": 0}, [SS, "hidden_size_1", "step"]),
    (
        "int-log-with-step",
        {f"{SS}.hidden_size_1.log": True, f"{SS}.hidden_size_1.step": 2},
        [SS, "hidden_size_1"],
    ),
    ("categorical-empty", {f"{SS}.optimizer.choices": []}, [SS, "optimizer", "choices"]),
    (
        "categorical-duplicates",
        {f"{SS}.optimizer.choices": ["adam", "adam"]},
        [SS, "optimizer", "choices"],
    ),
    (
        "param-unknown-type",
        {f"{SS}.optimizer": {"type": "uniform", "low": 0, "high": 1}},
        [SS, "optimizer"],
    ),
    ("param-unknown-key", {f"{SS}.learning_rate.scale": "log"}, [SS, "learning_rate", "scale"]),
    (
        "param-not-a-task-hyperparameter",
        {f"{SS}.momentumm": {"type": "float", "low": 0, "high": 1}},
        [SS, "momentumm"],
    ),
    (
        "param-outside-task-bounds",
        {f"{SS}.dropout": {"type": "float", "low": 0.0, "high": 1.5}},
        [SS, "dropout", "high"],
    ),
    (
        "param-choice-not-allowed",
        {f"{SS}.optimizer.choices": ["adam", "lion"]},
        [SS, "optimizer", "choices", 1],
    ),
    (
        "param-float-for-int",
        {f"{SS}.hidden_size_1": {"type": "float", "low": 16, "high": 64}},
        [SS, "hidden_size_1", "type"],
    ),
    ("objective-unknown-metric", {"objective.metric": "val_f2"}, ["objective", "metric"]),
    ("objective-bad-direction", {"objective.direction": "up"}, ["objective", "direction"]),
    (
        "objective-and-objectives",
        {"objectives": [{"metric": "val_loss", "direction": "minimize"}]},
        [],
    ),
    (
        "objectives-unknown-metric",
        {
            "objective": _DELETE,
            "pruner": {"name": "none"},
            "objectives": [
                {"metric": "val_accuracy", "direction": "maximize"},
                {"metric": "flops", "direction": "minimize"},
            ],
        },
        ["objectives", 1, "metric"],
    ),
    (
        "objectives-duplicate",
        {
            "objective": _DELETE,
            "pruner": {"name": "none"},
            "objectives": [
                {"metric": "val_loss", "direction": "minimize"},
                {"metric": "val_loss", "direction": "minimize"},
            ],
        },
        ["objectives", 1, "metric"],
    ),
    (
        "pruner-with-two-objectives",
        {
            "objective": _DELETE,
            "objectives": [
                {"metric": "val_accuracy", "direction": "maximize"},
                {"metric": "params_m", "direction": "minimize"},
            ],
        },
        ["pruner", "name"],
    ),
    ("sampler-unknown", {"sampler.name": "bayes"}, ["sampler", "name"]),
    (
        "sampler-unknown-option",
        {"sampler.options": {"n_startup": 3}},
        ["sampler", "options", "n_startup"],
    ),
    (
        "sampler-option-wrong-type",
        {"sampler.options": {"n_startup_trials": "three"}},
        ["sampler", "options", "n_startup_trials"],
    ),
    (
        "sampler-option-callable",
        {"sampler.options": {"gamma": 0.1}},
        ["sampler", "options", "gamma"],
    ),
    ("sampler-negative-seed", {"sampler.seed": -1}, ["sampler", "seed"]),
    (
        "sampler-bad-option-value",
        {"sampler": {"name": "qmc", "options": {"qmc_type": "lattice"}}},
        ["sampler", "options"],
    ),
    ("grid-over-continuous", {"sampler": {"name": "grid"}}, [SS, "learning_rate"]),
    ("pruner-unknown", {"pruner.name": "early-stop"}, ["pruner", "name"]),
    ("pruner-unknown-option", {"pruner.options": {"warmup": 2}}, ["pruner", "options", "warmup"]),
    ("pruner-missing-required", {"pruner": {"name": "percentile"}}, ["pruner", "options"]),
    (
        "pruner-bad-value",
        {"pruner": {"name": "hyperband", "options": {"reduction_factor": 1}}},
        ["pruner", "options"],
    ),
    (
        "pruner-wilcoxon-threshold",
        {"pruner": {"name": "wilcoxon", "options": {"p_threshold": 2}}},
        ["pruner", "options"],
    ),
    (
        "pruner-patient-wrapped-bad",
        {
            "pruner": {
                "name": "patient",
                "options": {"patience": 2, "wrapped": {"name": "median", "options": {"bogus": 1}}},
            }
        },
        ["pruner", "options", "wrapped", "options", "bogus"],
    ),
    ("budget-zero-trials", {"budget.n_trials": 0}, ["budget", "n_trials"]),
    ("budget-too-many-trials", {"budget.n_trials": 10**7}, ["budget", "n_trials"]),
    (
        "budget-zero-concurrency",
        {"budget.max_concurrent_trials": 0},
        ["budget", "max_concurrent_trials"],
    ),
    ("budget-negative-timeout", {"budget.timeout_s": -5}, ["budget", "timeout_s"]),
    ("budget-retries-out-of-bounds", {"budget.max_retries": 99}, ["budget", "max_retries"]),
    ("budget-trials-not-int", {"budget.n_trials": "many"}, ["budget", "n_trials"]),
    ("priority-out-of-bounds", {"priority": 10**6}, ["priority"]),
    (
        "dataset-path-outside-roots",
        {
            "task": {
                "name": "text-classification",
                "config": {"dataset": {"source": "csv", "path": "/etc/passwd"}},
            },
            SS: _DELETE,
            "objective": _DELETE,
        },
        ["task", "config", "dataset", "path"],
    ),
    (
        "dataset-path-traversal",
        {
            "task": {
                "name": "text-classification",
                "config": {"dataset": {"source": "csv", "path": "../../../../etc/shadow"}},
            },
            SS: _DELETE,
            "objective": _DELETE,
        },
        ["task", "config", "dataset", "path"],
    ),
    (
        "report-step-unknown-unit",
        {
            "task": {"name": "masked-lm", "config": {"report_step": "epochs"}},
            SS: _DELETE,
            "objective": _DELETE,
        },
        ["task", "config", "report_step"],
    ),
    (
        "grid-too-many-points",
        {
            "sampler": {"name": "grid"},
            SS: {
                "hidden_size_1": {"type": "int", "low": 16, "high": 1024},
                "hidden_size_2": {"type": "int", "low": 16, "high": 1024},
            },
        },
        [SS],
    ),
    (
        "float-step-too-small",
        {SS: {"dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 1e-300}}},
        [SS, "dropout"],
    ),
    ("int-bound-beyond-floats", {f"{SS}.hidden_size_1.high": 2**60}, [SS, "hidden_size_1", "high"]),
    (
        "integer-beyond-64-bits",
        {"task.config.max_epochs": 10**30},
        ["task", "config", "max_epochs"],
    ),
    (
        "search-space-too-large",
        {SS: {f"p{i}": {"type": "int", "low": 0, "high": 1} for i in range(1001)}},
        [SS],
    ),
    (
        "hub-name-is-a-path",
        {
            "task": {
                "name": "text-classification",
                "config": {"dataset": {"source": "huggingface", "name": "/etc"}},
            },
            "objective": _DELETE,
            SS: _DELETE,
        },
        ["task", "config", "dataset", "name"],
    ),
    (
        "hub-name-is-a-local-builder",
        {
            "task": {
                "name": "text-classification",
                "config": {"dataset": {"source": "huggingface", "name": "csv"}},
            },
            "objective": _DELETE,
            SS: _DELETE,
        },
        ["task", "config", "dataset", "name"],
    ),
    (
        "csv-dataset-without-path",
        {
            "task": {"name": "text-classification", "config": {"dataset": {"source": "csv"}}},
            "objective": _DELETE,
            SS: _DELETE,
        },
        ["task", "config", "dataset", "path"],
    ),
    (
        "pretrained-architecture-tuned",
        {
            "task": {
                "name": "text-classification",
                "config": {"model": {"source": "pretrained", "name_or_path": "bert-base-uncased"}},
            },
            "objective": _DELETE,
            SS: {"num_layers": {"type": "int", "low": 1, "high": 3}},
        },
        [SS, "num_layers"],
    ),
]


def _mutated(changes: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    for path, value in changes.items():
        _set(doc, path, value)
    return doc


def test_the_valid_spec_is_accepted(client: TestClient) -> None:
    response = client.post("/api/v1/studies", json=VALID)
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["task"]["config"]["max_epochs"] == 2


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("changes", "loc"),
    [(c, loc) for _, c, loc in INVALID],
    ids=[case_id for case_id, _, _ in INVALID],
)
def test_invalid_spec_is_422_with_field_path(
    client: TestClient, changes: dict[str, Any], loc: list[str | int]
) -> None:
    response = client.post("/api/v1/studies", json=_mutated(changes))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_spec"
    assert body["errors"], body
    assert loc in [e["loc"] for e in body["errors"]], body["errors"]
    assert client.get("/api/v1/studies").json()["total"] == 0


def test_at_least_thirty_distinct_invalid_specs() -> None:
    assert len({case_id for case_id, _, _ in INVALID}) >= 30


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "body",
    [b"{", b"[1, 2]", b"null", b"\xff\xfe", b"", b'"spec"', b'{"name": "x", "task": {"name": 5}}'],
)
def test_malformed_bodies_are_422_never_500(client: TestClient, body: bytes) -> None:
    response = client.post(
        "/api/v1/studies", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_spec"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_defaults_are_resolved_from_the_task(client: TestClient) -> None:
    response = client.post(
        "/api/v1/studies", json={"name": "defaults", "task": {"name": "mlp-classifier"}}
    )
    assert response.status_code == 201, response.text
    spec = response.json()["spec"]
    assert spec["objective"] == {"metric": "val_accuracy", "direction": "maximize"}
    assert set(spec["search_space"]) >= {"learning_rate", "hidden_size_1", "dropout"}
    assert spec["pruner"]["name"] == "median"
    assert spec["task"]["config"]["dataset"]["name"] == "digits"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_default_space_depends_on_the_model_source(client: TestClient) -> None:
    pretrained = {"source": "pretrained", "name_or_path": "bert-base-uncased"}
    spaces = {}
    for name, model in (("scratch", {"source": "scratch"}), ("pretrained", pretrained)):
        body = {"name": name, "task": {"name": "text-classification", "config": {"model": model}}}
        response = client.post("/api/v1/studies", json=body)
        assert response.status_code == 201, response.text
        spaces[name] = response.json()["spec"]["search_space"]
    # A checkpoint fixes the architecture and fine-tunes with small learning rates.
    assert "num_layers" in spaces["scratch"] and "num_layers" not in spaces["pretrained"]
    assert spaces["pretrained"]["learning_rate"]["high"] <= 1e-4
    assert spaces["scratch"]["learning_rate"]["low"] >= 3e-4
    # Small sets give large batches too few optimizer steps to leave chance.
    assert max(spaces["scratch"]["batch_size"]["choices"]) <= 32
    tasks = {t["name"]: t for t in client.get("/api/v1/tasks").json()["items"]}
    listed = tasks["text-classification"]["default_search_spaces"]
    assert listed["pretrained"]["learning_rate"]["high"] == 1e-4
    assert tasks["text-classification"]["default_search_space"] == listed["scratch"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_nul_characters_are_refused_with_their_path(client: TestClient) -> None:
    spec = _mutated({"search_space.optimizer.choices": ["adam", "s\x00gd"]})
    response = client.post("/api/v1/studies", json=spec)
    assert response.status_code == 422
    assert ["search_space", "optimizer", "choices", 1] in [
        e["loc"] for e in response.json()["errors"]
    ]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_deep_nesting_is_refused_at_its_path(client: TestClient) -> None:
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(200):
        cursor["k"] = {}
        cursor = cursor["k"]
    spec = {**_mutated({}), "task": {"name": "python:tests.objectives:quadratic", "config": deep}}
    response = client.post("/api/v1/studies", json=spec)
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["loc"][:3] == ["task", "config", "k"] and "nested deeper" in error["msg"]
    assert len(error["loc"]) == MAX_DEPTH


def test_grid_sizes_are_computed_without_building_the_grid() -> None:
    tiny = FloatParam(type="float", low=0.0, high=1.0, step=2e-7)
    tracemalloc.start()
    try:
        assert grid_size(tiny) == 5_000_001
        space = {"x": tiny, "y": IntParam(type="int", low=0, high=2**53)}
        assert grid_points(space) == MAX_GRID_POINTS + 1
        spec = StudySpec.model_validate(
            {
                "name": "g",
                "task": {"name": "mlp-classifier"},
                "sampler": {"name": "grid"},
                "search_space": {"dropout": tiny.model_dump()},
            }
        )
        assert [e.loc for e in check_sampler(spec)] == [("search_space",)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # bytes; the listed grid alone would take 160 MB


LONG = 300_000
DATASET = ("task", "config", "dataset")


def _text_task(dataset: dict[str, Any]) -> dict[str, Any]:
    task = {"name": "text-classification", "config": {"dataset": dataset}}
    return {"task": task, SS: _DELETE, "objective": _DELETE}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        # pydantic's own message names the tag it did not know.
        ({"search_space.optimizer": {"type": "z" * LONG}}, [SS, "optimizer"]),
        ({"search_space.optimizer.choices": ["adam", "s" * LONG]}, [SS, "optimizer", "choices", 1]),
        (_text_task({"source": "csv", "path": "/" + "p" * (LONG - 1)}), [*DATASET, "path"]),
        ({"search_space.x" + "x" * (LONG - 1): {"type": "float", "low": 0, "high": 1}}, None),
    ],
    ids=["union-tag", "choice", "dataset-path", "hyperparameter-name"],
)
def test_a_long_rejected_value_is_quoted_by_a_prefix(
    client: TestClient, changes: dict[str, Any], loc: list[str | int] | None
) -> None:
    response = client.post("/api/v1/studies", json=_mutated(changes))
    assert response.status_code == 422, response.text[:2000]
    assert len(response.content) < 2000, response.text[:4000]
    errors = response.json()["errors"]
    assert any(f"{LONG} characters" in e["msg"] for e in errors), errors
    if loc is not None:
        assert loc in [e["loc"] for e in errors]
