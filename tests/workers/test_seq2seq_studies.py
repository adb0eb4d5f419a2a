"""A seq2seq study over REST with real workers: BLEU, pruning, resumption, the registered model."""

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
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from service.app import create_app
from storage.settings import Settings
from tests.conftest import Fleet, make_settings, migrated_mlflow_store
from workers.data import translation
from workers.training.metrics import generation_scores

pytestmark = pytest.mark.slow
TINY = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "num_layers": 2,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "batch_size": 32,
}
N_VALIDATION = 40


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    values = make_settings(tmp_path / "data", pg_urls, mlflow_enabled=True)
    migrated_mlflow_store(values)
    return values


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _spec() -> dict[str, Any]:
    return {
        "name": "mt",
        "task": {
            "name": "seq2seq",
            "config": {
                "dataset": {"source": "builtin", "n_train": 2000, "n_validation": N_VALIDATION},
                "model": {"source": "scratch", "vocab_size": 400},
                "max_seq_len": 32,
                "max_target_len": 24,
                "max_epochs": 10,
                "max_steps": 160,
                "eval_every_steps": 40,
            },
        },
        "objective": {"metric": "val_bleu", "direction": "maximize"},
        "search_space": {
            "learning_rate": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
            **{k: {"type": "categorical", "choices": [v]} for k, v in TINY.items()},
        },
        "sampler": {"name": "random", "seed": 1},
        # Not before the second evaluation: the trial killed after its first is not pruned.
        "pruner": {"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 41}},
        "budget": {"n_trials": 3, "max_concurrent_trials": 1, "max_retries": 2},
    }


def _trials(api: TestClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get("/api/v1/studies/mt/trials").json()["items"]
    return items


def _wait_for(condition: Any, fleet: Fleet, timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, fleet.logs()[-5000:]
        time.sleep(0.5)


def test_seq2seq_study_learns_prunes_resumes_and_registers_its_model(
    api: TestClient, fleet: Fleet, settings: Settings, tmp_path: Path
) -> None:
    response = api.post("/api/v1/studies", json=_spec())
    assert response.status_code == 201, response.text
    for lr in (3e-3, 3e-3, 9.0):
        api.post("/api/v1/studies/mt/trials", json={"params": {"learning_rate": lr}})
    victim = fleet.start()

    def second_has_reported() -> bool:
        return any(t["number"] == 1 and t["intermediate_values"] for t in _trials(api))

    _wait_for(second_has_reported, fleet)
    os.killpg(victim.pid, signal.SIGKILL)
    fleet.start("--exit-when-idle")
    _wait_for(lambda: api.get("/api/v1/studies/mt").json()["status"] == "completed", fleet)

    trials = {t["number"]: t for t in _trials(api)}
    shown = [
        (n, t["state"], t["fail_reason"], list(t["intermediate_values"])) for n, t in trials.items()
    ]
    assert trials[0]["state"] == "COMPLETE" and len(trials) == 4, shown
    # An absurd learning rate scores nothing: pruned on BLEU at the first chance.
    absurd = next(t for t in trials.values() if t["params"]["learning_rate"] == 9.0)
    assert absurd["state"] == "PRUNED" and len(absurd["intermediate_values"]) == 2, shown
    lost, retry = trials[1], next(t for t in trials.values() if t["retry_of"] == 1)
    assert lost["fail_reason"] == "lost" and retry["state"] in ("COMPLETE", "PRUNED"), shown
    assert min(int(s) for s in retry["intermediate_values"]) > min(
        int(s) for s in lost["intermediate_values"]
    )  # it resumed from the checkpoint instead of starting over

    sources, targets = translation.generate_pairs(N_VALIDATION, seed=0, stream="validation")
    copying = generation_scores(sources, targets)["val_bleu"]
    best = api.get("/api/v1/studies/mt/best").json()
    assert best["value"] > copying + 30, (best["value"], copying)

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    # Trials register as they finish (queued for MLflow): the alias reaches the best in time.
    _wait_for(lambda: _registered_value(settings) == best["value"], fleet, timeout=120)
    generator = mlflow.pyfunc.load_model("models:/mt@best")
    assert len(generator.predict(sources[:3])) == 3
    folder = Path(
        mlflow.artifacts.download_artifacts("models:/mt@best", dst_path=str(tmp_path / "best"))
    )
    checkpoint = next(p.parent for p in folder.rglob("config.json"))
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    encoded = tokenizer(sources[:8], return_tensors="pt", padding=True, return_token_type_ids=False)
    texts = tokenizer.batch_decode(
        model.generate(**encoded, max_new_tokens=24), skip_special_tokens=True
    )
    assert generation_scores(texts, targets[:8])["val_bleu"] > copying + 30


def _registered_value(settings: Settings) -> float | None:
    """The objective of the model version that the alias ``best`` names, if any."""
    client = MlflowClient(settings.mlflow_tracking_uri)
    try:
        version = client.get_model_version_by_alias("mt", "best")
    except Exception:
        return None
    return float(version.tags["hpo.objective"])
