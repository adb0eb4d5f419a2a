"""Many worker slots against one Postgres, straight and through PgBouncer.

One ``hpo worker --devices cpu --per-device SLOTS`` (all slots idle first),
then a study of ``--trials`` trials of the null objective with
``max_concurrent_trials`` below the slot count, so that the limit binds.
Reported per mode: trials/s, peak server connections (``pg_stat_activity``,
LISTEN ones apart), claim latency p50/p99 (a lease's claim started → its
Optuna trial created, from the stored times), trials finished, and the most
trials seen running at once.

    python -m benchmarks.scale --slots 32 --trials 1000 --max-concurrent 24
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.pg import add_server_argument, create_study, migrated_databases
from storage.pools import worker_connections
from storage.settings import normalize_database_url
from storage.spec import StudySpec
from storage.validation import ValidationPolicy, validate_spec
from tests.pgbouncer import PROBE_APPLICATION, PgBouncer, ServerConnections
from tests.procs import stop_group

SCRATCH = Path(tempfile.gettempdir()) / "hpo-bench-scale"
REPO = Path(__file__).resolve().parent.parent
STUDY = "scale"
HPO_WORKER = [sys.executable, "-m", "service.cli.main", "worker", "--devices", "cpu"]


@dataclass
class Result:
    mode: str
    slots: int
    trials: int
    finished: int
    wall_s: float
    trials_per_s: float
    peak_connections: int
    peak_listen: int
    bound: int
    claim_p50_ms: float
    claim_p99_ms: float
    peak_running: int
    max_concurrent: int
    transactions_per_trial: float


def as_probe(url: str) -> str:
    """``url`` under the probes' application name (not counted as a worker connection)."""
    named = make_url(url).update_query_dict({"application_name": PROBE_APPLICATION})
    return named.render_as_string(hide_password=False)


class RunningPeak(threading.Thread):
    """The most trials running at once: leases held and Optuna RUNNING trials."""

    def __init__(self, service_url: str, optuna_url: str) -> None:
        super().__init__(daemon=True)
        self.service = create_engine(as_probe(service_url))
        self.optuna = create_engine(as_probe(optuna_url))
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        with self.service.connect() as service, self.optuna.connect() as optuna_conn:
            while not self.done.is_set():
                active = service.execute(text("SELECT max(n_active) FROM hpo_studies")).scalar()
                running = optuna_conn.execute(
                    text("SELECT count(*) FROM trials WHERE state = 'RUNNING'")
                ).scalar()
                self.peak = max(self.peak, int(active or 0), int(running or 0))
                service.rollback()
                optuna_conn.rollback()
                time.sleep(0.05)
        self.service.dispose()
        self.optuna.dispose()


def spec(n_trials: int, max_concurrent: int) -> StudySpec:
    return validate_spec(
        {
            "name": STUDY,
            "task": {"name": "python:benchmarks.objectives:null"},
            "objective": {"metric": "loss", "direction": "minimize"},
            "search_space": {"x": {"type": "float", "low": -10, "high": 10}},
            # Random: the sampler's own cost would hide the dispatch's.
            "sampler": {"name": "random", "seed": 7},
            "pruner": {"name": "none"},
            "budget": {
                "n_trials": n_trials,
                "max_concurrent_trials": max_concurrent,
                "max_retries": 0,
            },
        },
        ValidationPolicy(allowed_task_modules=["benchmarks"]),
    )


def scalar(engine: Engine, query: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(query)).scalar() or 0)


