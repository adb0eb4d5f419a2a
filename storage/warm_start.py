"""Warm start: a new study begins with the best configurations of an earlier one.

``warm_start: {from_study: NAME, top_k: K}`` enqueues the K best completed
trials of NAME (same task) as the new study's first trials. Parameters the
new search space does not have are dropped, numbers outside its ranges are
clipped (and put on its step grid), categorical values it does not offer are
dropped (the sampler picks them); each enqueued trial says what was changed
in its ``warm_start_note`` user attribute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import ErrorDetail, InvalidSpecError
from storage.models import Study
from storage.optuna_store import ATTR_ENQUEUED_BY, ATTR_WARM_START
from storage.spec import CategoricalParam, FloatParam, IntParam, ParamSpec, StudySpec

NOTE_ATTR = "warm_start_note"
_LOC = ("warm_start", "from_study")


@dataclass(frozen=True)
class WarmTrial:
    """One configuration to enqueue, where it came from, and what was adjusted."""

    params: dict[str, Any]
    source: str
    notes: list[str] = field(default_factory=list)


def plan_warm_start(session: Session, storage: RDBStorage, spec: StudySpec) -> list[WarmTrial]:
    """The configurations ``spec.warm_start`` asks for, fitted to the new search space.

    Raises:
        InvalidSpecError: the source study is missing, of another task, or has
            no completed trial (located at ``warm_start.from_study``).
    """
    if spec.warm_start is None:
        return []
    name = spec.warm_start.from_study
    source = session.scalar(select(Study).where(Study.name == name))
    if source is None or source.optuna_study_id is None:
        raise _invalid(f"there is no study named {name!r} to start from")
    source_task = source.spec["task"]["name"]
    if source_task != spec.task.name:
        raise _invalid(f"{name!r} ran task {source_task!r}, not {spec.task.name!r}")
    best = _best_trials(storage, source, spec.warm_start.top_k)
    if not best:
        raise _invalid(f"{name!r} has no completed trial to start from")
    space = spec.search_space or {}
    return [_fit(trial, name, space) for trial in best]


def enqueue_warm_start(
    storage: RDBStorage, optuna_study_id: int, plan: list[WarmTrial], actor: str | None
) -> None:
    """Enqueue the planned configurations in the new study, best first."""
    import optuna

    study_name = storage.get_study_name_from_id(optuna_study_id)
    study = optuna.load_study(study_name=study_name, storage=storage)
    for item in plan:
        attrs: dict[str, Any] = {
            ATTR_WARM_START: item.source,
            ATTR_ENQUEUED_BY: actor or "anonymous",
        }
        if item.notes:
            attrs[NOTE_ATTR] = "; ".join(item.notes)
        study.enqueue_trial(item.params, user_attrs=attrs)


def _invalid(message: str) -> InvalidSpecError:
    return InvalidSpecError("invalid study spec", [ErrorDetail(_LOC, message)])


def _best_trials(storage: RDBStorage, source: Study, top_k: int) -> list[FrozenTrial]:
    objectives = source.spec.get("objectives") or [source.spec.get("objective") or {}]
    maximize = objectives[0].get("direction") == "maximize"
    try:
        done = storage.get_all_trials(
            source.optuna_study_id or 0, deepcopy=False, states=(TrialState.COMPLETE,)
        )
    except KeyError:
        raise _invalid(f"the Optuna study of {source.name!r} no longer exists") from None
    scored = [t for t in done if t.values and math.isfinite(t.values[0])]
    scored.sort(key=lambda t: t.values[0], reverse=maximize)
    return scored[:top_k]


def _fit(trial: FrozenTrial, source: str, space: dict[str, ParamSpec]) -> WarmTrial:
    params: dict[str, Any] = {}
    notes = []
    for name, value in trial.params.items():
        param = space.get(name)
        if param is None:
            notes.append(f"{name} dropped (not in the search space)")
            continue
        fitted = fit_value(param, value)
        if fitted is None:
            notes.append(f"{name}={value!r} dropped (not one of the choices)")
        else:
            if fitted != value:
                notes.append(f"{name} {value!r} -> {fitted!r}")
            params[name] = fitted
    return WarmTrial(params, f"{source}#{trial.number}", notes)


def fit_value(param: ParamSpec, value: Any) -> Any:
    """``value`` within ``param``'s range and on its step grid; None if it cannot be."""
    if isinstance(param, CategoricalParam):
        return value if value in param.choices else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if isinstance(param, IntParam):
        clipped = min(max(round(value), param.low), param.high)
        steps = (clipped - param.low) // param.step
        return int(param.low + steps * param.step)
    assert isinstance(param, FloatParam)
    number = min(max(float(value), param.low), param.high)
    if param.step is not None:
        on_grid = math.floor((number - param.low) / param.step + 0.5)
        number = min(param.low + on_grid * param.step, param.high)
    return number
