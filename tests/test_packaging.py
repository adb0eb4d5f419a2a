"""Installs per role: the base is the client and the CLI (no torch); extras add the rest."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from packaging.requirements import Requirement

from tests.procs import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
HEAVY = {"torch", "transformers", "tokenizers", "sqlalchemy", "fastapi", "optuna", "mlflow"}


def names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def test_the_base_install_has_no_torch_and_no_server() -> None:
    base = names(PROJECT["dependencies"])
    assert not base & (HEAVY | {"mlflow-skinny", "uvicorn", "psycopg2-binary"})
    assert {"httpx", "typer", "rich", "pyyaml", "pandas", "tqdm"} <= base


def test_each_role_has_what_it_runs() -> None:
    extras = {k: names(v) for k, v in PROJECT["optional-dependencies"].items()}
    assert {"fastapi", "uvicorn", "optuna", "optuna-dashboard", "alembic", "mlflow"} <= extras[
        "server"
    ]
    assert not extras["server"] & {"torch", "transformers"}
    assert {"torch", "transformers", "optuna", "mlflow-skinny"} <= extras["worker"]
    assert "mlflow" not in extras["worker"]  # the skinny client talks to a tracking server
    all_ = [Requirement(r) for r in PROJECT["optional-dependencies"]["all"]]
    assert any(r.name == "hpo-service" and {"server", "worker"} <= r.extras for r in all_)
    dev = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"]]
    assert any(r.name == "hpo-service" and "all" in r.extras for r in dev)  # tests/run.sh


def test_the_cli_client_commands_import_nothing_heavy() -> None:
    code = (
        "import sys, hpo, service.cli.main\n"
        f"heavy = {sorted(HEAVY | {'uvicorn', 'pandas'})!r}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.strip() == "[]"
