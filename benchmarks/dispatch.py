"""Trials per second of a null objective: the service's workers vs bare Optuna.

Both run on the same Postgres server with the same TPE sampler (seeded), over
one study of ``--trials`` trials; the rate is measured over trials 0-200 and
over the last 200, from the trials' completion times.

    python -m benchmarks.dispatch --trials 2000 --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna

from benchmarks.pg import add_server_argument, create_study, migrated_databases
from storage.validation import ValidationPolicy, validate_spec

SCRATCH = Path(tempfile.gettempdir()) / "hpo-bench"

REPO = Path(__file__).resolve().parent.parent
SEED = 7
WINDOW = 200


def _spec(name: str, n_trials: int, workers: int) -> dict[str, object]:
    return {
        "name": name,
        "task": {"name": "python:benchmarks.objectives:null"},
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -10, "high": 10}},
        "sampler": {"name": "tpe", "seed": SEED},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials, "max_concurrent_trials": workers, "max_retries": 0},
    }


def rates(storage_url: str, name: str) -> tuple[float, float, int]:
    """Trials/s over the first and the last ``WINDOW`` completed trials, and the count."""
    trials = optuna.load_study(study_name=name, storage=storage_url).get_trials(deepcopy=False)
    done = sorted(t.datetime_complete for t in trials if t.datetime_complete is not None)

    def rate(window: list[object]) -> float:
        span = (window[-1] - window[0]).total_seconds()  # type: ignore[operator]
        return (len(window) - 1) / span if span > 0 else float("inf")

    return rate(done[:WINDOW]), rate(done[-WINDOW:]), len(done)


def run_service(
    service_url: str, optuna_url: str, n_trials: int, workers: int, tracking: bool = False
) -> str:
    name = f"service-{workers}w" + ("-tracked" if tracking else "")
    spec = validate_spec(
        _spec(name, n_trials, workers), ValidationPolicy(allowed_task_modules=["benchmarks"])
    )
    create_study(service_url, optuna_url, spec)
    env = dict(
        os.environ,
        HPO_DATABASE_URL=service_url,
        HPO_OPTUNA_STORAGE=optuna_url,
        HPO_ALLOWED_TASK_MODULES="benchmarks",
        HPO_DATA_DIR=str(SCRATCH),
        # Dispatch alone, as bare Optuna has no tracking (see --tracking).
        HPO_MLFLOW_ENABLED="true" if tracking else "false",
        PYTHONPATH=str(REPO),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli.main",
            "worker",
            "--devices",
            "cpu",
            "--per-device",
            str(workers),
            "--exit-when-idle",
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    return name


BARE = """
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, name, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
study = optuna.load_study(study_name=name, storage=url,
                          sampler=optuna.samplers.TPESampler(seed=seed))
study.optimize(lambda t: t.suggest_float("x", -10, 10) ** 2, n_trials=n)
"""


def run_bare(optuna_url: str, n_trials: int, processes: int) -> str:
    name = f"bare-{processes}p"
    optuna.create_study(storage=optuna_url, study_name=name)
    per_process = n_trials // processes
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BARE, optuna_url, name, str(per_process), str(SEED + i)]
        )
        for i in range(processes)
    ]
    for proc in procs:
        proc.wait()
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_server_argument(parser)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="runs of each runner, alternating which goes first (a busy machine drifts)",
    )
    parser.add_argument(
        "--tracking",
        action="store_true",
        help="also run the service with MLflow tracking on (local SQLite store)",
    )
    args = parser.parse_args()
    rows: list[tuple[str, int, int, float, float, float]] = []
    for workers in args.workers:
        for round_ in range(args.rounds):
            rows += _round(args, workers, reverse=round_ % 2 == 1)
    print(
        f"| runner | processes | trials | trials/s 0-{WINDOW} | trials/s last {WINDOW} | wall s |"
    )
    print("|---|---|---|---|---|---|")
    for label, workers, count, first, last, wall in rows:
        print(f"| {label} | {workers} | {count} | {first:.1f} | {last:.1f} | {wall:.0f} |")
    _print_ratios(rows)


def _round(
    args: argparse.Namespace, workers: int, reverse: bool
) -> list[tuple[str, int, int, float, float, float]]:
    """One run of each runner on fresh databases, bare Optuna first unless ``reverse``."""
    rows = []
    with migrated_databases(args.server) as (service_url, optuna_url):
        runs: list[tuple[str, Callable[[], str]]] = [
            ("bare Optuna optimize", lambda: run_bare(optuna_url, args.trials, workers)),
            ("service workers", lambda: run_service(service_url, optuna_url, args.trials, workers)),
        ]
        if args.tracking:
            runs.append(
                (
                    "service workers + MLflow tracking",
                    lambda: run_service(service_url, optuna_url, args.trials, workers, True),
                )
            )
        for label, run in reversed(runs) if reverse else runs:
            started = time.monotonic()
            name = run()
            first, last, count = rates(optuna_url, name)
            rows.append((label, workers, count, first, last, time.monotonic() - started))
    return rows


def _print_ratios(rows: list[tuple[str, int, int, float, float, float]]) -> None:
    """The service's rate as a multiple of bare Optuna's: medians over the rounds."""
    print("\n| processes | service ÷ bare, trials 0-200 | service ÷ bare, last 200 |")
    print("|---|---|---|")
    for workers in sorted({row[1] for row in rows}):

        def median_rates(label: str, w: int = workers) -> tuple[float, float]:
            mine = [row for row in rows if row[0] == label and row[1] == w]
            return statistics.median(r[3] for r in mine), statistics.median(r[4] for r in mine)

        bare, service = median_rates("bare Optuna optimize"), median_rates("service workers")
        print(f"| {workers} | {service[0] / bare[0]:.2f} | {service[1] / bare[1]:.2f} |")


if __name__ == "__main__":
    main()
