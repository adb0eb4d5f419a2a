"""The trials of an import, checked before anything is written: data only.

An import takes the results of trials, never the service's bookkeeping:

- parameters lie in the new study's search space (the spec's distributions
  replace the document's; a ``python:`` task may add define-by-run
  parameters with their own distributions); a trial may lack a parameter;
- ``hpo.*`` user attributes are the service's own markers (retry links,
  trial folders, seeds, errors): they are dropped and reported, never kept;
- every value fits Optuna's columns (32-bit steps, 512-character names), so
  the database never refuses one half-way through;
- the trials that count fit ``budget.n_trials`` (see :func:`counted_trials`).

Messages quote at most a short prefix of a rejected value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    json_to_distribution,
)
from optuna.trial import FrozenTrial, TrialState

from storage.errors import ErrorDetail, InvalidRequestError, quote, shorten
from storage.optuna_store import ATTR_REQUEUE_OF, ATTR_RETRY_OF
from storage.search_space import param_problem, to_distributions
from storage.spec import BudgetSpec, StudySpec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
SERVICE_ATTR_PREFIX = "hpo."
# Optuna's columns: steps are a 32-bit integer, names of params and attributes varchar(512).
MAX_STEP = 2**31 - 1
MAX_NAME_LENGTH = 512
_STEP = re.compile(r"0|[1-9][0-9]{0,9}")
MAX_PROBLEMS = 20
MAX_WARNINGS = 20
Loc = tuple[str | int, ...]
Times = tuple[datetime | None, datetime | None]


@dataclass(frozen=True)
class CheckedTrials:
    """Trials ready for ``Study.add_trial``, how many count, and what was dropped."""

    trials: list[FrozenTrial]
    counted: int
    warnings: list[ErrorDetail]


@dataclass(frozen=True)
class _Space:
    distributions: dict[str, BaseDistribution]
    n_objectives: int
    define_by_run: bool  # a python: task may suggest parameters the spec does not list


@dataclass
class _Dropped:
    """Each dropped attribute name: the first trial that had it, and in how many."""

    first: dict[str, int] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)

    def add(self, index: int, key: str) -> None:
        self.first.setdefault(key, index)
        self.count[key] = self.count.get(key, 0) + 1

    def warnings(self) -> list[ErrorDetail]:
        why = "the service's own markers (hpo.*) are set by it alone"
        found = [
            ErrorDetail(
                ("trials", index, "user_attrs", _clip(key)),
                f"dropped from {self.count[key]} trial{'' if self.count[key] == 1 else 's'}: {why}",
            )
            for key, index in sorted(self.first.items())
        ]
        if len(found) > MAX_WARNINGS:
            more = len(found) - MAX_WARNINGS
            found = [*found[:MAX_WARNINGS], ErrorDetail(("trials",), f"{more} more names dropped")]
        return found


def check_trials(spec: StudySpec, items: list[dict[str, Any]]) -> CheckedTrials:
    """The trials of an import as Optuna trials, numbered in document order.

    Raises:
        InvalidRequestError: located at ``trials.<i>.<field>`` (the first
            ``MAX_PROBLEMS``), or at ``trials`` when more trials count than
            ``budget.n_trials`` allows.
    """
    space = _Space(
        to_distributions(spec.search_space or {}),
        max(1, len(spec.directions)),
        spec.task.python_target is not None,
    )
    trials: list[FrozenTrial] = []
    problems: list[ErrorDetail] = []
    dropped = _Dropped()
    for index, item in enumerate(items):
        trial, found = _frozen_trial(index, item, space, dropped)
        problems += found
        if trial is not None:
            trials.append(trial)
        if len(problems) >= MAX_PROBLEMS:
            break
    problems += _clashes(trials)
    counted = counted_trials(items)
    problems += _budget_problems(spec.budget, counted, len(items) - counted)
    if problems:
        raise InvalidRequestError("invalid trials in the import", problems[:MAX_PROBLEMS])
    return CheckedTrials(trials, counted, dropped.warnings())


def counted_trials(items: list[dict[str, Any]]) -> int:
    """How many of ``items`` count against ``n_trials``, as they did where they ran.

    Every finished trial counts except a FAIL trial that another trial of the
    document retried (``hpo.retry_of``) or re-queued (``hpo.requeue_of``):
    that trial's slot went to the retry, so the exporting service did not
    count it either.
    """
    failed = {
        number
        for item in items
        if str(item.get("state")) == TrialState.FAIL.name and _is_int(number := item.get("number"))
    }
    retried = {
        link
        for item in items
        for key in (ATTR_RETRY_OF, ATTR_REQUEUE_OF)
        if _is_int(link := (item.get("user_attrs") or {}).get(key)) and link in failed
    }
    return len(items) - len(retried)


def _clashes(trials: list[FrozenTrial]) -> list[ErrorDetail]:
    """Define-by-run parameters whose distribution differs from an earlier trial's
    (Optuna would refuse the trial; the spec's own are the same in every trial)."""
    first: dict[str, BaseDistribution] = {}
    problems = []
    for trial in trials:
        for name, distribution in trial.distributions.items():
            try:
                check_distribution_compatibility(first.setdefault(name, distribution), distribution)
            except ValueError:
                loc = ("trials", trial.number, "distributions", _clip(name))
                problems.append(ErrorDetail(loc, "differs from an earlier trial's"))
    return problems


def _budget_problems(budget: BudgetSpec, counted: int, retried: int) -> list[ErrorDetail]:
    problems = []
    if counted > budget.n_trials:
        problems.append(
            ErrorDetail(
                ("trials",),
                f"{counted} trials count against budget.n_trials ({budget.n_trials}): every "
                "finished trial does, except a failed one that another trial retried; raise "
                "spec.budget.n_trials or import fewer trials",
            )
        )
    # Each counted trial may have been retried max_retries times, plus a hand-back at shutdown.
    most = budget.n_trials * (budget.max_retries + 1)
    if retried > most:
        problems.append(
            ErrorDetail(
                ("trials",),
                f"{retried} failed trials were retried, more than budget.n_trials * "
                f"(budget.max_retries + 1) = {most} allow; raise spec.budget.max_retries",
            )
        )
    return problems


def _frozen_trial(
    index: int, item: dict[str, Any], space: _Space, dropped: _Dropped
) -> tuple[FrozenTrial | None, list[ErrorDetail]]:
    state = TrialState.__members__.get(str(item.get("state")))
    if state is None or state not in FINISHED:
        return None, [ErrorDetail(("trials", index, "state"), "must be COMPLETE, PRUNED or FAIL")]
    params, distributions, problems = _params(item, space)
    values, found = _values(item.get("values"), state, space.n_objectives)
    problems += found
    steps, found = _intermediate_values(item.get("intermediate_values") or {})
    problems += found
    user_attrs, found = _user_attrs(index, item.get("user_attrs") or {}, dropped)
    problems += found
    (start, complete), found = _times(item)
    problems += found
    if problems:
        return None, [ErrorDetail(("trials", index, *p.loc), p.msg) for p in problems]
    trial = FrozenTrial(
        number=index,
        state=state,
        value=None,
        values=values,
        datetime_start=start,
        datetime_complete=complete,
        params=params,
        distributions=distributions,
        user_attrs=user_attrs,
        system_attrs={},
        intermediate_values=steps,
        trial_id=index,
    )
    return trial, []


def _params(
    item: dict[str, Any], space: _Space
) -> tuple[dict[str, Any], dict[str, BaseDistribution], list[ErrorDetail]]:
    params = dict(item.get("params") or {})
    given = item.get("distributions") or {}
    distributions: dict[str, BaseDistribution] = {}
    problems: list[ErrorDetail] = []
    for name, value in params.items():
        distribution, problem = _distribution(name, given, space)
        if distribution is not None and param_problem(name, value, {name: distribution}):
            problem = (("params", name), f"{quote(value)} is outside the search space of {name}")
        if problem is not None:
            loc, msg = problem
            problems.append(ErrorDetail(tuple(_clip(p) for p in loc), msg))
        elif distribution is not None:
            distributions[name] = distribution
    return params, distributions, problems


def _distribution(
    name: str, given: dict[str, Any], space: _Space
) -> tuple[BaseDistribution | None, tuple[Loc, str] | None]:
    """The distribution a parameter is checked against and stored with, or why none."""
    if name in space.distributions:
        return space.distributions[name], None
    if len(name) > MAX_NAME_LENGTH:
        return None, (("params", name), f"names are at most {MAX_NAME_LENGTH} characters")
    if not space.define_by_run:
        known = ", ".join(sorted(space.distributions)[:10]) or "empty"
        return None, (("params", name), f"not in the spec's search space ({_clip(known)})")
    # A python: task's own suggest_* call: the document's distribution is all there is.
    if name not in given:
        return None, (("distributions", name), "missing for a parameter the spec does not list")
    try:
        return json_to_distribution(str(given[name])), None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None, (("distributions", name), "not an Optuna distribution")


def _values(
    values: Any, state: TrialState, n_objectives: int
) -> tuple[list[float] | None, list[ErrorDetail]]:
    if state == TrialState.FAIL or (state == TrialState.PRUNED and values is None):
        return None, []  # Optuna keeps no values for these
    if not isinstance(values, list) or len(values) != n_objectives:
        wanted = f"{n_objectives} number{'' if n_objectives == 1 else 's'}"
        return None, [ErrorDetail(("values",), f"a {state.name} trial needs {wanted}")]
    problems = [
        ErrorDetail(("values", i), "must be a finite number")
        for i, v in enumerate(values)
        if not (_is_number(v) and math.isfinite(v))
    ]
    return (None, problems) if problems else ([float(v) for v in values], [])


def _intermediate_values(
    steps: dict[str, Any],
) -> tuple[dict[int, float], list[ErrorDetail]]:
    curve: dict[int, float] = {}
    problems = []
    for key, value in steps.items():
        loc = ("intermediate_values", _clip(str(key)))
        if not (_STEP.fullmatch(str(key)) and int(key) <= MAX_STEP):
            problems.append(ErrorDetail(loc, f"steps are whole numbers from 0 to {MAX_STEP}"))
        elif value is not None and not _is_number(value):
            problems.append(ErrorDetail(loc, "must be a number or null"))
        else:
            curve[int(key)] = math.nan if value is None else float(value)
    return curve, problems


def _user_attrs(
    index: int, attrs: dict[str, Any], dropped: _Dropped
) -> tuple[dict[str, Any], list[ErrorDetail]]:
    kept: dict[str, Any] = {}
    problems = []
    for key, value in attrs.items():
        if key.startswith(SERVICE_ATTR_PREFIX):
            dropped.add(index, key)
        elif len(key) > MAX_NAME_LENGTH:
            message = f"names are at most {MAX_NAME_LENGTH} characters"
            problems.append(ErrorDetail(("user_attrs", _clip(key)), message))
        else:
            kept[key] = value
    return kept, problems


def _times(item: dict[str, Any]) -> tuple[Times, list[ErrorDetail]]:
    times: list[datetime | None] = []
    problems = []
    for name in ("datetime_start", "datetime_complete"):
        try:
            times.append(_utc(item.get(name)))
        except (ValueError, TypeError):
            times.append(None)
            problems.append(ErrorDetail((name,), "not an ISO 8601 date and time"))
            continue
        if times[-1] is None:
            problems.append(ErrorDetail((name,), "required for a finished trial"))
    start, complete = times
    if start is not None and complete is not None and complete < start:
        problems.append(ErrorDetail(("datetime_complete",), "before datetime_start"))
    return (start, complete), problems


def _utc(value: Any) -> datetime | None:
    """A naive UTC time, as Optuna stores it."""
    if value is None or value == "":
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is None else parsed.astimezone(UTC).replace(tzinfo=None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _clip(part: str | int) -> str | int:
    """A part of a location, cut like :func:`quote` when it is a long name."""
    return part if isinstance(part, int) else shorten(part)
