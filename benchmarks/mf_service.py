"""A real ``hpo serve`` and ``hpo worker`` on throwaway databases, driven over REST.

For the multi-fidelity benchmark: studies are created with ``POST /studies``,
run by worker slots that import ``python:benchmarks.*`` tasks, and read back
with ``GET /studies/{name}/trials``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.pg import migrated_databases

REPO = Path(__file__).resolve().parent.parent
HPO = [sys.executable, "-m", "service.cli.main"]
TERMINAL = ("completed", "cancelled", "failed")


class SettingRefused(Exception):
    """The service answered 422 to a study's spec (a pruner it does not know...)."""


@dataclass(frozen=True)
class Service:
    """The API's base URL and a client for it."""

    base: str
    client: httpx.Client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(urls: tuple[str, str], scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(
        HPO_DATABASE_URL=urls[0],
        HPO_OPTUNA_STORAGE=urls[1],
        HPO_MLFLOW_ENABLED="false",
        HPO_ALLOWED_TASK_MODULES="benchmarks",
        HPO_DATA_DIR=str(scratch),
        PYTHONPATH=str(REPO),
    )
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hpo serve exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def running_service(server_url: str, slots: int, scratch: Path) -> Iterator[Service]:
    """``hpo serve`` and one ``hpo worker`` process with ``slots`` CPU slots.

    Raises:
        RuntimeError, TimeoutError: the API did not come up.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    with migrated_databases(server_url) as urls:
        env, port = _environment(urls, scratch), _free_port()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            serve = [*HPO, "serve", "--port", str(port), "--no-migrate"]
            worker = [*HPO, "worker", "--devices", "cpu", "--per-device", str(slots)]
            for name, command in (("serve", serve), ("worker", worker)):
                log = (scratch / f"{name}.log").open("ab")
                procs.append(
                    subprocess.Popen(
                        command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                        start_new_session=True,
                    )
                )  # fmt: skip
            base = f"http://127.0.0.1:{port}/api/v1"
            _wait_healthy(f"{base}/healthz", procs[0])
            with httpx.Client(base_url=base, timeout=60) as client:
                yield Service(base, client)
        finally:
            for proc in reversed(procs):
                _stop(proc)


def _call(service: Service, method: str, path: str, deadline: float, **kw: Any) -> httpx.Response:
    """One request, retried while the service answers 5xx or cannot be reached.

    A Postgres restart makes the service answer 503 for a while; that is no
    result of the setting under test, so the benchmark waits it out.
    """
    while True:
        try:
            response = service.client.request(method, path, **kw)
            if response.status_code < 500:
                return response
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{method} {path}: no answer below 500 in time")
        time.sleep(2.0)


def run_study(
    service: Service, body: dict[str, Any], timeout: float = 1800
) -> list[dict[str, Any]]:
    """Create the study, wait until it ends, return its trials (``TrialOut`` dicts).

    Raises:
        SettingRefused: the service answered 422 (the detail is the message).
        TimeoutError: the study did not end within ``timeout`` seconds.
    """
    name, deadline = body["name"], time.monotonic() + timeout
    created = _call(service, "POST", "/studies", deadline, json=body)
    if created.status_code == 422:
        raise SettingRefused(created.text[:300])
    if created.status_code != 409:  # 409: a retried POST that had gone through
        created.raise_for_status()
    while True:
        status = _call(service, "GET", f"/studies/{name}", deadline).json()["status"]
        if status in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"study {name} still {status} after {timeout}s")
        time.sleep(1.0)
    trials: list[dict[str, Any]] = []
    while True:
        params = {"limit": 1000, "offset": len(trials)}
        page = _call(service, "GET", f"/studies/{name}/trials", deadline, params=params).json()
        trials += page["items"]
        if not page["items"] or len(trials) >= page["total"]:
            return trials


def trajectory(trials: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """``(training examples spent, best COMPLETE value so far)`` in order of completion.

    Only complete trials count for the best: they reached the full fidelity,
    where the value is the true function's. Pruned and paused trials count
    for the spending only.
    """
    finished = [t for t in trials if t["datetime_complete"] is not None]
    finished.sort(key=lambda t: t["datetime_complete"])
    spent, best, points = 0.0, float("inf"), []
    for trial in finished:
        spent += float(trial.get("train_examples") or 0)
        if trial["state"] == "COMPLETE" and trial["value"] is not None:
            best = min(best, float(trial["value"]))
        points.append((spent, best))
    return points
