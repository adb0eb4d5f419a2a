"""The Optuna dashboard behind the service's tokens: in-process and as a real process."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.dashboard import SESSION_COOKIE, LoginThrottle, SessionStore, create_dashboard_app
from service.dashboard_throttle import MAX_BACKOFF_S
from storage.db import Database
from storage.models import DashboardSession
from storage.optuna_store import open_optuna_storage
from storage.settings import Settings
from storage.tokens import Scope, create_token, revoke_token
from tests.conftest import make_settings
from tests.procs import REPO, free_port, hpo_env, stop_group, wait_http

ADMIN = "dashboard-admin-token"
STUDY = "dash-study"
DASHBOARD_CLI = [sys.executable, "-m", "service.cli.dashboard"]
HTML = {"Accept": "text/html,application/xhtml+xml"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """Settings, a study with two finished trials, and tokens of each scope."""

    settings: Settings
    study_id: int
    read: str
    read_id: int
    write: str

    def revoke(self, token_id: int) -> None:
        database = Database(self.settings.database_url)
        with database.session_scope() as session:
            revoke_token(session, token_id, "test")
        database.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_world(tmp_path: Path, urls: tuple[str, str], admin: str | None) -> World:
    settings = make_settings(tmp_path / "data", urls, admin_token=admin)
    storage = open_optuna_storage(settings.optuna_storage)
    study = optuna.create_study(storage=storage, study_name=STUDY)
    study.optimize(lambda t: t.suggest_float("x", -1.0, 1.0) ** 2, n_trials=2)
    storage.engine.dispose()
    database = Database(settings.database_url)
    with database.session_scope() as session:
        read_row, read = create_token(session, "reader", Scope.READ, "test")
        _, write = create_token(session, "writer", Scope.WRITE, "test")
    database.dispose()
    return World(settings, study._study_id, read, read_row.id, write)


@pytest.fixture
def world(tmp_path: Path, pg_urls: tuple[str, str]) -> World:
    return make_world(tmp_path, pg_urls, ADMIN)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(world: World, clock: FakeClock) -> Iterator[TestClient]:
    app = create_dashboard_app(world.settings, sessions=SessionStore(clock=clock))
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def sign_in(client: TestClient, token: str) -> str:
    """POST the login form; return the session cookie's value."""
    response = client.post("/login", data={"token": token, "next": "/dashboard"})
    assert response.status_code == 303, response.text
    value = response.cookies.get(SESSION_COOKIE)
    assert value
    return value


