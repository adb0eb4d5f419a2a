"""Soak: many rounds of worker slots SIGKILLed at random moments, invariants checked each round.

    python -m benchmarks.fault_soak --rounds 40 --kills 8

Each round is a fresh study (10 short trials, 3 at a time, 3 slot processes)
during which a random live slot is killed every 0.05-1 s (up to ``--kills``)
and replaced. After the round the harness of ``tests/workers/faults.py``
checks what the service reports against the truth. Postgres comes from
``--server`` (throwaway databases, dropped afterwards).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from benchmarks.pg import add_server_argument, migrated_databases
from service.app import create_app
from tests.conftest import Fleet, make_settings
from tests.workers.faults import Slots, mlflow_runs_left_running, run_round


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_argument(parser)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--kills", type=int, default=8, help="kills per round")
    parser.add_argument("--trials", type=int, default=10, help="n_trials per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mlflow",
        action="store_true",
        help="track in MLflow (a local store) and check that no run stays RUNNING",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rng = random.Random(args.seed)
    totals = {"rounds": 0, "kills": 0, "trials": 0, "lost": 0, "orphaned": 0, "violations": 0}
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="hpo-soak-") as scratch,
        migrated_databases(args.server) as urls,
    ):
        settings = make_settings(
            Path(scratch) / "data",
            urls,
            allowed_task_modules="tests",
            heartbeat_interval_s=0.3,
            heartbeat_grace_s=2.0,
            poll_interval_s=0.3,
            mlflow_enabled=args.mlflow,
        )
        logs = Path(scratch) / "logs"
        logs.mkdir()
        slots = Slots(settings, logs)
        # With MLflow, a supervisor that is never killed sweeps the runs of lost trials.
        sweeper = Fleet(settings, logs)
        check = mlflow_runs_left_running(settings.mlflow_tracking_uri) if args.mlflow else None
        with TestClient(create_app(settings)) as api:
            if args.mlflow:
                # It serves no study (its one slot idles): the killable slots run the trials.
                sweeper.start("--study", "sweeper-serves-no-study")
            for index in range(args.rounds):
                result = run_round(
                    api,
                    slots,
                    settings.optuna_storage,
                    name=f"soak-{index}",
                    rng=rng,
                    n_trials=args.trials,
                    max_kills=args.kills,
                    extra_check=check,
                )
                totals["rounds"] += 1
                totals["kills"] += result.kills
                totals["trials"] += result.trials
                totals["lost"] += result.lost
                totals["orphaned"] += result.orphaned
                totals["violations"] += len(result.violations)
                print(
                    f"round {index}: {result.kills} kills, {result.trials} Optuna trials "
                    f"({result.lost} lost, {result.orphaned} orphaned), "
                    f"peak RUNNING {result.peak_running}, {result.seconds:.0f} s, "
                    f"violations: {result.violations or 0}",
                    flush=True,
                )
        slots.stop_all()
        sweeper.stop_all()
    print(
        f"total: {totals['rounds']} rounds, {totals['kills']} kills, {totals['trials']} Optuna "
        f"trials ({totals['lost']} lost and retried, {totals['orphaned']} orphaned), "
        f"{totals['violations']} violations, {time.monotonic() - started:.0f} s"
    )
    return 1 if totals["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
