"""The auth matrix: no token, bad token, read, write, admin on every endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from storage.db import Database
from storage.settings import Settings
from storage.tokens import Scope, create_token
from tests.conftest import make_settings

ADMIN = "bootstrap-admin-secret"
SPEC = {"name": "auth-study", "task": {"name": "mlp-classifier"}, "budget": {"n_trials": 2}}

# (method, path, body, scope needed)
ENDPOINTS: list[tuple[str, str, dict[str, object] | None, Scope]] = [
    ("GET", "/api/v1/studies", None, Scope.READ),
    ("GET", "/api/v1/studies/auth-study", None, Scope.READ),
    ("GET", "/api/v1/studies/auth-study/trials", None, Scope.READ),
    ("GET", "/api/v1/studies/auth-study/best", None, Scope.READ),
    ("GET", "/api/v1/studies/auth-study/importance", None, Scope.READ),
    ("GET", "/api/v1/workers", None, Scope.READ),
    ("GET", "/api/v1/tasks", None, Scope.READ),
    ("GET", "/api/v1/metrics", None, Scope.READ),
    ("POST", "/api/v1/studies", {**SPEC, "name": "another"}, Scope.WRITE),
    ("POST", "/api/v1/studies/auth-study/trials", {"params": {"dropout": 0.1}}, Scope.WRITE),
    ("POST", "/api/v1/studies/auth-study/pause", None, Scope.WRITE),
    ("GET", "/api/v1/tokens", None, Scope.ADMIN),
    ("POST", "/api/v1/tokens", {"name": "t", "scope": "read"}, Scope.ADMIN),
]


@pytest.fixture
def secured(
    tmp_path: Path, db_urls: tuple[str, str]
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings: Settings = make_settings(tmp_path / "data", db_urls, admin_token=ADMIN)
    database = Database(settings.database_url)
    tokens = {}
    with database.session_scope() as session:
        for scope in Scope:
            tokens[scope.name.lower()] = create_token(session, f"t-{scope.name}", scope, None)[1]
    database.dispose()
    with TestClient(create_app(settings)) as client:
        created = client.post(
            "/api/v1/studies", json=SPEC, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert created.status_code == 201
        yield client, tokens


def _call(client: TestClient, method: str, path: str, body: object, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(method, path, json=body, headers=headers).status_code


@pytest.mark.parametrize(
    ("method", "path", "body", "needed"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS]
)
def test_auth_matrix(
    secured: tuple[TestClient, dict[str, str]],
    method: str,
    path: str,
    body: dict[str, object] | None,
    needed: Scope,
) -> None:
    client, tokens = secured
    assert _call(client, method, path, body, None) == 401
    assert _call(client, method, path, body, "hpo_not-a-real-token") == 401
    for scope in Scope:
        status = _call(client, method, path, body, tokens[scope.name.lower()])
        if scope >= needed:
            assert status not in (401, 403), (scope, status)
        else:
            assert status == 403, (scope, status)
    assert _call(client, method, path, body, ADMIN) not in (401, 403)


def test_401_names_the_scheme_and_errors_have_the_shape(
    secured: tuple[TestClient, dict[str, str]],
) -> None:
    client, _ = secured
    response = client.get("/api/v1/studies")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"
    forbidden = client.post(
        "/api/v1/studies", json=SPEC, headers={"Authorization": f"Bearer {secured[1]['read']}"}
    )
    assert forbidden.json()["code"] == "forbidden"


def test_health_is_open_and_revoked_tokens_stop_working(
    secured: tuple[TestClient, dict[str, str]],
) -> None:
    client, _ = secured
    assert client.get("/api/v1/healthz").status_code == 200
    assert client.get("/api/v1/readyz").status_code == 200
    admin = {"Authorization": f"Bearer {ADMIN}"}
    created = client.post(
        "/api/v1/tokens", json={"name": "temp", "scope": "write"}, headers=admin
    ).json()
    temp = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/v1/studies", headers=temp).status_code == 200
    listed = client.get("/api/v1/tokens", headers=admin).json()["items"]
    assert all("token" not in item and "token_hash" not in item for item in listed)
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=admin).status_code == 204
    assert client.get("/api/v1/studies", headers=temp).status_code == 401


def test_tokens_are_stored_only_as_hashes(tmp_path: Path, db_urls: tuple[str, str]) -> None:
    database = Database(db_urls[0])
    with database.session_scope() as session:
        _, token = create_token(session, "hashed", Scope.READ, None)
    with database.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT token_hash, prefix FROM hpo_api_tokens").all()
    database.dispose()
    assert all(token not in (h, p) for h, p in rows)
    assert all(len(h) == 64 for h, _ in rows)


def test_no_admin_token_means_auth_off(client: TestClient) -> None:
    assert client.get("/api/v1/studies").status_code == 200
