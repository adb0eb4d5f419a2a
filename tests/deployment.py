"""A real deployment for client tests: ``hpo serve`` and ``hpo worker`` on Postgres.

One per test module (the fixtures that use it are module-scoped): starting
the API and a worker costs seconds, the studies the tests submit are cheap
custom objectives.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.settings import Settings
from tests.conftest import PostgresServer, make_settings, process_env
from tests.procs import HPO, REPO, background, free_port, run_hpo, stop_group, wait_http

ADMIN = "client-admin-token-0123456789"


def quadratic_spec(name: str, n_trials: int = 4, **changes: Any) -> dict[str, Any]:
    """A study of ``tests.objectives.quadratic``: a fraction of a second per trial."""
    spec: dict[str, Any] = {
        "name": name,
        "task": {"name": "python:tests.objectives:quadratic", "config": {"steps": 3}},
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -10.0, "high": 10.0}},
        "sampler": {"name": "random", "seed": 7},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials, "max_concurrent_trials": 1},
    }
    spec.update(changes)
    return spec


@dataclass
class Deployment:
    settings: Settings
    env: dict[str, str]
    url: str
    token: str
    logs: Path
    worker: subprocess.Popen[bytes] | None = None

    def hpo(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the ``hpo`` CLI against this deployment."""
        return run_hpo(list(args), self.env, timeout=timeout)

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        with (self.logs / "worker.log").open("ab") as log:
            self.worker = subprocess.Popen(
                [*HPO, "worker", "--devices", "cpu", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            stop_group(self.worker)
            self.worker = None


@contextmanager
def deployment(
    pg_server: PostgresServer, root: Path, *, worker: bool = True
) -> Iterator[Deployment]:
    """The API (auth on, admin token) and, with ``worker``, one CPU worker slot."""
    urls = (
        pg_server.create(pg_server.template("service")),
        pg_server.create(pg_server.template("optuna")),
    )
    # A first trial may take seconds to start on a loaded machine (imports):
    # a short grace would reap its lease and retry it, which these tests are not about.
    settings = make_settings(root / "data", urls, heartbeat_grace_s=30.0)
    settings.ensure_data_dir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = process_env(settings, HPO_ADMIN_TOKEN=ADMIN, HPO_API_URL=url, HPO_API_TOKEN=ADMIN)
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        api = stack.enter_context(
            background(["serve", "--port", str(port), "--no-migrate"], env, logs / "serve.log")
        )
        wait_http(f"{url}/api/v1/readyz", proc=api)
        site = Deployment(settings, env, url, ADMIN, logs)
        stack.callback(site.stop_worker)
        if worker:
            site.start_worker()
        yield site
