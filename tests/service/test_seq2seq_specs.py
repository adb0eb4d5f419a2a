"""Specs of the seq2seq task, NSP objectives and augmentation knobs, over REST."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from storage.settings import Settings

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def _post(client: TestClient, name: str, task: dict[str, Any], **rest: Any) -> Any:
    return client.post("/api/v1/studies", json={"name": name, "task": task, **rest})


def test_a_seq2seq_study_from_a_csv_of_pairs_gets_the_task_defaults(
    client: TestClient, settings: Settings
) -> None:
    dataset = {
        "source": "csv",
        "path": f"{settings.dataset_roots}/pairs.csv",
        "source_column": "en",
        "target_column": "de",
    }
    response = _post(client, "mt", {"name": "seq2seq", "config": {"dataset": dataset}})
    assert response.status_code == 201, response.text
    spec = response.json()["spec"]
    assert spec["objective"] == {"metric": "val_bleu", "direction": "maximize"}
    assert spec["task"]["config"]["max_target_len"] == 64
    assert {"learning_rate", "num_layers", "label_smoothing"} <= set(spec["search_space"])
    tasks = {t["name"]: t for t in client.get("/api/v1/tasks").json()["items"]}
    assert set(tasks["seq2seq"]["metrics"]) >= {"val_bleu", "val_chrf", "val_exact_match"}


def test_seq2seq_searches_beams_and_augmentation_within_bounds(client: TestClient) -> None:
    space = {
        "num_beams": {"type": "int", "low": 1, "high": 4},
        "augment_deletion": {"type": "float", "low": 0.0, "high": 0.2},
        "augment_swap": {"type": "float", "low": 0.0, "high": 0.2},
        "augment_mask": {"type": "categorical", "choices": [0.0, 0.1]},
    }
    task = {"name": "seq2seq"}
    ok = _post(
        client,
        "knobs",
        task,
        objective={"metric": "val_chrf", "direction": "maximize"},
        search_space=space,
    )
    assert ok.status_code == 201, ok.text
    space["augment_deletion"]["high"] = 0.9
    bad = _post(client, "too-much", task, search_space=space)
    assert bad.status_code == 422
    assert ["search_space", "augment_deletion", "high"] in [e["loc"] for e in bad.json()["errors"]]
    classification = _post(
        client,
        "noisy-text",
        {"name": "text-classification"},
        search_space={"augment_mask": {"type": "float", "low": 0.0, "high": 0.3}},
    )
    assert classification.status_code == 201, classification.text


def test_bad_seq2seq_configs_are_422_with_their_path(client: TestClient) -> None:
    cases = [
        ({"dataset": {"source": "csv", "path": "../outside.csv"}}, ["dataset", "path"]),
        ({"dataset": {"source": "huggingface", "name": "./local"}}, ["dataset"]),
        ({"max_target_len": 1}, ["max_target_len"]),
        ({"dataset": {"source": "builtin", "text_column": "x"}}, ["dataset"]),
    ]
    for config, path in cases:
        response = _post(client, "bad", {"name": "seq2seq", "config": config})
        assert response.status_code == 422, (config, response.text)
        locs = [e["loc"] for e in response.json()["errors"]]
        assert any(loc[2 : 2 + len(path)] == path for loc in locs), (config, locs)


def test_nsp_metrics_need_the_nsp_objective(client: TestClient) -> None:
    objective = {"metric": "val_nsp_accuracy", "direction": "maximize"}
    plain = _post(client, "mlm", {"name": "masked-lm"}, objective=objective)
    assert plain.status_code == 422
    error = plain.json()["errors"][0]
    assert error["loc"] == ["objective", "metric"] and "mlm+nsp" in error["msg"]
    nsp = _post(
        client,
        "nsp",
        {"name": "masked-lm", "config": {"objective": "mlm+nsp"}},
        objective=objective,
    )
    assert nsp.status_code == 201, nsp.text
    wrong = _post(client, "what", {"name": "masked-lm", "config": {"objective": "nsp"}})
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["loc"] == ["task", "config", "objective"]
