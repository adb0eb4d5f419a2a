"""Claims, finishes and reaps against SQLite and Postgres, with concurrent claimers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import update

from storage import studies
from storage.budget import Outcome, claim_slot, finish_lease, pending_work
from storage.db import Database
from storage.models import Lease, Study, StudyStatus, utcnow
from storage.optuna_store import open_optuna_storage
from storage.reaper import Reaper
from storage.settings import Settings
from storage.states import FailReason
from storage.validation import ValidationPolicy, validate_spec


def _study(settings: Settings, name: str, **budget: Any) -> Database:
    db = Database(settings.database_url)
    spec = validate_spec(
        {
            "name": name,
            "task": {"name": "python:tests.objectives:null"},
            "objective": {"metric": "loss", "direction": "minimize"},
            "search_space": {"x": {"type": "float", "low": -1, "high": 1}},
            "budget": {"n_trials": 10, "max_concurrent_trials": 3, **budget},
        },
        ValidationPolicy(allowed_task_modules=["tests"]),
    )
    with db.session_scope() as session:
        studies.create_study(session, open_optuna_storage(settings.optuna_storage), spec, "t")
    return db


def _complete(db: Database, lease_id: int, worker: str, study_id: int) -> bool:
    with db.session_scope() as session:
        return finish_lease(
            session,
            lease_id,
            worker,
            study_id=study_id,
            outcome=Outcome(TrialState.COMPLETE, True),
            final_state=TrialState.COMPLETE,
            fail_fast_trials=3,
        )


def test_concurrent_claims_never_overshoot(settings: Settings) -> None:
    db = _study(settings, "race", n_trials=25, max_concurrent_trials=3)
    active: list[int] = []
    peak = 0
    finished = 0
    lock = threading.Lock()

    errors: list[BaseException] = []
    deadline = time.monotonic() + 120

    def worker(index: int) -> None:
        try:
            claim_and_finish(f"w{index}")
        except BaseException as exc:  # surfaced by the main thread below
            errors.append(exc)

    def claim_and_finish(name: str) -> None:
        nonlocal peak, finished
        while time.monotonic() < deadline:
            with db.session_scope() as session:
                claim = claim_slot(session, name, "cpu")
            if claim is None:
                with db.session_scope(read_only=True) as session:
                    if not pending_work(session):
                        return
                time.sleep(0.01)
                continue
            with lock:
                active.append(claim.lease_id)
                peak = max(peak, len(active))
            time.sleep(0.005)
            with lock:
                active.remove(claim.lease_id)
            assert _complete(db, claim.lease_id, name, claim.study_id)
            with lock:
                finished += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=150)
    assert errors == []
    with db.session_scope() as session:
        study = studies.get_study(session, "race")
        assert (study.n_finished, study.n_active, study.status) == (25, 0, "completed")
    assert finished == 25
    assert peak <= 3
    db.dispose()


def test_priority_then_least_recently_served(settings: Settings) -> None:
    db = _study(settings, "low")
    _study(settings, "high", max_concurrent_trials=1).dispose()
    _study(settings, "other").dispose()
    with db.session_scope() as session:
        session.execute(update(Study).where(Study.name == "high").values(priority=5))
    order = []
    for _ in range(4):
        with db.session_scope() as session:
            claim = claim_slot(session, "w", "cpu")
            assert claim is not None
            order.append(claim.study_name)
    # high first (then it is at its concurrency limit); low and other alternate.
    assert order[0] == "high"
    assert sorted(order[1:3]) == ["low", "other"] and order[3] == order[1]
    with db.session_scope() as session:
        assert claim_slot(session, "w", "cpu", ["high"]) is None  # limit reached
    db.dispose()


def test_paused_and_cancelled_studies_are_not_claimed(settings: Settings) -> None:
    db = _study(settings, "paused")
    with db.session_scope() as session:
        studies.transition_study(session, "paused", "pause", "t")
    with db.session_scope() as session:
        assert claim_slot(session, "w", "cpu") is None
        assert not pending_work(session)
    with db.session_scope() as session:
        studies.transition_study(session, "paused", "resume", "t")
    with db.session_scope() as session:
        assert claim_slot(session, "w", "cpu") is not None
    db.dispose()


def test_reaper_fails_and_retries_a_lost_trial_once(settings: Settings) -> None:
    db = _study(settings, "lost", max_retries=1)
    storage = open_optuna_storage(settings.optuna_storage)
    study = optuna.load_study(study_name="lost", storage=storage)
    with db.session_scope() as session:
        claim = claim_slot(session, "dead-worker", "cpu")
    assert claim is not None
    trial = study.ask({"x": optuna.distributions.FloatDistribution(-1, 1)})
    with db.session_scope() as session:
        lease = session.get(Lease, claim.lease_id)
        assert lease is not None
        lease.optuna_trial_id, lease.trial_number = trial._trial_id, trial.number
        lease.heartbeat_at = utcnow() - timedelta(seconds=60)
    reaper = Reaper(db, storage, grace_s=1.0, fail_fast_trials=3)
    reaper._healthy_since -= 10  # as if it had been up for a while
    reaped = reaper.run_once()
    assert [(r.study, r.action) for r in reaped] == [("lost", "retried")]
    assert reaper.run_once() == []
    trials = study.get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert trials[0].user_attrs["hpo.fail_reason"] == "lost"
    assert trials[1].state == optuna.trial.TrialState.WAITING
    assert trials[1].user_attrs["hpo.retry_of"] == 0
    with db.session_scope() as session:
        row = studies.get_study(session, "lost")
        assert (row.n_active, row.n_finished, row.n_lost) == (0, 0, 1)
    db.dispose()


def test_reaper_waits_a_grace_period_after_an_outage(settings: Settings) -> None:
    db = _study(settings, "fresh")
    with db.session_scope() as session:
        claim = claim_slot(session, "w", "cpu")
        assert claim is not None
    with db.session_scope() as session:
        session.execute(update(Lease).values(heartbeat_at=utcnow() - timedelta(seconds=60)))
    reaper = Reaper(
        db, open_optuna_storage(settings.optuna_storage), grace_s=30.0, fail_fast_trials=3
    )
    assert reaper.run_once() == []  # just started: give workers a chance to heartbeat
    db.dispose()


def test_finish_after_reap_is_refused(settings: Settings) -> None:
    db = _study(settings, "refused")
    with db.session_scope() as session:
        claim = claim_slot(session, "w", "cpu")
        assert claim is not None
    with db.session_scope() as session:
        session.execute(update(Lease).values(state="lost"))
    with db.session_scope() as session:
        ok = finish_lease(
            session,
            claim.lease_id,
            "w",
            study_id=claim.study_id,
            outcome=Outcome(TrialState.COMPLETE, True),
            final_state=TrialState.COMPLETE,
            fail_fast_trials=3,
        )
    assert not ok
    with db.session_scope() as session:
        study = studies.get_study(session, "refused")
        assert (study.n_finished, study.n_active) == (0, 1)  # the reaper's to settle
    db.dispose()


def test_reaper_counts_a_result_told_before_the_lease_was_settled(settings: Settings) -> None:
    db = _study(settings, "told")
    storage = open_optuna_storage(settings.optuna_storage)
    study = optuna.load_study(study_name="told", storage=storage)
    with db.session_scope() as session:
        claim = claim_slot(session, "slow-worker", "cpu")
    assert claim is not None
    trial = study.ask({"x": optuna.distributions.FloatDistribution(-1, 1)})
    study.tell(trial, 0.25)  # told, then the worker died before settling its lease
    with db.session_scope() as session:
        lease = session.get(Lease, claim.lease_id)
        assert lease is not None
        lease.optuna_trial_id, lease.trial_number = trial._trial_id, trial.number
        lease.heartbeat_at = utcnow() - timedelta(seconds=60)
    reaper = Reaper(db, storage, grace_s=1.0, fail_fast_trials=3)
    reaper._healthy_since -= 10
    assert [r.action for r in reaper.run_once()] == ["counted"]
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"]  # no retry
    with db.session_scope() as session:
        row = studies.get_study(session, "told")
        assert (row.n_finished, row.n_active, row.n_lost) == (1, 0, 0)
    db.dispose()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_first_failures_with_one_error_fail_the_study(settings: Settings) -> None:
    db = _study(settings, "doomed")
    for _ in range(3):
        with db.session_scope() as session:
            claim = claim_slot(session, "w", "cpu")
            assert claim is not None
        with db.session_scope() as session:
            finish_lease(
                session,
                claim.lease_id,
                "w",
                study_id=claim.study_id,
                outcome=Outcome(TrialState.FAIL, True, FailReason.EXCEPTION, "ValueError: boom"),
                final_state=TrialState.FAIL,
                fail_fast_trials=3,
            )
    with db.session_scope() as session:
        study = studies.get_study(session, "doomed")
        assert study.status == StudyStatus.FAILED
        assert "ValueError: boom" in (study.status_reason or "")
    db.dispose()


def test_a_settlement_claims_the_next_slot_in_its_transaction(settings: Settings) -> None:
    from storage.budget import ClaimRequest, claim_after_finish

    db = _study(settings, "chain", n_trials=3, max_concurrent_trials=1)
    with db.session_scope() as session:
        claim = claim_slot(session, "w", "cpu")
    assert claim is not None
    numbers = []
    while claim is not None:
        with db.session_scope() as session:
            assert finish_lease(
                session,
                claim.lease_id,
                "w",
                study_id=claim.study_id,
                outcome=Outcome(TrialState.COMPLETE, True),
                final_state=TrialState.COMPLETE,
                fail_fast_trials=3,
                notify=False,
            )
            claim = claim_after_finish(session, claim.study_id, ClaimRequest("w", "cpu"))
            numbers.append(None if claim is None else claim.claim_number)
    # Exact as ever: three trials, then no slot; the study completed.
    assert numbers == [2, 3, None]
    with db.session_scope() as session:
        study = session.query(Study).filter_by(name="chain").one()
        assert (study.n_finished, study.n_active, study.status) == (3, 0, StudyStatus.COMPLETED)
