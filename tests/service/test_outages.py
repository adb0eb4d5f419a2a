"""Outages: Postgres restarted mid-study, the API killed mid-study."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage.settings import Settings
from tests.conftest import Fleet, make_settings, process_env
from tests.procs import HPO, REPO, free_port, stop_group, wait_http
from tests.workers.faults import NOT_COUNTED

pytestmark = pytest.mark.slow
SPEC = {
    "task": {"name": "python:tests.objectives:quadratic", "config": {"steps": 4, "sleep_s": 0.25}},
    "objective": {"metric": "loss", "direction": "minimize"},
    "search_space": {"x": {"type": "float", "low": -5, "high": 5}},
    "pruner": {"name": "none"},
}


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(
        tmp_path / "data", pg_urls, allowed_task_modules="tests", heartbeat_grace_s=4.0
    )


class Api:
    """A real ``hpo serve`` process that can be killed and started again."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        self.env = process_env(settings)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*HPO, "serve", "--port", str(self.port), "--no-migrate"],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        wait_http(f"{self.url}/healthz", proc=self.proc)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def study(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.get(f"/studies/{name}").json()
        return body


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[Api]:
    server = Api(settings, tmp_path / "api.log")
    server.start()
    yield server
    if server.proc is not None:
        stop_group(server.proc)


def _submit(api: Api, name: str, n_trials: int) -> None:
    body = {**SPEC, "name": name, "budget": {"n_trials": n_trials, "max_concurrent_trials": 2}}
    response = httpx.post(f"{api.url}/studies", json=body, timeout=30)
    assert response.status_code == 201, response.text


def _wait(predicate: Any, timeout: float, fleet: Fleet, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{fleet.logs()[-5000:]}")


def _postgres(action: str, check: bool = True) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    stop_fast = ["-m", "fast"] if action == "stop" else []
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    subprocess.run([*command, *stop_fast], check=check, timeout=120)


@pytest.fixture
def postgres_control() -> Iterator[None]:
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("pg_ctlcluster is needed to restart PostgreSQL in this test")
        pytest.skip("no pg_ctlcluster to restart PostgreSQL")
    yield
    _postgres("start", check=False)  # whatever happened, leave the server running


@pytest.mark.exclusive
def test_postgres_restart_mid_study(api: Api, fleet: Fleet, postgres_control: None) -> None:
    _submit(api, "pgdown", 16)
    for _ in range(2):
        fleet.start("--exit-when-idle")
    _wait(lambda: api.study("pgdown")["budget"]["finished"] >= 3, 60, fleet, "three trials")
    _postgres("stop")
    try:
        down = api.get("/studies/pgdown")
        assert down.status_code == 503 and down.json()["code"] == "unavailable"
        assert "Traceback" not in down.text and "psycopg2" not in down.text
        assert api.get("/readyz").status_code == 503
        assert api.get("/healthz").status_code == 200
        time.sleep(6)  # longer than the heartbeat grace period
    finally:
        _postgres("start")
    _wait(lambda: api.get("/readyz").status_code == 200, 60, fleet, "readiness")
    _wait(lambda: api.study("pgdown")["status"] == "completed", 180, fleet, "completion")
    view = api.study("pgdown")
    assert view["budget"]["finished"] == 16 and view["budget"]["active"] == 0
    counted = [
        t
        for t in api.get("/studies/pgdown/trials?limit=1000").json()["items"]
        if t["state"] in ("COMPLETE", "PRUNED", "FAIL") and t["fail_reason"] not in NOT_COUNTED
    ]
    assert len(counted) == 16
    for proc in fleet.procs:
        assert proc.wait(timeout=60) == 0


def test_killed_api_does_not_stop_workers(api: Api, fleet: Fleet) -> None:
    _submit(api, "apidown", 14)
    fleet.start("--exit-when-idle")
    _wait(lambda: api.study("apidown")["budget"]["finished"] >= 2, 60, fleet, "two trials")
    assert api.proc is not None
    os.killpg(api.proc.pid, signal.SIGKILL)
    api.proc.wait()
    time.sleep(4)  # the worker keeps going without the API
    api.start()
    view = api.study("apidown")
    assert view["status"] in ("running", "completed") and view["budget"]["finished"] >= 4
    _wait(lambda: api.study("apidown")["status"] == "completed", 120, fleet, "completion")
    view = api.study("apidown")
    assert view["budget"]["finished"] == 14
    assert view["counts"]["COMPLETE"] == 14 and view["counts"]["RUNNING"] == 0
