"""Time to first trial: from ``POST /studies`` to its first trial RUNNING, idle workers waiting.

Postgres, a real ``hpo serve`` and ``hpo worker`` processes started beforehand
and left idle (so that they wait on LISTEN/NOTIFY); each round submits a study
and polls Optuna's storage every millisecond for a RUNNING trial.

    python -m benchmarks.first_trial --rounds 10 --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from benchmarks.pg import add_server_argument, migrated_databases
from storage.settings import normalize_database_url
from tests.procs import free_port, stop_group, wait_http

SCRATCH = Path(tempfile.gettempdir()) / "hpo-ttft"

REPO = Path(__file__).resolve().parent.parent


def spec(name: str) -> dict[str, object]:
    return {
        "name": name,
        "task": {"name": "python:benchmarks.objectives:null"},
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -1, "high": 1}},
        "budget": {"n_trials": 1},
    }


def first_running(engine: object, name: str, started: float, timeout: float = 30) -> float:
    query = text(
        "SELECT count(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
        "WHERE s.study_name = :n"
    )
    with engine.connect() as conn:  # type: ignore[attr-defined]
        while time.perf_counter() - started < timeout:
            if conn.execute(query, {"n": name}).scalar():
                return time.perf_counter() - started
            time.sleep(0.001)
    raise TimeoutError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_server_argument(parser)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with migrated_databases(args.server) as (service_url, optuna_url):
        port = free_port()
        # A long poll interval: only NOTIFY can make the first trial start quickly.
        env = dict(
            os.environ,
            HPO_DATABASE_URL=service_url,
            HPO_OPTUNA_STORAGE=optuna_url,
            HPO_ALLOWED_TASK_MODULES="benchmarks",
            HPO_MLFLOW_ENABLED="false",
            HPO_POLL_INTERVAL_S="30",
            HPO_DATA_DIR=str(SCRATCH),
            PYTHONPATH=str(REPO),
        )
        hpo = [sys.executable, "-m", "service.cli.main"]
        procs = [
            subprocess.Popen(
                [*hpo, "serve", "--port", str(port), "--no-migrate"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            ),
            subprocess.Popen(
                [*hpo, "worker", "--devices", "cpu", "--per-device", str(args.workers)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            ),
        ]
        engine = create_engine(normalize_database_url(optuna_url))
        try:
            base = f"http://127.0.0.1:{port}/api/v1"
            wait_http(f"{base}/healthz", proc=procs[0])
            time.sleep(8)  # the workers are up and waiting
            times = []
            for index in range(args.rounds):
                started = time.perf_counter()
                response = httpx.post(f"{base}/studies", json=spec(f"first-{index}"))
                assert response.status_code == 201, response.text
                times.append(first_running(engine, f"first-{index}", started))
                time.sleep(1.0)
        finally:
            for proc in procs:
                stop_group(proc)
            engine.dispose()
    ms = sorted(1000 * t for t in times)
    print("| rounds | workers | p50 ms | max ms | min ms |")
    print("|---|---|---|---|---|")
    print(
        f"| {len(ms)} | {args.workers} | {statistics.median(ms):.0f} | {ms[-1]:.0f} | {ms[0]:.0f} |"
    )


if __name__ == "__main__":
    main()
