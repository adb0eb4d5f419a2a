"""The fault-injection harness: worker slots killed at random moments, invariants checked.

Used by ``tests/workers/test_faults.py`` (a few rounds) and by
``benchmarks/fault_soak.py`` (hundreds of kills). Workers are real slot
processes (``python -m workers.slot``); the reaper runs in the API process.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from storage.settings import Settings

# FAIL trials that did not use up the budget (handed back, or replaced by a retry).
NOT_COUNTED = {"lost", "orphaned", "interrupted", "cancelled"}
FINISHED = ("COMPLETE", "PRUNED", "FAIL")
MAX_RETRIES = 10


def slot_env(settings: Settings, **extra: str) -> dict[str, str]:
    from tests.conftest import process_env

    return process_env(settings, **extra)


@dataclass
class Slots:
    """Worker slot processes, started and killed at will."""

    settings: Settings
    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0

    def start(self, *module_args: str, module: str = "workers.slot") -> subprocess.Popen[bytes]:
        from tests.procs import REPO

        log = (self.log_dir / f"slot-{self.started}.log").open("wb")
        self.started += 1
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *module_args, "--device", "cpu"],
            env=slot_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def serving(self) -> list[subprocess.Popen[bytes]]:
        """Live slots that registered as workers: past start-up, in their claim loop."""
        engine = self._engine()
        with engine.connect() as conn:
            pids = set(
                conn.execute(text("SELECT pid FROM hpo_workers WHERE stopped_at IS NULL")).scalars()
            )
        return [p for p in self.alive() if p.pid in pids]

    def _engine(self) -> Any:
        if not hasattr(self, "_service_engine"):
            self._service_engine = create_engine(self.settings.database_url)
        return self._service_engine

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.alive():
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if hasattr(self, "_service_engine"):
            self._service_engine.dispose()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


class RunningSampler(threading.Thread):
    """Samples how many trials of a study Optuna shows RUNNING, every few milliseconds."""

    def __init__(self, optuna_url: str, study_name: str, interval_s: float = 0.03) -> None:
        super().__init__(name="running-sampler", daemon=True)
        self.engine = create_engine(optuna_url)
        self.study_name = study_name
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        query = text(
            "SELECT count(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "WHERE s.study_name = :name AND t.state = 'RUNNING'"
        )
        with self.engine.connect() as conn:
            while not self._stop_event.wait(self.interval_s):
                running = int(conn.execute(query, {"name": self.study_name}).scalar_one())
                conn.rollback()
                self.peak = max(self.peak, running)
                self.samples += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.engine.dispose()


def trials_of(client: httpx.Client | Any, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = client.get(
            f"/api/v1/studies/{name}/trials", params={"limit": 500, "offset": offset}
        ).json()
        items += page["items"]
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return items


def violations(
    study: dict[str, Any],
    trials: list[dict[str, Any]],
    n_trials: int,
    peak_running: int,
    max_retries: int = MAX_RETRIES,
) -> list[str]:
    """What the service reports that is not true; empty when everything holds."""
    found = []
    limit = study["budget"]["max_concurrent_trials"]
    if study["status"] != "completed":
        found.append(f"study ended {study['status']} ({study.get('status_reason')})")
    if study["budget"]["finished"] != n_trials or study["budget"]["active"] != 0:
        found.append(f"budget counters {study['budget']}")
    left = [t["number"] for t in trials if t["state"] in ("RUNNING", "WAITING")]
    if left:
        found.append(f"trials left RUNNING/WAITING in Optuna: {left}")
    if peak_running > limit:
        found.append(f"Optuna showed {peak_running} RUNNING trials (limit {limit})")
    retries = _retries(trials)
    counted = [t for t in trials if _counted(t, retries)]
    if len(counted) != n_trials:
        found.append(f"{len(counted)} counted trials, not {n_trials}")
    found += _retry_violations(trials, retries, max_retries)
    found += _counted_twice(trials, counted)
    return found


def _retries(trials: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Retries of each trial (re-queued copies of orphans are not retries)."""
    found: dict[int, list[dict[str, Any]]] = {}
    for trial in trials:
        if trial["retry_of"] is not None and trial["fail_reason"] != "orphaned":
            found.setdefault(trial["retry_of"], []).append(trial)
    return found


def _counted(trial: dict[str, Any], retries: dict[int, list[dict[str, Any]]]) -> bool:
    """Uses up the budget: finished for its own reasons, or lost with no retries left."""
    if trial["state"] not in FINISHED:
        return False
    if trial["fail_reason"] == "lost":
        return trial["number"] not in retries
    return trial["fail_reason"] not in NOT_COUNTED


