"""The example specs validate, and the custom objective runs in a real worker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from storage.settings import Settings
from storage.validation import ValidationPolicy, validate_spec
from tests.conftest import Fleet, make_settings
from tests.procs import REPO

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SPECS = sorted(EXAMPLES.rglob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_example_spec_is_valid(path: Path) -> None:
    roots = [Path.cwd(), Path("datasets").resolve()]
    spec = validate_spec(
        yaml.safe_load(path.read_text()),
        ValidationPolicy(allowed_task_modules=["rosenbrock"], dataset_roots=roots),
    )
    assert spec.name


def test_there_is_an_example_per_task() -> None:
    tasks = {yaml.safe_load(p.read_text())["task"]["name"] for p in SPECS}
    assert {"mlp-classifier", "text-classification", "masked-lm", "seq2seq"} <= tasks
    assert any(name.startswith("python:") for name in tasks)


@pytest.mark.slow
def test_custom_objective_runs_in_a_worker(
    tmp_path: Path, pg_urls: tuple[str, str], fleet_factory: type[Fleet]
) -> None:
    settings: Settings = make_settings(
        tmp_path / "data", pg_urls, allowed_task_modules="rosenbrock"
    )
    spec = yaml.safe_load((EXAMPLES / "custom" / "rosenbrock.yaml").read_text())
    spec["budget"]["n_trials"] = 6
    with TestClient(create_app(settings)) as api:
        assert api.post("/api/v1/studies", json=spec).status_code == 201
        logs = tmp_path / "logs"
        logs.mkdir()
        fleet = fleet_factory(settings, logs)
        importable = os.pathsep.join([str(EXAMPLES / "custom"), str(REPO)])
        worker = fleet.start(
            "--exit-when-idle", HPO_ALLOWED_TASK_MODULES="rosenbrock", PYTHONPATH=importable
        )
        try:
            assert worker.wait(timeout=120) == 0, fleet.logs()
        finally:
            fleet.stop_all()
        deadline = time.monotonic() + 10
        while api.get("/api/v1/studies/rosenbrock").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        best = api.get("/api/v1/studies/rosenbrock/best").json()
        assert "learning_rate" in best["params"]  # suggested define-by-run
        assert best["intermediate_values"]


def test_the_readme_spec_is_valid() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = validate_spec(yaml.safe_load(block), ValidationPolicy())
    assert spec.name == "bert-sentiment"
    assert spec.pruner is not None and spec.pruner.name == "hyperband"
