"""Schemathesis against the served OpenAPI schema: no 5xx, responses match the schema.

Every operation is fuzzed with an admin token, against an app with a study
and finished trials in it, so that the successful paths are exercised too.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from service.app import create_app
from tests.conftest import make_settings

ADMIN = "fuzz-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
SPEC = {"name": "fuzzed", "task": {"name": "mlp-classifier"}, "budget": {"n_trials": 3}}
EXAMPLES_PER_OPERATION = 30


def _app(tmp_path: Path, urls: tuple[str, str]) -> object:
    data = tmp_path / "data"
    config = make_settings(data, urls, admin_token=ADMIN)
    app = create_app(config)
    assert TestClient(app).post("/api/v1/studies", json=SPEC, headers=AUTH).status_code == 201
    study = optuna.load_study(study_name="fuzzed", storage=config.optuna_storage)
    for value in (0.5, 0.7):
        trial = study.ask()
        trial.suggest_float("dropout", 0.0, 0.5)
        trial.report(value, 1)
        study.tell(trial, value)
    return app


def test_every_operation_conforms_to_the_schema(tmp_path: Path, db_urls: tuple[str, str]) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", _app(tmp_path, db_urls))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures = []
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            # Schema-valid specs may still be refused (an unknown task, an impossible
            # range): that semantic 422 is the contract, so this one check is off.
            response = case.call_and_validate(
                headers=AUTH, excluded_checks=[positive_data_acceptance]
            )
            statuses.append(response.status_code)

        try:
            check()
        except (Exception, ExceptionGroup) as exc:  # report every operation's failures
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    # The token worked and both accepted and refused inputs were exercised.
    assert sum(200 <= code < 300 for code in statuses) >= 50
    assert 422 in statuses and 401 not in statuses