def wait_until(engine: Engine, query: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hpo worker exited with {proc.returncode}")
        if scalar(engine, query):
            return
        time.sleep(0.2)
    raise TimeoutError(f"not within {timeout}s: {query}")


def start_worker(slots: int, urls: tuple[str, str], listen_url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(
        HPO_DATABASE_URL=urls[0],
        HPO_OPTUNA_STORAGE=urls[1],
        HPO_LISTEN_DATABASE_URL=listen_url,
        HPO_ALLOWED_TASK_MODULES="benchmarks",
        HPO_DATA_DIR=str(SCRATCH),
        HPO_MLFLOW_ENABLED="false",
        PYTHONPATH=str(REPO),
    )
    log = (SCRATCH / "worker.log").open("ab")
    return subprocess.Popen(
        [*HPO_WORKER, "--per-device", str(slots)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )


def claim_latencies_ms(service_url: str, optuna_url: str) -> list[float]:
    """Per lease: its claim started (claimed_at) → its Optuna trial created (datetime_start)."""
    service = create_engine(as_probe(service_url))
    optuna_engine = create_engine(as_probe(optuna_url))
    with service.connect() as conn:
        claimed: dict[int, datetime] = dict(
            conn.execute(
                text(
                    "SELECT optuna_trial_id, claimed_at FROM hpo_leases "
                    "WHERE optuna_trial_id IS NOT NULL"
                )
            ).all()
        )
    with optuna_engine.connect() as conn:
        started: dict[int, datetime] = dict(
            conn.execute(text("SELECT trial_id, datetime_start FROM trials")).all()
        )
    service.dispose()
    optuna_engine.dispose()
    latencies = []
    for trial_id, claimed_at in claimed.items():
        start = started.get(trial_id)
        if start is not None:
            start = start.replace(tzinfo=claimed_at.tzinfo) if start.tzinfo is None else start
            latencies.append((start - claimed_at).total_seconds() * 1000)
    return sorted(latencies)


def commits(server: str, names: list[str]) -> int:
    """Transactions committed so far in ``names`` (pg_stat_database), all clients."""
    engine = create_engine(as_probe(normalize_database_url(server)))
    try:
        with engine.connect() as conn:
            query = "SELECT sum(xact_commit) FROM pg_stat_database WHERE datname = ANY(:n)"
            return int(conn.execute(text(query), {"n": names}).scalar() or 0)
    finally:
        engine.dispose()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_mode(
    mode: str, server: str, slots: int, n_trials: int, *, max_concurrent: int, pool_size: int
) -> Result:
    with migrated_databases(server) as direct:
        bouncer = PgBouncer(server, pool_size=pool_size) if mode == "pgbouncer" else None
        if bouncer is not None:
            bouncer.start()
        worker_urls = direct if bouncer is None else tuple(bouncer.url_for(u) for u in direct)
        names = [make_url(u).database or "" for u in direct]
        activity = ServerConnections(server, names, interval_s=0.1)
        probe = create_engine(as_probe(direct[0]))
        peak = RunningPeak(*direct)
        proc = start_worker(slots, (worker_urls[0], worker_urls[1]), direct[0])
        try:
            activity.start()
            wait_until(
                probe,
                f"SELECT count(*) = {slots} FROM hpo_workers WHERE status = 'idle'",
                300,
                proc,
            )
            peak.start()
            committed = commits(server, names)
            create_study(as_probe(direct[0]), as_probe(direct[1]), spec(n_trials, max_concurrent))
            started = time.monotonic()
            wait_until(
                probe, "SELECT count(*) FROM hpo_studies WHERE status = 'completed'", 1800, proc
            )
            wall = time.monotonic() - started
            # Statistics reach pg_stat_database when a backend goes idle: let them settle.
            time.sleep(1.0)
            committed = commits(server, names) - committed
        finally:
            peak.done.set()
            stop_group(proc, timeout=120)
            activity.stop()
            probe.dispose()
            if bouncer is not None:
                bouncer.stop()
        peak.join()
        finished = scalar(create_engine(as_probe(direct[0])), "SELECT n_finished FROM hpo_studies")
        latencies = claim_latencies_ms(*direct)
    bound = worker_connections(slots, 1) if bouncer is None else 2 * pool_size + 1
    return Result(
        mode=mode,
        slots=slots,
        trials=n_trials,
        finished=finished,
        wall_s=wall,
        trials_per_s=n_trials / wall,
        peak_connections=activity.peak,
        peak_listen=activity.peak_listen,
        bound=bound,
        claim_p50_ms=percentile(latencies, 50),
        claim_p99_ms=percentile(latencies, 99),
        peak_running=peak.peak,
        max_concurrent=max_concurrent,
        transactions_per_trial=committed / n_trials,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_server_argument(parser)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--max-concurrent", type=int, default=24)
    parser.add_argument("--pool-size", type=int, default=10, help="PgBouncer's default_pool_size")
    parser.add_argument("--modes", nargs="+", default=["direct", "pgbouncer"])
    args = parser.parse_args()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    results = [
        run_mode(
            mode,
            args.server,
            args.slots,
            args.trials,
            max_concurrent=args.max_concurrent,
            pool_size=args.pool_size,
        )
        for mode in args.modes
    ]
    print(
        "| mode | slots | trials finished | trials/s | peak server connections (LISTEN) "
        "| documented bound | claim p50 / p99 ms | most running (limit) | transactions/trial |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.mode} | {r.slots} | {r.finished} / {r.trials} | {r.trials_per_s:.1f} "
            f"| {r.peak_connections} ({r.peak_listen}) | {r.bound} "
            f"| {r.claim_p50_ms:.0f} / {r.claim_p99_ms:.0f} "
            f"| {r.peak_running} ({r.max_concurrent}) | {r.transactions_per_trial:.1f} |"
        )


if __name__ == "__main__":
    main()
