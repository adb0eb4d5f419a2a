"""Database errors reach clients as what they are: only an outage is a 503 to retry.

Each error comes from a real Postgres (or a real refused connection) through a
route added to the app for the test, so the service's own error table maps it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from optuna.exceptions import StorageInternalError
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from service.state import AppState

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def _state(client: TestClient) -> AppState:
    app = client.app
    assert isinstance(app, FastAPI)
    state: AppState = app.state.hpo
    return state


def _get(client: TestClient, action: Callable[[AppState], None]) -> tuple[int, dict[str, str]]:
    app = client.app
    assert isinstance(app, FastAPI)
    state = _state(client)
    app.add_api_route("/probe", lambda: action(state))
    response = client.get("/probe")
    assert "database" not in response.json()["message"] or response.status_code == 503
    return response.status_code, dict(response.headers)


def _service_sql(statement: str) -> Callable[[AppState], None]:
    def run(state: AppState) -> None:
        with state.db.session_scope() as session:
            session.execute(text(statement))

    return run


# A DataError is a 500 (logged): a value that validation should have refused.
def test_a_value_out_of_range_is_no_outage(client: TestClient) -> None:
    status, headers = _get(client, _service_sql("SELECT CAST(1000000 AS smallint)"))
    assert status == 500 and "retry-after" not in headers


def test_a_statement_over_a_server_limit_is_no_outage(client: TestClient) -> None:
    # SQLSTATE 54023 (too many arguments): psycopg2 calls it an OperationalError.
    many = ", ".join(["'x'"] * 101)
    status, headers = _get(client, _service_sql(f"SELECT concat({many})"))
    assert status == 500 and "retry-after" not in headers


def test_optuna_refusing_a_value_is_no_outage(client: TestClient) -> None:
    def set_long_key(state: AppState) -> None:
        study_id = state.optuna.create_new_study([], "probe")
        trial_id = state.optuna.create_new_trial(study_id)
        state.optuna.set_trial_user_attr(trial_id, "k" * 600, 1)  # varchar(512)

    status, headers = _get(client, set_long_key)
    assert status == 500 and "retry-after" not in headers


def test_optuna_losing_its_database_is_an_outage(client: TestClient) -> None:
    def unreachable(state: AppState) -> None:
        engine = create_engine("postgresql+psycopg2://postgres@127.0.0.1:9/none")
        try:
            engine.connect()
        except OperationalError as exc:
            raise StorageInternalError("as Optuna wraps it") from exc

    status, headers = _get(client, unreachable)
    assert status == 503 and headers["retry-after"] == "5"
