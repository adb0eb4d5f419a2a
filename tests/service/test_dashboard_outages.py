"""The dashboard while Optuna's database restarts or is unreachable: 503, never 500.

Restarts and outages touch only this test's own database (``tests.pg_outages``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.dashboard import create_dashboard_app
from tests.conftest import PostgresServer
from tests.pg_outages import end_connections, unreachable
from tests.service.test_dashboard import ADMIN, HTML, HttpResponse, World, bearer, make_world

pytestmark = pytest.mark.postgres
# What the dashboard's own pages call while a study is open.
API_PATHS = ("/api/studies", "/api/studies/{id}", "/api/studies/{id}/param_importances")


@pytest.fixture
def world(tmp_path: Path, pg_urls: tuple[str, str]) -> World:
    return make_world(tmp_path, pg_urls, ADMIN)


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_dashboard_app(world.settings), follow_redirects=False) as test_client:
        yield test_client


def get_all(client: TestClient, world: World) -> list[HttpResponse]:
    paths = [p.format(id=world.study_id) for p in API_PATHS]
    return [client.get(path, headers=bearer(world.read)) for path in paths]


def assert_unavailable(response: HttpResponse) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["code"] == "unavailable" and body["message"] and body["errors"] == []
    assert "Traceback" not in response.text and "psycopg" not in response.text


def test_connections_lost_in_a_restart_are_replaced(
    client: TestClient, world: World, pg_server: PostgresServer
) -> None:
    # The first request after a restart reconnects instead of failing, even on a
    # connection that was in use a moment before.
    for _ in range(3):
        assert [r.status_code for r in get_all(client, world)] == [200] * len(API_PATHS)
        assert end_connections(pg_server, world.settings.optuna_storage) > 0


def test_unreachable_storage_answers_503_then_recovers(
    client: TestClient, world: World, pg_server: PostgresServer
) -> None:
    assert [r.status_code for r in get_all(client, world)] == [200] * len(API_PATHS)
    with unreachable(pg_server, world.settings.optuna_storage):
        for _ in range(2):
            for response in get_all(client, world):
                assert_unavailable(response)
        # optuna-dashboard reads the schema's version for every page.
        assert_unavailable(client.get("/dashboard", headers={**HTML, **bearer(world.read)}))
        # What needs no database still works.
        assert client.get("/api/meta", headers=bearer(world.read)).status_code == 200
        assert client.get("/static/bundle.js", headers=bearer(world.read)).status_code == 200
    assert [r.status_code for r in get_all(client, world)] == [200] * len(API_PATHS)


def test_requests_across_restarts_and_outages_answer_200_or_503(
    client: TestClient, world: World, pg_server: PostgresServer
) -> None:
    # Connections die between and during queries while readers keep polling.
    answers: list[HttpResponse] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            answers.extend(get_all(client, world))

    readers = [threading.Thread(target=poll) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(4):
            end_connections(pg_server, world.settings.optuna_storage)
            time.sleep(0.2)
            with unreachable(pg_server, world.settings.optuna_storage):
                time.sleep(0.3)
            time.sleep(0.2)
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=60)
    statuses = {r.status_code for r in answers}
    assert statuses == {200, 503}, statuses
    for response in answers:
        if response.status_code == 503:
            assert_unavailable(response)
    assert [r.status_code for r in get_all(client, world)] == [200] * len(API_PATHS)


def test_a_storage_error_that_is_no_outage_stays_500(
    client: TestClient, world: World, pg_server: PostgresServer
) -> None:
    # A broken schema is not fixed by waiting: no Retry-After that would promise it.
    engine = create_engine(world.settings.optuna_storage)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE studies RENAME TO studies_elsewhere"))
    engine.dispose()
    response = client.get("/api/studies", headers=bearer(world.read))
    assert response.status_code == 500 and "retry-after" not in response.headers
