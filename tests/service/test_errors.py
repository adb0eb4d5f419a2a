"""Optuna's storage errors to HTTP: an outage is a 503 to retry, anything else a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from optuna.storages import RDBStorage
from optuna.study import StudyDirection

from service.errors import install_error_handlers
from storage.optuna_store import open_optuna_storage
from tests.conftest import PostgresServer
from tests.pg_outages import unreachable

pytestmark = pytest.mark.postgres


@pytest.fixture
def storage(pg_urls: tuple[str, str]) -> Iterator[RDBStorage]:
    storage = open_optuna_storage(pg_urls[1])
    yield storage
    storage.engine.dispose()


@pytest.fixture
def client(storage: RDBStorage) -> Iterator[TestClient]:
    app = FastAPI()
    install_error_handlers(app)
    study_id = storage.create_new_study([StudyDirection.MINIMIZE], "errors")

    @app.get("/studies")
    def studies() -> int:
        return len(storage.get_all_studies())

    @app.put("/attr")
    def too_long_a_key() -> None:
        # Optuna's key column holds 512 characters: a DataError, wrapped by Optuna.
        storage.set_study_user_attr(study_id, "k" * 600, 1)

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_an_unreachable_storage_answers_503(
    client: TestClient, storage: RDBStorage, pg_server: PostgresServer
) -> None:
    with unreachable(pg_server, storage.url):
        response = client.get("/studies")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["code"] == "unavailable"
    assert client.get("/studies").json() == 1


def test_a_storage_error_that_waiting_does_not_cure_answers_500(client: TestClient) -> None:
    response = client.put("/attr")
    assert response.status_code == 500 and "retry-after" not in response.headers
    assert response.json() == {"code": "internal", "message": "internal error", "errors": []}
