"""``hpo demo --trials 3 --train-size 600`` end to end in an empty folder, embedded defaults."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.procs import free_port, hpo_env, run_hpo

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_system(tmp_path: Path) -> None:
    env = hpo_env({})
    port = free_port()
    # A smaller training set than the default: the test is about the system, not the model.
    args = ["demo", "--trials", "3", "--train-size", "600", "--port", str(port)]
    result = run_hpo(args, env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "completed" in out and "best trial #" in out
    assert "completed  3/3 finished" in out  # progress lines (stdout is not a terminal)
    assert "mlflow ui --backend-store-uri" in out and "hpo dashboard --port 8080" in out
    data = tmp_path / ".hpo"
    assert (data / "hpo.db").is_file() and (data / "optuna.db").is_file()
    client = MlflowClient(f"sqlite:///{data / 'mlflow.db'}")
    experiments = [e for e in client.search_experiments() if e.name.startswith("demo-sentiment-")]
    assert len(experiments) == 1
    name = experiments[0].name
    runs = client.search_runs([experiments[0].experiment_id])
    assert sum(r.data.tags.get("hpo.kind") == "trial" for r in runs) == 3
    assert client.get_model_version_by_alias(name, "best").tags["hpo.objective"]
    # Nothing the demo started is left running.
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
