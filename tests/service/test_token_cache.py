"""The API's cache of verified tokens: no lookup per request, revocation within the TTL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.token_cache import TOKEN_CACHE_TTL_S, TokenCache
from storage.db import Database
from storage.models import ApiToken
from storage.tokens import Principal, Scope, create_token, revoke_token
from tests.conftest import make_settings

ADMIN = "bootstrap-admin-secret"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_verified_token_is_looked_up_once_per_ttl() -> None:
    clock = Clock()
    cache = TokenCache(ttl_s=5.0, clock=clock)
    asked: list[str] = []

    def verify(token: str) -> Principal | None:
        asked.append(token)
        return Principal("reader", Scope.READ) if token == "good" else None

    for _ in range(3):
        assert cache.lookup("good", verify) == Principal("reader", Scope.READ)
        assert cache.lookup("bad", verify) is None
    assert asked == ["good", "bad", "bad", "bad"]  # unknown tokens are asked every time
    clock.now += 5.0
    assert cache.lookup("good", verify) is not None
    assert asked[-1] == "good"


def test_a_full_cache_starts_over() -> None:
    cache = TokenCache(ttl_s=60.0, max_entries=2)
    asked: list[str] = []

    def verify(token: str) -> Principal:
        asked.append(token)
        return Principal(token, Scope.READ)

    for token in ("a", "b", "c", "a"):
        cache.lookup(token, verify)
    assert asked == ["a", "b", "c", "a"]


@pytest.fixture
def served(tmp_path: Path, pg_urls: tuple[str, str]) -> Iterator[tuple[TestClient, Database]]:
    settings = make_settings(tmp_path / "data", pg_urls, admin_token=ADMIN)
    database = Database(settings.database_url)
    with TestClient(create_app(settings)) as client:
        yield client, database
    database.dispose()


def _last_used(database: Database) -> object:
    with database.session_scope(read_only=True) as session:
        return session.scalar(select(ApiToken.last_used_at).where(ApiToken.name == "reader"))


def test_a_token_revoked_elsewhere_is_refused_within_the_ttl(
    served: tuple[TestClient, Database],
) -> None:
    client, database = served
    with database.session_scope() as session:
        row, token = create_token(session, "reader", Scope.READ, None)
        session.flush()
        token_id = row.id
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/studies", headers=headers).status_code == 200
    assert _last_used(database) is not None  # the first request looked it up
    # Revoked by another API process (straight in the database, as it would).
    with database.session_scope() as session:
        revoke_token(session, token_id, "test")
    revoked_at = time.monotonic()
    # Within the TTL this process still trusts it: no lookup per request...
    assert client.get("/api/v1/studies", headers=headers).status_code == 200
    # ...and once the TTL has passed it is refused.
    while client.get("/api/v1/studies", headers=headers).status_code == 200:
        assert time.monotonic() - revoked_at < TOKEN_CACHE_TTL_S + 1.0
        time.sleep(0.2)
    assert client.get("/api/v1/studies", headers=headers).status_code == 401


def test_revoking_through_the_api_refuses_the_token_at_once(
    served: tuple[TestClient, Database],
) -> None:
    client, _ = served
    admin = {"Authorization": f"Bearer {ADMIN}"}
    made = client.post("/api/v1/tokens", json={"name": "temp", "scope": "read"}, headers=admin)
    headers = {"Authorization": f"Bearer {made.json()['token']}"}
    assert client.get("/api/v1/studies", headers=headers).status_code == 200
    assert client.delete(f"/api/v1/tokens/{made.json()['id']}", headers=admin).status_code == 204
    assert client.get("/api/v1/studies", headers=headers).status_code == 401
