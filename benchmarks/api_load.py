"""API latency under load: 50 concurrent clients against a study with 2,000 trials.

A real ``hpo serve`` process on Postgres (loopback), a study whose 2,000
finished trials are written straight into Optuna's storage, then for each
endpoint ``--seconds`` of 50 concurrent keep-alive clients presenting a stored
read token; prints throughput and latency percentiles as a Markdown table, and
the throughput of each endpoint as a fraction of ``GET /healthz`` measured in
the same run (on a shared machine the ratio is what compares across runs).
The endpoints take turns in ``--rounds`` rounds so that a change in the
machine's load falls on all of them alike.

By default each client sends its next request as soon as the last one is
answered (closed loop: the server is saturated, and latency is mostly
queueing). With ``--interval S`` each client polls once every S seconds, as
dashboards and scripts do: the latency a client sees when the offered load
fits the machine.

    python -m benchmarks.api_load --clients 50 --trials 2000 --seconds 20
    python -m benchmarks.api_load --clients 50 --trials 2000 --seconds 20 --interval 1
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
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import optuna

from benchmarks.pg import add_server_argument, create_study, migrated_databases
from storage.db import Database
from storage.tokens import Scope, create_token
from storage.validation import ValidationPolicy, validate_spec
from tests.procs import free_port, stop_group, wait_http

SCRATCH = Path(tempfile.gettempdir()) / "hpo-load"

REPO = Path(__file__).resolve().parent.parent
TOKEN = "load-benchmark-admin-token"
HEALTHZ = "GET /healthz"


def populate(service_url: str, optuna_url: str, n_trials: int) -> None:
    spec = validate_spec(
        {"name": "loaded", "task": {"name": "mlp-classifier"}, "budget": {"n_trials": n_trials}},
        ValidationPolicy(),
    )
    create_study(service_url, optuna_url, spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="loaded", storage=optuna_url)
    rng = random.Random(0)
    distributions = {
        "learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
        "hidden_size_1": optuna.distributions.IntDistribution(32, 256),
    }
    # Finished trials added whole (one transaction each), not asked and told step by step.
    for _ in range(n_trials):
        value = 10 ** rng.uniform(-4, -1)
        params = {"learning_rate": value, "hidden_size_1": rng.randint(32, 256)}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                value=value,
                intermediate_values={step: value * step for step in range(1, 11)},
            )
        )


def read_token(service_url: str) -> str:
    """A stored read-scope token: what a dashboard or client presents."""
    database = Database(service_url)
    try:
        with database.session_scope() as session:
            return create_token(session, "load", Scope.READ, "bench")[1]
    finally:
        database.dispose()


async def client_loop(
    client: httpx.AsyncClient,
    paths: list[str],
    deadline: float,
    latencies: list[float],
    errors: list[int],
    *,
    interval: float,
) -> None:
    # Polling clients start at random offsets within one interval, not in step.
    next_send = time.monotonic() + random.uniform(0, interval)
    while next_send < deadline:
        await asyncio.sleep(max(0.0, next_send - time.monotonic()))
        path = random.choice(paths)
        start = time.perf_counter()
        next_send = time.monotonic() + interval
        try:
            response = await client.get(path)
        except httpx.TransportError:
            errors.append(0)  # a dropped connection counts as an error, not a crash
            continue
        latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            errors.append(response.status_code)


@dataclass
class Samples:
    """What the clients saw of one endpoint, over every round."""

    latencies: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0


async def hammer(
    base: str, token: str, paths: list[str], clients: int, seconds: float, *, interval: float
) -> Samples:
    samples = Samples()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        await client.get(paths[0])  # warm up
        deadline = time.monotonic() + seconds
        started = time.monotonic()
        await asyncio.gather(
            *(
                client_loop(
                    client, paths, deadline, samples.latencies, samples.errors, interval=interval
                )
                for _ in range(clients)
            )
        )
        samples.elapsed_s = time.monotonic() - started
    return samples


def summarize(samples: list[Samples]) -> dict[str, float]:
    ordered = sorted(x for s in samples for x in s.latencies)
    errors = sum(len(s.errors) for s in samples)
    elapsed = sum(s.elapsed_s for s in samples)
    return {
        "requests": len(ordered),
        "rps": len(ordered) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "errors": errors,
    }


def run_scenarios(
    base: str, token: str, scenarios: dict[str, list[str]], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Every endpoint for ``args.seconds`` in all, taking turns over ``args.rounds`` rounds."""
    samples: dict[str, list[Samples]] = {name: [] for name in scenarios}
    for _ in range(args.rounds):
        for name, paths in scenarios.items():
            seconds = args.seconds / args.rounds
            found = asyncio.run(
                hammer(base, token, paths, args.clients, seconds, interval=args.interval)
            )
            samples[name].append(found)
    return {name: summarize(found) for name, found in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_server_argument(parser)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--api-workers", type=int, default=1, help="hpo serve --workers")
    parser.add_argument("--rounds", type=int, default=2, help="turns each endpoint takes")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.0,
        help="seconds between one client's requests (0: send again at once)",
    )
    args = parser.parse_args()
    with migrated_databases(args.server) as (service_url, optuna_url):
        populate(service_url, optuna_url, args.trials)
        token = read_token(service_url)
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
                HEALTHZ: ["/healthz"],
                "GET /studies/{name}": ["/studies/loaded"],
                "GET /studies/{name}/trials (page of 50)": pages,
            }
            rows = run_scenarios(base, token, scenarios, args)
        finally:
            stop_group(server)
    print_table(rows, args)


def print_table(rows: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(
        "| endpoint | API processes | clients | interval s | requests | req/s | ÷ healthz "
        "| p50 ms | p99 ms | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    health = rows[HEALTHZ]["rps"]
    for name, r in rows.items():
        print(
            f"| {name} | {args.api_workers} | {args.clients} | {args.interval:g} | "
            f"{r['requests']:.0f} | "
            f"{r['rps']:.0f} | {r['rps'] / health:.2f} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['errors']:.0f} |"
        )


if __name__ == "__main__":
    main()