def _depth(trial: dict[str, Any], by_number: dict[int, dict[str, Any]]) -> int:
    depth = 0
    while trial["retry_of"] is not None:
        trial, depth = by_number[trial["retry_of"]], depth + 1
    return depth


def _retry_violations(
    trials: list[dict[str, Any]], retries: dict[int, list[dict[str, Any]]], max_retries: int
) -> list[str]:
    found = []
    by_number = {t["number"]: t for t in trials}
    for trial in trials:
        if trial["fail_reason"] != "lost":
            continue
        mine = retries.get(trial["number"], [])
        if _depth(trial, by_number) >= max_retries and not mine:
            continue  # out of retries: it counts as failed
        if len(mine) != 1 or mine[0]["params"] != trial["params"]:
            found.append(f"lost trial {trial['number']} has retries {mine}")
    return found


def _counted_twice(trials: list[dict[str, Any]], counted: list[dict[str, Any]]) -> list[str]:
    by_number = {t["number"]: t for t in trials}
    roots: dict[int, int] = {}
    for trial in counted:
        root = trial
        while root["retry_of"] is not None:
            root = by_number[root["retry_of"]]
        roots[root["number"]] = roots.get(root["number"], 0) + 1
    twice = [root for root, n in roots.items() if n > 1]
    return [f"configurations counted more than once: {twice}"] if twice else []


def mlflow_runs_left_running(tracking_uri: str, wait_s: float = 60) -> Callable[[str], list[str]]:
    """A round check: no MLflow run of the study stays RUNNING (the sweep ends lost ones)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)

    def check(name: str) -> list[str]:
        deadline = time.monotonic() + wait_s
        while True:
            experiment = client.get_experiment_by_name(name)
            runs = []
            if experiment is not None:
                runs = client.search_runs(
                    [experiment.experiment_id], "attributes.status = 'RUNNING'"
                )
                if not runs:
                    return []
            if time.monotonic() > deadline:
                names = [r.info.run_name for r in runs] or "no experiment"
                return [f"MLflow runs left RUNNING: {names}"]
            time.sleep(1.0)

    return check


@dataclass
class RoundResult:
    kills: int
    trials: int
    lost: int  # kills that hit a running trial
    orphaned: int  # kills between Optuna's ask and the lease record
    violations: list[str]
    peak_running: int
    seconds: float


def run_round(
    client: httpx.Client | Any,
    slots: Slots,
    optuna_url: str,
    *,
    name: str,
    rng: random.Random,
    n_trials: int = 10,
    max_concurrent: int = 3,
    n_workers: int = 3,
    max_kills: int = 8,
    timeout_s: float = 240,
    extra_check: Callable[[str], list[str]] | None = None,
    report_every_s: float = 0.1,
) -> RoundResult:
    """One study run while slots are SIGKILLed at random moments and respawned."""
    spec = {
        "name": name,
        "task": {
            "name": "python:tests.objectives:quadratic",
            "config": {"steps": 4, "sleep_s": report_every_s},
        },
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -5, "high": 5}},
        "pruner": {"name": "median", "options": {"n_startup_trials": 2}},
        "budget": {
            "n_trials": n_trials,
            "max_concurrent_trials": max_concurrent,
            "max_retries": MAX_RETRIES,
        },
    }
    response = client.post("/api/v1/studies", json=spec)
    assert response.status_code == 201, response.text
    started = time.monotonic()
    sampler = RunningSampler(optuna_url, name)
    sampler.start()
    kills = 0
    try:
        for _ in range(n_workers):
            slots.start("--study", name)
        while client.get(f"/api/v1/studies/{name}").json()["status"] not in (
            "completed",
            "failed",
            "cancelled",
        ):
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"round {name} did not end:\n{slots.logs()[-4000:]}")
            time.sleep(rng.uniform(0.05, 1.0))
            # Slots past their start-up: a kill then lands somewhere in the trial loop.
            alive = slots.serving()
            if kills < max_kills and alive:
                slots.kill(rng.choice(alive))
                kills += 1
            while len(slots.alive()) < n_workers:
                slots.start("--study", name, "--exit-when-idle")
    finally:
        sampler.stop()
        for proc in slots.alive():
            proc.send_signal(signal.SIGTERM)
        for proc in slots.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
    study = client.get(f"/api/v1/studies/{name}").json()
    trials = trials_of(client, name)
    found = violations(study, trials, n_trials, sampler.peak)
    if extra_check is not None:
        found += extra_check(name)
    reasons = [t["fail_reason"] for t in trials]
    return RoundResult(
        kills,
        len(trials),
        reasons.count("lost"),
        reasons.count("orphaned"),
        found,
        sampler.peak,
        time.monotonic() - started,
    )
