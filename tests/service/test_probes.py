"""Probes as an attacker would run them, against real ``hpo serve``, ``hpo dashboard``
and ``hpo worker`` processes with authentication on, so that the holes stay closed:
method spellings, non-standard methods, the dashboard's write allow-list, hub
names that are local paths, grid and nesting bombs, metrics cardinality,
imported callables as tasks, bodies before authentication, chunked bodies,
access-log redaction, revoked sessions, sign-in backoff and weak admin tokens.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service.metrics import METHODS
from storage.db import Database
from storage.optuna_store import open_optuna_storage
from storage.settings import Settings
from storage.tokens import Scope, create_token, revoke_token
from tests.conftest import PostgresServer, make_settings, process_env
from tests.procs import background, free_port, run_hpo, wait_http

ADMIN = "probe-admin-token-5f1c9a"
LIMIT = 100_000  # HPO_MAX_REQUEST_BYTES of these servers
DATASET = ("task", "config", "dataset", "name")


@dataclass
class Site:
    """A served API and dashboard on fresh databases, with tokens of each scope."""

    settings: Settings
    env: dict[str, str]
    api: str
    dashboard: str
    read: str
    write: str
    serve_pid: int
    serve_log: Path
    optuna_study_id: int

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def create_token(self, name: str, scope: Scope) -> tuple[int, str]:
        database = Database(self.settings.database_url)
        with database.session_scope() as session:
            row, token = create_token(session, name, scope, "probe")
            session.flush()
            token_id = row.id
        database.dispose()
        return token_id, token

    def revoke(self, token_id: int) -> None:
        database = Database(self.settings.database_url)
        with database.session_scope() as session:
            revoke_token(session, token_id, "probe")
        database.dispose()

    def submit(self, spec: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{self.api}/studies", json=spec, headers=self.headers(self.write), timeout=30
        )


@pytest.fixture(scope="module")
def site(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("probes")
    urls = (
        pg_server.create(pg_server.template("service")),
        pg_server.create(pg_server.template("optuna")),
    )
    settings = make_settings(root / "data", urls, admin_token=ADMIN)
    env = process_env(
        settings,
        HPO_ADMIN_TOKEN=ADMIN,
        HPO_MAX_REQUEST_BYTES=str(LIMIT),
        HPO_ALLOWED_TASK_MODULES="tests,probe_tasks",
    )
    api_port, dashboard_port = free_port(), free_port()
    with ExitStack() as stack:
        serve_log = root / "serve.log"
        serve = stack.enter_context(
            background(["serve", "--port", str(api_port), "--no-migrate"], env, serve_log)
        )
        dashboard = stack.enter_context(
            background(["dashboard", "--port", str(dashboard_port)], env, root / "dashboard.log")
        )
        api = f"http://127.0.0.1:{api_port}/api/v1"
        wait_http(f"{api}/healthz", proc=serve)
        wait_http(f"http://127.0.0.1:{dashboard_port}/login", proc=dashboard)
        site = Site(
            settings,
            env,
            api,
            f"http://127.0.0.1:{dashboard_port}",
            "",
            "",
            serve.pid,
            serve_log,
            0,
        )
        site.read = site.create_token("reader", Scope.READ)[1]
        site.write = site.create_token("writer", Scope.WRITE)[1]
        made = site.submit(
            {"name": "probe", "task": {"name": "mlp-classifier"}, "budget": {"n_trials": 2}}
        )
        assert made.status_code == 201, made.text
        storage = open_optuna_storage(settings.optuna_storage)
        site.optuna_study_id = storage.get_study_id_from_name("probe")
        storage.engine.dispose()
        yield site


def raw_request(
    base: str, method: str, path: str, token: str | None = None, body: bytes = b""
) -> int:
    """Send exactly ``method`` (HTTP clients upper-case it); return the status."""
    host, port = base.removeprefix("http://").split("/")[0].split(":")
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    if body:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def assert_refused(response: httpx.Response, loc: tuple[str | int, ...]) -> None:
    assert response.status_code == 422, response.text
    assert list(loc) in [e["loc"] for e in response.json()["errors"]], response.text


# --- the dashboard gateway ------------------------------------------------------------


def test_dashboard_writes_are_allow_listed_whatever_the_method_spelling(site: Site) -> None:
    sid = site.optuna_study_id
    note = json.dumps({"version": 1, "body": "a note"}).encode()
    refused = [
        ("delete", f"/api/studies/{sid}", b""),
        ("Delete", f"/api/studies/{sid}/", b""),
        ("DELETE", f"/api/studies/{sid}", b""),
        ("post", "/api/studies", b'{"study_name": "sneaky", "directions": ["minimize"]}'),
        ("POST", f"/api/studies/{sid}/rename", b'{"study_name": "renamed"}'),
        ("post", f"/api/studies/{sid}/rename", b'{"study_name": "renamed"}'),
        ("POST", "/api/trials/1/tell", b'{"state": "Fail"}'),
        ("POST", "/api/trials/1/user-attrs", b'{"user_attrs": {"x": 1}}'),
        ("POST", "/incompatible-rdb-schema", b""),
        ("PATCH", f"/api/studies/{sid}/note", note),
        ("PUT", f"/api/studies/{sid}/note/", note),
    ]
    for method, path, body in refused:
        assert raw_request(site.dashboard, method, path, site.write, body) == 403, (method, path)
        assert raw_request(site.dashboard, method, path, ADMIN, body) == 403, (method, path)
    for method in ("FOO", "DELETEX", "M-SEARCH", "TRACE", "PROPFIND"):
        assert raw_request(site.dashboard, method, "/api/studies", site.write) == 405, method
    # Spelling is normalised, not refused: a lower-case read is served.
    assert raw_request(site.dashboard, "get", "/api/studies", site.read) == 200
    assert raw_request(site.dashboard, "put", f"/api/studies/{sid}/note", site.write, note) == 204
    assert raw_request(site.dashboard, "put", f"/api/studies/{sid}/note", site.read, note) == 403

    # The service's study and its Optuna study are intact.
    study = httpx.get(f"{site.api}/studies/probe", headers=site.headers(site.read))
    assert study.status_code == 200 and study.json()["counts"]["FAIL"] == 0
    storage = open_optuna_storage(site.settings.optuna_storage)
    assert storage.get_study_id_from_name("probe") == sid
    assert [s.study_name for s in storage.get_all_studies()] == ["probe"]
    storage.engine.dispose()


def test_a_revoked_token_ends_its_dashboard_session_at_once(site: Site) -> None:
    token_id, token = site.create_token("short-lived", Scope.READ)
    with httpx.Client(base_url=site.dashboard, timeout=10) as browser:
        assert browser.post("/login", data={"token": token}).status_code == 303
        assert browser.get("/api/studies").status_code == 200  # by the session cookie
        site.revoke(token_id)
        assert browser.get("/api/studies").status_code == 401


def test_sign_in_backs_off_after_failed_tokens(site: Site, tmp_path: Path) -> None:
    # Its own dashboard: the backoff holds for every request from this address.
    port = free_port()
    with background(["dashboard", "--port", str(port)], site.env, tmp_path / "d.log") as proc:
        wait_http(f"http://127.0.0.1:{port}/login", proc=proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            statuses = [
                client.post("/login", data={"token": f"hpo_guess-{i}"}).status_code
                for i in range(6)
            ]
            assert statuses == [401] * 5 + [429]
            locked = client.post("/login", data={"token": site.read})
            assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
            by_header = client.get("/api/studies", headers=site.headers("hpo_guess-header"))
            assert by_header.status_code == 429
            assert by_header.json()["code"] == "too_many_requests"


# --- the API's own surface -------------------------------------------------------------


def test_metrics_labels_come_from_fixed_sets(site: Site) -> None:
    def scrape() -> str:
        answer = httpx.get(f"{site.api}/metrics", headers=site.headers(site.read))
        assert answer.status_code == 200
        return answer.text

    scrape()
    before = scrape()
    for i in range(300):
        assert raw_request(site.api, f"PROBE{i}", "/api/v1/studies") == 405
    for method in ("get", "Get", "delete", "post"):
        assert raw_request(site.api, method, "/api/v1/studies") < 500
    assert raw_request(site.api, "GET", f"/api/v1/studies/no-such-{time.time_ns()}") == 401
    after = scrape()
    assert "PROBE" not in after
    assert len(after) - len(before) < 5_000
    for labels in re.findall(r"^hpo_http_requests_total\{(.*)\}", after, re.MULTILINE):
        values = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        assert values["method"] in METHODS | {"other"}, labels
        assert re.fullmatch(r"[1-5]xx|other", values["status"]), labels
        assert values["route"].startswith(("/api/v1/", "/docs", "/openapi", "/redoc")) or (
            values["route"] == "unmatched"
        ), labels


def test_bodies_are_authenticated_before_they_are_parsed(site: Site) -> None:
    url = f"{site.api}/studies"
    broken = {"content": b'{"name": ', "headers": {"Content-Type": "application/json"}}
    anonymous = httpx.post(url, **broken)  # type: ignore[arg-type]
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    read = httpx.post(url, content=b'{"name": ', headers=site.headers(site.read))
    assert read.status_code == 403
    write = httpx.post(
        url,
        content=b'{"name": ',
        headers={**site.headers(site.write), "Content-Type": "application/json"},
    )
    assert write.status_code == 422


def test_chunked_bodies_over_the_limit_answer_413(site: Site) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(LIMIT // 1000 + 5):
            yield b" " * 1000

    for url, method, token in (
        (f"{site.api}/studies", "POST", site.write),
        (f"{site.dashboard}/api/studies/{site.optuna_study_id}/note", "PUT", site.write),
    ):
        response = httpx.request(
            method, url, content=chunks(), headers=site.headers(token), timeout=30
        )
        assert response.status_code == 413, (url, response.text)
        assert response.json()["code"] == "payload_too_large"


def test_access_log_lines_survive_token_redaction(site: Site) -> None:
    secret = "hpo_" + "s3cr3t" * 5
    answer = httpx.get(f"{site.api}/studies?token={secret}", headers=site.headers(site.read))
    assert answer.status_code == 200
    deadline = time.monotonic() + 10
    log = ""
    while time.monotonic() < deadline and "token=[redacted]" not in log:
        time.sleep(0.2)
        log = site.serve_log.read_text(errors="replace")
    assert 'GET /api/v1/studies?token=[redacted] HTTP/1.1" 200' in log
    assert "Logging error" not in log and secret not in log


# --- specs that reach too far ----------------------------------------------------------


def test_hub_dataset_names_cannot_name_local_files(site: Site) -> None:
    def hub(index: int, name: str) -> dict[str, Any]:
        return {
            "name": f"hub-{index}",
            "task": {
                "name": "text-classification",
                "config": {"dataset": {"source": "huggingface", "name": name}},
            },
        }

    local = [
        str(site.settings.data_dir),
        "/etc",
        "../../etc",
        "./tests",
        "tests",  # a folder in the API's working directory
        "~root",
        "csv",
        "text",
        "JSON",
        "a/b/c",
        "org/name\n",
    ]
    for index, name in enumerate(local):
        assert_refused(site.submit(hub(index, name)), DATASET)
    accepted = site.submit(hub(99, "stanfordnlp/sst2"))
    assert accepted.status_code == 201, accepted.text
    gone = httpx.delete(f"{site.api}/studies/hub-99", headers=site.headers(site.write))
    assert gone.status_code == 204


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]


def test_no_single_spec_exhausts_the_api(site: Site) -> None:
    custom = {
        "task": {"name": "python:tests.objectives:quadratic"},
        "objective": {"metric": "loss", "direction": "minimize"},
    }
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(900):
        cursor["a"] = {}
        cursor = cursor["a"]
    grids: list[tuple[str, dict[str, Any], tuple[str | int, ...]]] = [
        # 5 million points: the old check built them all before counting.
        ("g1", {"x": {"type": "float", "low": 0.0, "high": 1.0, "step": 2e-7}}, ("search_space",)),
        ("g2", {"x": {"type": "float", "low": 0.0, "high": 0.5, "step": 1e-12}}, ("search_space",)),
        ("g3", {"x": {"type": "int", "low": 0, "high": 2**53}}, ("search_space",)),
        (
            "g4",
            {f"p{i}": {"type": "categorical", "choices": list(range(100))} for i in range(4)},
            ("search_space",),
        ),
    ]
    before = _rss_kb(site.serve_pid)
    for name, space, loc in grids:
        started = time.monotonic()
        spec = {"name": name, **custom, "search_space": space, "sampler": {"name": "grid"}}
        assert_refused(site.submit(spec), loc)
        assert time.monotonic() - started < 3, name
    nested = site.submit({"name": "deep", **custom, "task": {**custom["task"], "config": deep}})
    assert nested.status_code == 422
    assert all(len(e["loc"]) <= 40 for e in nested.json()["errors"])
    huge = "1" + "0" * 400
    for body in (
        f'{{"name": "big", "task": {{"name": "python:tests.objectives:quadratic"}}, '
        f'"objective": {{"metric": "loss", "direction": "minimize"}}, '
        f'"search_space": {{"x": {{"type": "int", "low": -{huge}, "high": {huge}}}}}}}',
        '{"name": "nan", "task": {"name": "python:tests.objectives:quadratic", '
        '"config": {"x": NaN}}, "objective": {"metric": "loss", "direction": "minimize"}}',
        "[" * 50_000 + "]" * 50_000,
    ):
        answer = httpx.post(
            f"{site.api}/studies",
            content=body.encode(),
            headers={**site.headers(site.write), "Content-Type": "application/json"},
        )
        assert answer.status_code in (400, 422), answer.text
    assert _rss_kb(site.serve_pid) - before < 100_000  # KiB


def test_python_task_names_are_anchored_at_the_end(site: Site) -> None:
    spec = {
        "name": "newline",
        "task": {"name": "python:tests.objectives:quadratic\n"},
        "objective": {"metric": "loss", "direction": "minimize"},
    }
    assert_refused(site.submit(spec), ("task", "name"))


# --- a study whose Optuna study vanished -------------------------------------------------


def test_a_study_whose_optuna_study_vanished_never_answers_500(site: Site) -> None:
    for name in ("vanished", "renamed"):
        made = site.submit({"name": name, "task": {"name": "mlp-classifier"}})
        assert made.status_code == 201, made.text
    storage = open_optuna_storage(site.settings.optuna_storage)
    storage.delete_study(storage.get_study_id_from_name("vanished"))
    renamed_id = storage.get_study_id_from_name("renamed")
    with storage.engine.begin() as conn:
        conn.execute(
            text("UPDATE studies SET study_name = 'elsewhere' WHERE study_id = :sid"),
            {"sid": renamed_id},
        )
    read, write = site.headers(site.read), site.headers(site.write)
    base = f"{site.api}/studies/vanished"

    study = httpx.get(base, headers=read)
    assert study.status_code == 200, study.text
    assert set(study.json()["counts"].values()) == {0} and study.json()["best"] is None
    page = httpx.get(f"{base}/trials", headers=read)
    assert page.status_code == 200 and page.json()["items"] == []
    assert httpx.get(f"{base}/trials/0", headers=read).status_code == 404
    best = httpx.get(f"{base}/best", headers=read)
    assert best.status_code == 404 and "no longer exists" in best.json()["message"]
    assert httpx.get(f"{base}/importance", headers=read).status_code in (404, 409)
    enqueue = httpx.post(f"{base}/trials", json={"params": {"dropout": 0.1}}, headers=write)
    assert enqueue.status_code == 409 and "no longer exists" in enqueue.json()["message"]
    assert httpx.delete(base, headers=write).status_code == 204

    # Renamed behind the service: still found by id, and deleted by id.
    renamed = f"{site.api}/studies/renamed"
    assert httpx.get(renamed, headers=read).status_code == 200
    queued = httpx.post(f"{renamed}/trials", json={"params": {"dropout": 0.1}}, headers=write)
    assert queued.status_code == 202, queued.text
    assert len(storage.get_all_trials(renamed_id)) == 1
    assert httpx.delete(renamed, headers=write).status_code == 204
    assert "elsewhere" not in [s.study_name for s in storage.get_all_studies()]
    storage.engine.dispose()


# --- a worker -------------------------------------------------------------------------


def test_the_worker_refuses_local_hub_folders_and_imported_callables(
    site: Site, tmp_path: Path
) -> None:
    # The worker's working directory holds a folder the API's does not: only the
    # worker can tell that "secrets" is local. probe_tasks imports its task.
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "data.csv").write_text("text,label\nTOPSECRET-ROW,1\n")
    (tmp_path / "probe_tasks.py").write_text(
        "from tests.objectives import quadratic  # imported, not defined here\n"
    )
    hub = site.submit(
        {
            "name": "hub-folder",
            "task": {
                "name": "text-classification",
                "config": {"dataset": {"source": "huggingface", "name": "secrets"}},
            },
            "budget": {"n_trials": 1, "max_retries": 0},
        }
    )
    assert hub.status_code == 201, hub.text
    imported = site.submit(
        {
            "name": "imported-callable",
            "task": {"name": "python:probe_tasks:quadratic"},
            "objective": {"metric": "loss", "direction": "minimize"},
            "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "budget": {"n_trials": 1, "max_retries": 0},
        }
    )
    assert imported.status_code == 201, imported.text
    log = tmp_path / "worker.log"
    args = ["worker", "--devices", "cpu", "--exit-when-idle"]
    args += ["--study", "hub-folder", "--study", "imported-callable"]
    with background(args, site.env, log, cwd=tmp_path) as worker:
        assert worker.wait(timeout=240) == 0, log.read_text()[-3000:]
    read = site.headers(site.read)
    errors = {}
    for name in ("hub-folder", "imported-callable"):
        trials = httpx.get(f"{site.api}/studies/{name}/trials", headers=read).json()["items"]
        assert [t["state"] for t in trials] == ["FAIL"], (name, trials)
        errors[name] = trials[0]["error"] or ""
    assert "refused" in errors["hub-folder"] and "local folder" in errors["hub-folder"]
    assert "TOPSECRET" not in errors["hub-folder"] and "TOPSECRET" not in log.read_text()
    assert "defines no function 'quadratic'" in errors["imported-callable"]


# --- the command line -------------------------------------------------------------------


def test_cli_refuses_yaml_alias_bombs_and_weak_admin_tokens(site: Site, tmp_path: Path) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for index, name in enumerate("bcdefgh"):
        previous = "abcdefgh"[index]
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")
    env = {**site.env, "HPO_API_URL": site.api.removesuffix("/api/v1"), "HPO_API_TOKEN": site.write}
    started = time.monotonic()
    refused = run_hpo(["submit", str(bomb)], env, timeout=60)
    assert refused.returncode == 1 and "expands to more than" in refused.stderr
    assert time.monotonic() - started < 30
    weak = run_hpo(["serve", "--port", str(free_port())], {**site.env, "HPO_ADMIN_TOKEN": "admin"})
    assert weak.returncode == 1 and "HPO_ADMIN_TOKEN" in weak.stderr, weak.stderr
