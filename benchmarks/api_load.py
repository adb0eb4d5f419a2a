"""API latency under load: 50 concurrent clients against a study with 2,000 trials.

A real ``hpo serve`` process on Postgres (loopback), a study whose 2,000
finished trials are written straight into Optuna's storage, then for each
endpoint ``--seconds`` of 50 concurrent keep-alive clients; prints throughput
and latency percentiles as a Markdown table.

    python -m benchmarks.api_load --clients 50 --trials 2000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import optuna

from benchmarks.pg import add_server_argument, create_study, migrated_databases
from storage.validation import ValidationPolicy, validate_spec
from tests.procs import free_port, stop_group, wait_http

SCRATCH = Path(tempfile.gettempdir()) / "hpo-load"

REPO = Path(__file__).resolve().parent.parent
TOKEN = "load-benchmark-admin-token"


def populate(service_url: str, optuna_url: str, n_trials: int) -> None:
    spec = validate_spec(
        {"name": "loaded", "task": {"name": "mlp-classifier"}, "budget": {"n_trials": n_trials}},
        ValidationPolicy(),
    )
    create_study(service_url, optuna_url, spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name="loaded", storage=optuna_url, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    for _ in range(n_trials):
        trial = study.ask()
        value = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        trial.suggest_int("hidden_size_1", 32, 256)
        for step in range(1, 11):
            trial.report(value * step, step)
        study.tell(trial, value)


async def client_loop(
    client: httpx.AsyncClient,
    paths: list[str],
    deadline: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    while time.monotonic() < deadline:
        path = random.choice(paths)
        start = time.perf_counter()
        try:
            response = await client.get(path)
        except httpx.TransportError:
            errors.append(0)  # a dropped connection counts as an error, not a crash
            continue
        latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            errors.append(response.status_code)


async def hammer(base: str, paths: list[str], clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[int] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        await client.get(paths[0])  # warm up
        deadline = time.monotonic() + seconds
        started = time.monotonic()
        await asyncio.gather(
            *(client_loop(client, paths, deadline, latencies, errors) for _ in range(clients))
        )
        elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "rps": len(ordered) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_server_argument(parser)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--api-workers", type=int, default=1, help="hpo serve --workers")
    args = parser.parse_args()
    with migrated_databases(args.server) as (service_url, optuna_url):
        populate(service_url, optuna_url, args.trials)
        port = free_port()
        log = SCRATCH / "serve.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            HPO_DATABASE_URL=service_url,
            HPO_OPTUNA_STORAGE=optuna_url,
            HPO_ADMIN_TOKEN=TOKEN,
            HPO_DATA_DIR=str(SCRATCH),
            PYTHONPATH=str(REPO),
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.cli.main",
                "serve",
                "--port",
                str(port),
                "--no-migrate",
                "--workers",
                str(args.api_workers),
            ],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}/api/v1"
            wait_http(f"{base}/healthz", proc=server)
            pages = [
                f"/studies/loaded/trials?limit=50&offset={o}" for o in range(0, args.trials, 50)
            ]
            scenarios = {
                "GET /studies/{name}": ["/studies/loaded"],
                "GET /studies/{name}/trials (page of 50)": pages,
            }
            rows = {
                name: asyncio.run(hammer(base, paths, args.clients, args.seconds))
                for name, paths in scenarios.items()
            }
        finally:
            stop_group(server)
    print("| endpoint | API processes | clients | requests | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {args.api_workers} | {args.clients} | {r['requests']:.0f} | "
            f"{r['rps']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']:.0f} |"
        )


if __name__ == "__main__":
    main()