class HttpResponse(Protocol):
    """What the tests read of a response (the test client's and httpx's differ in type)."""

    status_code: int

    @property
    def text(self) -> str: ...

    @property
    def content(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def json(self) -> Any: ...


def without_accept_encoding(client: TestClient, path: str, token: str) -> HttpResponse:
    request = client.build_request("GET", path, headers=bearer(token))
    del request.headers["Accept-Encoding"]
    return client.send(request)


def assert_error(response: HttpResponse, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"] and body["errors"] == []


def test_anonymous_and_bad_tokens_are_refused(client: TestClient) -> None:
    assert_error(client.get("/api/studies"), 401, "unauthorized")
    assert client.get("/api/studies").headers["WWW-Authenticate"] == "Bearer"
    assert_error(client.get("/static/bundle.js"), 401, "unauthorized")
    assert_error(client.delete("/api/studies/1"), 401, "unauthorized")
    page = client.get("/dashboard/studies/1", headers=HTML)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/dashboard/studies/1"
    assert client.get("/", headers=HTML).headers["location"] == "/login?next=/dashboard"

    assert_error(client.get("/api/studies", headers=bearer("hpo_not-a-token")), 401, "unauthorized")
    forged = client.get("/api/studies", cookies={SESSION_COOKIE: "forged"})
    assert_error(forged, 401, "unauthorized")
    assert SESSION_COOKIE in forged.headers["set-cookie"]  # the stale cookie is cleared


def test_read_token_reads_pages_assets_and_api(client: TestClient, world: World) -> None:
    studies = client.get("/api/studies", headers=bearer(world.read))
    assert studies.status_code == 200
    assert [s["study_name"] for s in studies.json()["study_summaries"]] == [STUDY]
    detail = client.get(f"/api/studies/{world.study_id}", headers=bearer(world.read))
    assert detail.status_code == 200 and len(detail.json()["trials"]) == 2

    page = client.get("/dashboard", headers={**HTML, **bearer(world.read)})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    admin = client.get("/api/studies", headers=bearer(ADMIN))
    assert admin.status_code == 200

    zipped = client.get("/static/bundle.js", headers=bearer(world.read))
    assert zipped.status_code == 200 and zipped.headers["content-encoding"] == "gzip"
    # Without Accept-Encoding optuna-dashboard itself answers 500; the gateway must not.
    plain = without_accept_encoding(client, "/static/bundle.js", world.read)
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    # httpx decodes the gzip body: both are the same script.
    assert plain.content == zipped.content and len(plain.content) > 10_000
    assert without_accept_encoding(client, "/favicon.ico", world.read).status_code == 200


def test_write_methods_need_the_write_scope(client: TestClient, world: World) -> None:
    note = {"version": 1, "body": "promising region near x=0"}
    put_note = f"/api/studies/{world.study_id}/note"
    assert_error(client.put(put_note, json=note, headers=bearer(world.read)), 403, "forbidden")
    delete = client.delete(f"/api/studies/{world.study_id}", headers=bearer(world.read))
    assert_error(delete, 403, "forbidden")
    assert client.get("/api/studies", headers=bearer(world.read)).json()["study_summaries"]

    saved = client.put(put_note, json=note, headers=bearer(world.write))
    assert saved.status_code == 204, saved.text
    detail = client.get(f"/api/studies/{world.study_id}", headers=bearer(world.read)).json()
    assert detail["note"]["body"] == note["body"]


def test_studies_are_not_created_or_deleted_behind_the_service(
    client: TestClient, world: World
) -> None:
    # Even an admin: the service keeps budgets and leases for its studies.
    deleted = client.delete(f"/api/studies/{world.study_id}", headers=bearer(ADMIN))
    assert_error(deleted, 403, "forbidden")
    assert "REST API" in deleted.json()["message"]
    created = client.post(
        "/api/studies",
        json={"study_name": "sneaky", "directions": ["minimize"]},
        headers=bearer(ADMIN),
    )
    assert_error(created, 403, "forbidden")
    names = [
        s["study_name"]
        for s in client.get("/api/studies", headers=bearer(world.read)).json()["study_summaries"]
    ]
    assert "sneaky" not in names and len(names) == 1


def test_login_sets_a_session_cookie_that_is_not_the_token(
    client: TestClient, world: World
) -> None:
    form = client.get("/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    assert "://" not in form.text  # no external assets
    assert "default-src 'none'" in form.headers["content-security-policy"]
    # Browsers post the form with "Origin: null" under no-referrer: sign-in would fail.
    assert form.headers["referrer-policy"] == "same-origin"

    response = client.post("/login", data={"token": world.read, "next": "/dashboard"})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    set_cookie = response.headers["set-cookie"]
    assert world.read not in set_cookie
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and "Path=/" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP and not configured
    session = response.cookies[SESSION_COOKIE]
    assert session != world.read

    client.cookies.clear()
    listed = client.get("/api/studies", cookies={SESSION_COOKIE: session})
    assert listed.status_code == 200 and listed.json()["study_summaries"]
    page = client.get("/dashboard", headers=HTML, cookies={SESSION_COOKIE: session})
    assert page.status_code == 200
    # A read session may not write either.
    delete = client.delete(f"/api/studies/{world.study_id}", cookies={SESSION_COOKIE: session})
    assert_error(delete, 403, "forbidden")


def test_login_refuses_bad_tokens_and_foreign_redirects(client: TestClient, world: World) -> None:
    refused = client.post("/login", data={"token": "hpo_wrong"})
    assert refused.status_code == 401 and "invalid" in refused.text
    assert SESSION_COOKIE not in refused.cookies
    assert client.post("/login", data={"token": ""}).status_code == 400

    evil = client.post("/login", data={"token": world.read, "next": "https://evil.example/"})
    assert evil.headers["location"] == "/dashboard"
    inner = client.post("/login", data={"token": world.read, "next": "/dashboard/studies/1"})
    assert inner.headers["location"] == "/dashboard/studies/1"
    assert 'value="/dashboard/studies/1"' in client.get("/login?next=/dashboard/studies/1").text
    cross = client.post(
        "/login", data={"token": world.read}, headers={"Origin": "http://evil.example"}
    )
    assert_error(cross, 403, "forbidden")


def test_cookie_writes_must_come_from_the_dashboard_origin(
    client: TestClient, world: World
) -> None:
    session = sign_in(client, world.write)
    client.cookies.clear()
    put_note = f"/api/studies/{world.study_id}/note"
    cookies = {SESSION_COOKIE: session}
    foreign = client.put(
        put_note,
        json={"version": 1, "body": "x"},
        cookies=cookies,
        headers={"Origin": "http://127.0.0.1:5000"},
    )
    assert_error(foreign, 403, "forbidden")
    own = client.put(
        put_note,
        json={"version": 1, "body": "x"},
        cookies=cookies,
        headers={"Origin": "http://testserver"},
    )
    assert own.status_code == 204, own.text


def test_revoked_token_ends_its_sessions(client: TestClient, world: World) -> None:
    session = sign_in(client, world.read)
    client.cookies.clear()
    cookies = {SESSION_COOKIE: session}
    assert client.get("/api/studies", cookies=cookies).status_code == 200

    world.revoke(world.read_id)
    assert_error(client.get("/api/studies", headers=bearer(world.read)), 401, "unauthorized")
    # At the very next request: the session's token is verified on each one.
    assert_error(client.get("/api/studies", cookies=cookies), 401, "unauthorized")
    # The session is gone for good, not only until the next check.
    assert client.get("/dashboard", headers=HTML, cookies=cookies).status_code == 303


def test_a_session_outlives_its_process_and_works_on_another_replica(world: World) -> None:
    """Sessions are rows in the service database: a restarted or second gateway accepts them."""
    with TestClient(create_dashboard_app(world.settings), follow_redirects=False) as first:
        session = sign_in(first, world.read)
    with TestClient(create_dashboard_app(world.settings), follow_redirects=False) as second:
        listed = second.get("/api/studies", cookies={SESSION_COOKIE: session})
        assert listed.status_code == 200 and listed.json()["study_summaries"]
    database = Database(world.settings.database_url)
    with database.session_scope(read_only=True) as db_session:
        rows = list(db_session.scalars(select(DashboardSession)))
    database.dispose()
    # Only hashes are stored: neither the cookie's value nor the token.
    assert len(rows) == 1
    assert session not in (rows[0].session_hash, rows[0].token_hash)
    assert world.read not in (rows[0].session_hash, rows[0].token_hash)


def test_sessions_expire_and_logout_ends_them(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    session = sign_in(client, world.read)
    client.cookies.clear()
    clock.now += 11 * 3600
    assert client.get("/api/studies", cookies={SESSION_COOKIE: session}).status_code == 200
    clock.now += 3600
    assert client.get("/api/studies", cookies={SESSION_COOKIE: session}).status_code == 401

    session = sign_in(client, world.read)
    client.cookies.clear()
    out = client.get("/logout", cookies={SESSION_COOKIE: session})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert f'{SESSION_COOKIE}=""' in out.headers["set-cookie"]
    assert client.get("/api/studies", cookies={SESSION_COOKIE: session}).status_code == 401


def test_cookie_is_secure_over_https(world: World) -> None:
    app = create_dashboard_app(world.settings)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        response = client.post("/login", data={"token": world.read})
        assert response.status_code == 303
        assert "Secure" in response.headers["set-cookie"]


def test_open_without_admin_token(
    tmp_path: Path, pg_urls: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    world = make_world(tmp_path, pg_urls, admin=None)
    with caplog.at_level(logging.WARNING, logger="service.dashboard"):
        app = create_dashboard_app(world.settings)
    assert "HPO_ADMIN_TOKEN is unset" in caplog.text
    with TestClient(app, follow_redirects=False) as client:
        assert client.get("/api/studies").json()["study_summaries"]
        assert client.get("/dashboard", headers=HTML).status_code == 200
        assert client.get("/login").headers["location"] == "/dashboard"
        note = {"version": 1, "body": "open"}
        assert client.put(f"/api/studies/{world.study_id}/note", json=note).status_code == 204


def test_refuses_a_public_address_without_admin_token(tmp_path: Path) -> None:
    env = hpo_env({"HPO_DATA_DIR": str(tmp_path / "data")})
    done = subprocess.run(
        [*DASHBOARD_CLI, "--host", "0.0.0.0"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "refusing to serve the dashboard" in done.stderr


def test_dashboard_process(tmp_path: Path, world: World) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = hpo_env(
        {
            "HPO_DATA_DIR": str(tmp_path / "data"),
            "HPO_DATABASE_URL": world.settings.database_url,
            "HPO_OPTUNA_STORAGE": world.settings.optuna_storage,
            "HPO_ADMIN_TOKEN": ADMIN,
        }
    )
    log = tmp_path / "dashboard.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*DASHBOARD_CLI, "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http(f"{base}/login", proc=proc, timeout=60)
        with httpx.Client(base_url=base, timeout=10) as http:
            assert_error(http.get("/api/studies"), 401, "unauthorized")
            listed = http.get("/api/studies", headers=bearer(world.read))
            assert listed.status_code == 200
            assert listed.json()["study_summaries"][0]["study_name"] == STUDY
            signed_in = http.post("/login", data={"token": world.read})
            assert signed_in.status_code == 303
            page = http.get("/dashboard", headers=HTML)  # the client keeps the cookie
            assert page.status_code == 200 and "<html" in page.text.lower()
            # Requests are served concurrently (the WSGI app runs in a thread pool).
            paths = [f"/api/studies/{world.study_id}", "/static/bundle.js", "/api/meta"] * 4
            with ThreadPoolExecutor(len(paths)) as pool:
                statuses = list(
                    pool.map(lambda p: http.get(p, headers=bearer(world.read)).status_code, paths)
                )
            assert statuses == [200] * len(paths)
        assert raw_get(port, "/static/bundle.js", world.read).startswith(b"HTTP/1.1 200")
    finally:
        stop_group(proc)
    output = log.read_text(errors="replace")
    assert world.read not in output and ADMIN not in output
    assert "GET /api/studies" in output


def raw_get(port: int, path: str, token: str) -> bytes:
    """A GET with no Accept-Encoding at all (httpx always sends one); the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(request.encode())
        return sock.recv(64)


def test_failed_token_checks_back_off_per_client(world: World, clock: FakeClock) -> None:
    sessions = SessionStore(clock=clock)
    throttle = LoginThrottle(clock=clock)
    app = create_dashboard_app(world.settings, sessions=sessions, throttle=throttle)
    with TestClient(app, follow_redirects=False) as client:
        for attempt in range(5):
            assert client.post("/login", data={"token": f"hpo_guess-{attempt}"}).status_code == 401
        # The sixth within the backoff is refused unchecked, even with a good token.
        locked = client.post("/login", data={"token": world.read})
        assert locked.status_code == 429 and locked.headers["retry-after"] == "1"
        assert_error(
            client.get("/api/studies", headers=bearer(world.read)), 429, "too_many_requests"
        )
        clock.now += 1.0
        assert client.post("/login", data={"token": "hpo_guess-6"}).status_code == 401
        assert client.post("/login", data={"token": world.read}).status_code == 429
        clock.now += 2.0  # each further failure doubles the wait
        assert client.post("/login", data={"token": world.read}).status_code == 303
        # A success forgives the past: the next failure is free again.
        assert client.post("/login", data={"token": "hpo_guess-7"}).status_code == 401
        assert client.get("/api/studies", headers=bearer(world.read)).status_code == 200
    assert throttle.retry_after("another-client") == 0.0


def test_backoff_is_capped_and_bounded_in_memory() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(max_clients=3, clock=clock)
    for _ in range(40):
        throttle.failed("a")
    assert throttle.retry_after("a") == MAX_BACKOFF_S
    for client in ("b", "c", "d"):
        throttle.failed(client)
    assert throttle.retry_after("a") == 0.0  # the least recent was forgotten
    clock.now += MAX_BACKOFF_S + 1
    assert throttle.retry_after("b") == 0.0
