"""Memory-aware packing: the ledger, the estimate, and ``hpo worker --per-device auto``.

On CPU the only thing declared is the device's memory (``HPO_DEVICE_MEMORY_GIB``,
the injected probe); slots, claims and BERT training are real.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from service.app import create_app
from storage.settings import Settings
from tests.conftest import Fleet, make_settings
from workers.packing import (
    GIB,
    HEADROOM,
    MemoryLedger,
    auto_slot_count,
    packing_budget,
    probe_free_bytes,
)
from workers.supervisor import Device, DeviceError, parse_per_device, plan_children
from workers.training.memory import estimate_training_bytes
from workers.training.settings import TrainSettings

TINY = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "num_layers": 2,
    "hidden_dropout": 0.0,
    "batch_size": 32,
}


def _ledger(tmp_path: Path, budget: int, owner: int | None) -> MemoryLedger:
    return MemoryLedger(tmp_path / "memory-cuda-0.json", budget, owner=owner)


@contextmanager
def _live_pids(n: int) -> Iterator[list[int]]:
    # Entries of dead processes are dropped, so each owner must be a live process.
    procs = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(n)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _then(ledger: MemoryLedger, nbytes: int, done: Callable[[], None]) -> None:
    ledger.reserve(nbytes, poll_s=0.01)
    done()


@pytest.fixture
def owners() -> Iterator[list[int]]:
    with _live_pids(3) as pids:
        yield pids


def test_reservations_never_add_up_past_the_budget(tmp_path: Path, owners: list[int]) -> None:
    a, b, c = (_ledger(tmp_path, 10, pid) for pid in owners)
    assert a.reserve(4) == 0.0 and b.reserve(5) == 0.0
    assert a.reserved_bytes() == 9 and c.may_claim()  # 1 of 10 is left
    admitted = threading.Event()
    waiter = threading.Thread(target=_then, args=(c, 3, admitted.set))
    waiter.start()
    time.sleep(0.3)
    assert not admitted.is_set()  # 9 + 3 > 10
    assert not b.may_claim()  # a claimed trial waits for room: no more claims
    b.release()
    waiter.join(timeout=5)
    assert admitted.is_set() and c.reserved_bytes() == 7


def test_the_oldest_waiter_goes_first_and_a_huge_trial_runs_alone(
    tmp_path: Path, owners: list[int]
) -> None:
    big, small, huge = (_ledger(tmp_path, 10, pid) for pid in owners)
    big.reserve(6)
    order: list[str] = []
    t_huge = threading.Thread(target=_then, args=(huge, 25, lambda: order.append("huge")))
    t_huge.start()
    time.sleep(0.2)
    # 6 + 3 fits, but not next to what the older waiter needs: it waits its turn.
    t_small = threading.Thread(target=_then, args=(small, 3, lambda: order.append("small")))
    t_small.start()
    time.sleep(0.3)
    assert order == []
    big.release()
    t_huge.join(timeout=5)
    assert order == ["huge"] and huge.reserved_bytes() == 25  # alone: more than the budget
    time.sleep(0.2)
    assert order == ["huge"]
    huge.release()
    t_small.join(timeout=5)
    assert order == ["huge", "small"]


def test_an_interrupted_wait_withdraws_and_a_held_reservation_only_grows(
    tmp_path: Path, owners: list[int]
) -> None:
    holder, waiter = _ledger(tmp_path, 10, owners[0]), _ledger(tmp_path, 10, owners[1])
    holder.reserve(8)
    holder.reserve(6)  # the measured peak is lower: keep the estimate
    assert holder.reserved_bytes() == 8
    holder.reserve(9)
    assert holder.reserved_bytes() == 9

    def interrupted_sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "sleep", interrupted_sleep)
        with pytest.raises(KeyboardInterrupt):
            waiter.reserve(5)
    assert holder.may_claim()  # no waiter is left behind


def test_entries_of_dead_slots_are_dropped(tmp_path: Path) -> None:
    with _live_pids(1) as pids:
        dead = _ledger(tmp_path, 10, pids[0])
        dead.reserve(10)
    alive = _ledger(tmp_path, 10, owner=None)  # this process
    assert alive.reserved_bytes() == 0 and alive.reserve(10) == 0.0


def _bert(**overrides: Any) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        **overrides,
    )
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        return BertForSequenceClassification(config)


def test_the_estimate_counts_weights_optimizer_and_activations() -> None:
    model = _bert(attn_implementation="sdpa")

    def estimate(batch: int, seq: int, device: str = "cuda", optimizer: str = "adamw") -> int:
        settings = TrainSettings(1e-4, batch, 1, 0, device=device, optimizer=optimizer)
        return estimate_training_bytes(model, settings, seq)

    params = sum(p.numel() for p in model.parameters())
    # AdamW in fp32 with bf16 autocast copies: 18 bytes a parameter, before activations.
    assert estimate(1, 1) > 18 * params
    assert estimate(32, 128) > estimate(16, 128) > estimate(16, 64)
    assert estimate(16, 128, optimizer="sgd") < estimate(16, 128)
    # BERT-base at batch 32 x 128 in bf16: a few GiB, nowhere near a whole GPU.
    assert 3 * GIB < estimate(32, 128) < 12 * GIB
    eager = _bert(attn_implementation="eager")
    settings = TrainSettings(1e-4, 32, 1, 0, device="cuda")
    assert estimate_training_bytes(eager, settings, 512) > estimate(32, 512)
    with torch.device("meta"):
        mlm = BertForMaskedLM(model.config)
    assert estimate_training_bytes(mlm, settings, 128) > estimate(32, 128)


def test_per_device_auto_sizes_the_slots_from_the_probe() -> None:
    assert parse_per_device("auto") is None and parse_per_device("3") == 3
    for bad in ("0", "65", "many"):
        with pytest.raises(DeviceError):
            parse_per_device(bad)
    assert probe_free_bytes("cpu", "", 2.5) == int(2.5 * GIB)
    assert probe_free_bytes("cpu", "", None) > 0  # the host's available memory
    assert auto_slot_count("cuda", 141 * GIB) == 8 and auto_slot_count("cuda", 2 * GIB) == 1
    assert packing_budget("cpu", 10 * GIB, 4) == int(10 * GIB * (1 - HEADROOM))
    assert packing_budget("cuda", 10 * GIB, 4) < packing_budget("cpu", 10 * GIB, 4)
    cpu = Device("cpu", "cpu", "")
    packed = plan_children([cpu], None, 2.0)
    assert len(packed) == auto_slot_count("cpu", 0)
    assert {c.memory_budget for c in packed} == {packing_budget("cpu", 2 * GIB, len(packed))}
    assert [c.memory_budget for c in plan_children([cpu], 3, None)] == [None] * 3


# --- end to end: hpo worker --per-device auto on CPU ------------------------------------


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(tmp_path / "data", pg_urls, allowed_task_modules="tests")


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _config(max_steps: int) -> dict[str, Any]:
    return {
        "dataset": {"source": "builtin", "n_train": 1200, "n_validation": 100},
        "model": {"source": "scratch", "vocab_size": 400},
        "max_seq_len": 48,
        "max_steps": max_steps,
    }


def _trial_estimate(make_context: Any, tmp_path: Path) -> int:
    """What the worker will estimate for these trials: one short run of the real task."""
    from workers.tasks.text_classification import run

    ctx = make_context(config=_config(2), params={**TINY, "learning_rate": 1e-3})
    estimates: list[int] = []
    ctx.reserve_device_memory = estimates.append
    run(ctx)
    return estimates[0]


def _wait(api: TestClient, name: str, fleet: Fleet, status: str) -> None:
    deadline = time.monotonic() + 240
    while api.get(f"/api/v1/studies/{name}").json()["status"] != status:
        assert time.monotonic() < deadline, fleet.logs()[-5000:]
        time.sleep(0.5)


def _trials(api: TestClient, name: str) -> list[dict[str, Any]]:
    page = api.get(f"/api/v1/studies/{name}/trials", params={"limit": 100}).json()
    return list(page["items"])


@pytest.mark.slow
def test_packed_slots_admit_only_what_fits_and_an_oom_still_fails_oom(
    api: TestClient, fleet: Fleet, settings: Settings, make_context: Any, tmp_path: Path
) -> None:
    estimate = _trial_estimate(make_context, tmp_path)
    # Room for one of these trials, not two, although every core has a slot.
    declared = 1.5 * estimate / (1 - HEADROOM) / GIB
    spec = {
        "name": "packed",
        "task": {"name": "text-classification", "config": _config(40)},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "search_space": {
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
            **{k: {"type": "categorical", "choices": [v]} for k, v in TINY.items()},
        },
        "sampler": {"name": "random", "seed": 1},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 4, "max_concurrent_trials": 4},
    }
    oom = {
        "name": "packed-oom",
        "task": {"name": "python:tests.objectives:out_of_memory"},
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": 0, "high": 1}},
        "budget": {"n_trials": 1, "max_retries": 2},
    }
    for study in (spec, oom):
        assert api.post("/api/v1/studies", json=study).status_code == 201
    worker = fleet.start(
        "--per-device",
        "auto",
        "--exit-when-idle",
        HPO_DEVICE_MEMORY_GIB=f"{declared:.6f}",
        HPO_HOST_STATE_DIR=str(tmp_path / "host"),
    )
    _wait(api, "packed", fleet, "completed")
    _wait(api, "packed-oom", fleet, "failed")
    assert worker.wait(timeout=60) == 0
    # The packed slot maps an out-of-memory error as any slot does: FAIL oom, no retry.
    assert [(t["state"], t["fail_reason"]) for t in _trials(api, "packed-oom")] == [("FAIL", "oom")]
    trials = optuna.load_study(study_name="packed", storage=settings.optuna_storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    memory = [t.user_attrs["hpo.device_memory"] for t in trials]
    assert all(m["estimate_mib"] == pytest.approx(estimate / 2**20, abs=0.1) for m in memory)
    spans = sorted(
        (datetime.fromisoformat(m["admitted_at"]).astimezone(), t.datetime_complete.astimezone())
        for m, t in zip(memory, trials, strict=True)
        if t.datetime_complete is not None
    )
    # One trial at a time on the device: each was admitted after the previous one ended.
    assert all(later[0] >= earlier[1] for earlier, later in pairwise(spans))
    if auto_slot_count("cpu", 0) > 1:
        workers = {t["worker"] for t in _trials(api, "packed")}
        assert len(workers) > 1, fleet.logs()[-3000:]  # the slots took turns
        assert any(m["waited_s"] > 0 for m in memory)  # and a claimed trial waited for room
    assert "packing cpu:" in fleet.logs()
