"""Hostile input and leaks: NUL bytes, internal errors, CORS, symlinks, tokens in logs,
weak admin tokens. The probes against real processes are in ``test_probes.py``.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from uvicorn.logging import AccessFormatter

from service.app import create_app
from service.redact import RedactTokens
from storage.settings import Settings
from tests.conftest import make_settings, process_env
from tests.procs import background, free_port, run_hpo, wait_http

ADMIN = "security-admin-token-0123456789"
SPEC = {"name": "sec", "task": {"name": "mlp-classifier"}, "budget": {"n_trials": 2}}


def test_every_operation_needs_a_token(tmp_path: Path, db_urls: tuple[str, str]) -> None:
    """Derived from the OpenAPI schema, so a new endpoint cannot forget auth."""
    settings = make_settings(tmp_path / "data", db_urls, admin_token=ADMIN)
    open_paths = {"/api/v1/healthz", "/api/v1/readyz"}
    with TestClient(create_app(settings)) as client:
        paths = client.get("/openapi.json").json()["paths"]
        checked = 0
        for path, operations in paths.items():
            if path in open_paths:
                continue
            concrete = re.sub(r"\{number\}|\{token_id\}", "1", path).replace("{name}", "sec")
            for method in operations:
                response = client.request(method.upper(), concrete, json={})
                assert response.status_code == 401, (method, path, response.status_code)
                assert response.json()["code"] == "unauthorized"
                checked += 1
        assert checked >= 17


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_nul_characters_never_reach_the_database(client: TestClient) -> None:
    assert client.post("/api/v1/studies", json=SPEC).status_code == 201
    for path in ("/api/v1/studies/a%00b", "/api/v1/studies/a%00b/trials/0"):
        assert client.get(path).status_code == 404
    bad_spec = {
        **SPEC,
        "name": "nul",
        "task": {"name": "mlp-classifier", "config": {"dataset": {"path": "a\x00"}}},
    }
    refused = client.post("/api/v1/studies", json=bad_spec)
    assert refused.status_code == 422
    assert ["task", "config", "dataset", "path"] in [e["loc"] for e in refused.json()["errors"]]
    enqueue = client.post("/api/v1/studies/sec/trials", json={"params": {"optimizer": "a\x00"}})
    assert enqueue.status_code == 422
    assert client.post("/api/v1/tokens", json={"name": "x\x00"}).status_code == 422


def test_internal_errors_do_not_leak(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("password=hunter2 at /srv/secret/path")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/boom")
    assert response.status_code == 500
    assert response.json() == {"code": "internal", "message": "internal error", "errors": []}
    assert "hunter2" not in response.text


def test_cors_is_off_unless_configured(tmp_path: Path, db_urls: tuple[str, str]) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    closed = make_settings(tmp_path / "a", db_urls)
    with TestClient(create_app(closed)) as client:
        response = client.options("/api/v1/studies", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        got = client.get("/api/v1/studies", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in got.headers
    opened = make_settings(tmp_path / "b", db_urls, cors_origins="https://ui.example")
    with TestClient(create_app(opened)) as client:
        ok = client.options(
            "/api/v1/studies", headers={**preflight, "Origin": "https://ui.example"}
        )
        assert ok.headers["access-control-allow-origin"] == "https://ui.example"
        evil = client.options("/api/v1/studies", headers=preflight)
        assert evil.headers.get("access-control-allow-origin") != "https://evil.example"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_dataset_paths_are_confined(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    roots = settings.dataset_root_paths
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("text,label\na,1\n")
    link = roots[0] / "innocent.csv"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside / "secret.csv")
    inside = roots[0] / "fine.csv"
    inside.write_text("text,label\na,1\nb,0\n")
    for index, path in enumerate(
        [str(link), str(outside / "secret.csv"), str(roots[0] / ".." / "outside" / "secret.csv")]
    ):
        spec = {
            "name": f"p{index}",
            "task": {
                "name": "text-classification",
                "config": {"dataset": {"source": "csv", "path": path}},
            },
        }
        response = client.post("/api/v1/studies", json=spec)
        assert response.status_code == 422, path
        assert response.json()["errors"][0]["loc"] == ["task", "config", "dataset", "path"]
    allowed = {
        "name": "inside",
        "task": {
            "name": "text-classification",
            "config": {"dataset": {"source": "csv", "path": str(inside)}},
        },
    }
    assert client.post("/api/v1/studies", json=allowed).status_code == 201


def test_tokens_never_appear_in_logs(tmp_path: Path, db_urls: tuple[str, str]) -> None:
    settings = make_settings(tmp_path / "data", db_urls, admin_token=ADMIN)
    env = process_env(settings, HPO_ADMIN_TOKEN=ADMIN)
    made = run_hpo(["token", "create", "--name", "logged", "--scope", "write"], env)
    token = made.stdout.strip()
    port = free_port()
    log = tmp_path / "serve.log"
    with background(["serve", "--port", str(port)], env, log) as proc:
        base = f"http://127.0.0.1:{port}/api/v1"
        wait_http(f"{base}/healthz", proc=proc)
        for secret in (token, ADMIN, "hpo_wrong-token-value"):
            httpx.get(f"{base}/studies", headers={"Authorization": f"Bearer {secret}"})
        created = httpx.post(
            f"{base}/tokens", json={"name": "new"}, headers={"Authorization": f"Bearer {ADMIN}"}
        ).json()["token"]
        httpx.get(f"{base}/studies?token={token}")
    text = log.read_text()
    assert "GET /api/v1/studies" in text  # the requests were logged...
    for secret in (token, ADMIN, created, "wrong-token-value"):
        assert secret not in text  # ...their tokens were not


def test_redaction_keeps_uvicorn_access_records_formattable() -> None:
    """uvicorn's access formatter unpacks the record's five arguments itself."""
    secret = "hpo_" + "x" * 30
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/api/v1/studies?token={secret}&x=1", "1.1", 200),
        None,
    )
    assert RedactTokens().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert line == '127.0.0.1:5000 - "GET /api/v1/studies?token=[redacted]&x=1 HTTP/1.1" 200 OK'
    try:
        raise RuntimeError(f"failed with password={secret}")
    except RuntimeError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    RedactTokens().filter(failed)
    assert secret not in logging.Formatter().format(failed)


@pytest.mark.parametrize(
    "weak", ["admin", "short-token", "a" * 40, "ab" * 12, "correct horse battery staple"]
)
def test_weak_admin_tokens_are_refused(weak: str) -> None:
    with pytest.raises(ValidationError, match="admin_token"):
        Settings(admin_token=weak)


def test_a_strong_admin_token_is_accepted() -> None:
    assert Settings(admin_token=ADMIN).admin_token == ADMIN
