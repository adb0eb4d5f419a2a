"""Compute budgets, study-level stopping and warm starts, on SQLite and Postgres."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from storage import studies
from storage.budget import Outcome, claim_slot, finish_lease, pending_work
from storage.db import Database
from storage.errors import InvalidSpecError
from storage.models import Study, StudyStatus
from storage.optuna_store import open_optuna_storage
from storage.settings import Settings
from storage.stopping import Usage
from storage.validation import ValidationPolicy, validate_spec
from storage.warm_start import NOTE_ATTR

POLICY = ValidationPolicy(allowed_task_modules=["tests"])


def _spec(name: str, **extra: Any) -> dict[str, Any]:
    budget = extra.pop("budget", {})
    return {
        "name": name,
        "task": {"name": "python:tests.objectives:null"},
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -1, "high": 1}},
        "budget": {"max_concurrent_trials": 2, **budget},
        **extra,
    }


def _create(settings: Settings, document: dict[str, Any]) -> Database:
    db = Database(settings.database_url)
    spec = validate_spec(document, POLICY)
    with db.session_scope() as session:
        studies.create_study(session, open_optuna_storage(settings.optuna_storage), spec, "t")
    return db


def _run_one(
    db: Database, name: str, *, compute_s: float = 1.0, examples: int = 0, value: float = 1.0
) -> bool:
    """Claim and complete one trial; False when no slot could be claimed."""
    with db.session_scope() as session:
        claim = claim_slot(session, "w", "cpu", [name])
    if claim is None:
        return False
    with db.session_scope() as session:
        finish_lease(
            session,
            claim.lease_id,
            "w",
            study_id=claim.study_id,
            outcome=Outcome(TrialState.COMPLETE, True),
            final_state=TrialState.COMPLETE,
            fail_fast_trials=3,
            usage=Usage(compute_s, examples),
            value=value,
        )
    return True


def _row(db: Database, name: str) -> Study:
    with db.session_scope(read_only=True) as session:
        study = session.query(Study).filter_by(name=name).one()
        session.expunge(study)
        return study


def test_a_compute_budget_alone_bounds_the_study_exactly(settings: Settings) -> None:
    db = _create(settings, _spec("compute", budget={"max_compute_s": 10}))
    ran = 0
    while _run_one(db, "compute", compute_s=3.0):
        ran += 1
    study = _row(db, "compute")
    # 3 + 3 + 3 < 10: a fourth trial starts; after it (12 s) none does.
    assert ran == 4 and study.compute_s == pytest.approx(12.0)
    assert study.status == StudyStatus.COMPLETED
    assert "compute budget spent" in (study.status_reason or "")
    with db.session_scope(read_only=True) as session:
        assert not pending_work(session, ["compute"])
    db.dispose()


def test_running_trials_finish_before_a_spent_budget_completes_the_study(
    settings: Settings,
) -> None:
    db = _create(settings, _spec("examples", budget={"max_train_examples": 100}))
    with db.session_scope() as session:
        first = claim_slot(session, "a", "cpu")
        second = claim_slot(session, "b", "cpu")
    assert first is not None and second is not None
    for claim, worker, status in ((first, "a", "running"), (second, "b", "completed")):
        with db.session_scope() as session:
            finish_lease(
                session,
                claim.lease_id,
                worker,
                study_id=claim.study_id,
                outcome=Outcome(TrialState.PRUNED, True),
                final_state=TrialState.PRUNED,
                fail_fast_trials=3,
                usage=Usage(5.0, 150),
            )
        with db.session_scope() as session:
            assert claim_slot(session, "c", "cpu") is None  # spent: nothing new starts
        assert _row(db, "examples").status == status
    assert _row(db, "examples").train_examples == 300
    db.dispose()


def test_a_target_stops_the_study(settings: Settings) -> None:
    spec = _spec("target", budget={"n_trials": 10, "stop_when": {"target": 0.1}})
    db = _create(settings, spec)
    values = iter([0.5, 0.3, 0.05, 0.01])
    ran = sum(1 for value in values if _run_one(db, "target", value=value))
    study = _row(db, "target")
    assert ran == 3 and study.status == StudyStatus.COMPLETED
    assert "target 0.1 reached by trial" in (study.status_reason or "")
    db.dispose()


def test_no_improvement_stops_the_study(settings: Settings) -> None:
    spec = _spec(
        "patience",
        budget={"n_trials": 50, "stop_when": {"no_improvement_trials": 3, "min_delta": 0.1}},
    )
    db = _create(settings, spec)
    # 1.0 is the best; 0.95 and 0.92 improve by less than min_delta and do not count.
    values = [1.0, 0.95, 0.92, 0.99, 0.5, 0.45]
    ran = sum(1 for value in values if _run_one(db, "patience", value=value))
    study = _row(db, "patience")
    assert ran == 4 and study.best_value == pytest.approx(1.0)
    assert "no improvement over 3 finished trials" in (study.status_reason or "")
    db.dispose()


def test_stop_when_needs_one_objective() -> None:
    document = _spec("multi", budget={"stop_when": {"target": 1.0}})
    document.pop("objective")
    document["objectives"] = [
        {"metric": "loss", "direction": "minimize"},
        {"metric": "size", "direction": "minimize"},
    ]
    with pytest.raises(InvalidSpecError) as raised:
        validate_spec(document, POLICY)
    assert [d.loc for d in raised.value.errors] == [("budget", "stop_when")]


def test_warm_start_enqueues_the_best_configurations_fitted_to_the_new_space(
    settings: Settings,
) -> None:
    storage = open_optuna_storage(settings.optuna_storage)
    source = {
        **_spec("source"),
        "search_space": {
            "x": {"type": "float", "low": -5, "high": 5},
            "y": {"type": "categorical", "choices": ["a", "b"]},
        },
    }
    db = _create(settings, source)
    past = optuna.load_study(study_name="source", storage=storage)
    for x, y, loss in ((4.0, "a", 0.1), (-0.5, "b", 0.2), (0.2, "a", 0.9)):
        past.enqueue_trial({"x": x, "y": y})
        trial = past.ask(
            {
                "x": optuna.distributions.FloatDistribution(-5, 5),
                "y": optuna.distributions.CategoricalDistribution(["a", "b"]),
            }
        )
        past.tell(trial, loss)
    new = {**_spec("warm", warm_start={"from_study": "source", "top_k": 2})}
    new["search_space"] = {"x": {"type": "float", "low": -1, "high": 1, "step": 0.5}}
    _create(settings, new)
    waiting = optuna.load_study(study_name="warm", storage=storage).get_trials(
        states=(optuna.trial.TrialState.WAITING,)
    )
    fixed = [t.system_attrs["fixed_params"] for t in waiting]
    assert fixed == [{"x": 1.0}, {"x": -0.5}]
    assert "x 4.0 -> 1.0" in waiting[0].user_attrs[NOTE_ATTR]
    assert "y dropped" in waiting[0].user_attrs[NOTE_ATTR]
    assert waiting[0].user_attrs["hpo.warm_start"] == "source#0"

    for document, message in (
        ({**_spec("w2", warm_start={"from_study": "nope"})}, "no study named 'nope'"),
        (
            {
                **_spec("w3", warm_start={"from_study": "source"}),
                "task": {"name": "python:tests.objectives:quadratic"},
            },
            "ran task",
        ),
    ):
        with pytest.raises(InvalidSpecError) as raised, db.session_scope() as session:
            studies.create_study(session, storage, validate_spec(document, POLICY), "t")
        assert raised.value.errors[0].loc == ("warm_start", "from_study")
        assert message in raised.value.errors[0].msg
    db.dispose()
