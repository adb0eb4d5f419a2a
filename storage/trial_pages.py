"""A page of an Optuna study's trials, read for the API without an ORM object per row.

A page of 50 trials with ten reports each is about 700 rows of Optuna's
tables; loaded as ORM objects (``selectinload``) they took most of the
request's time. Here the trial rows are ORM objects (Optuna's own properties
give their start and end times), and the rows around them (params, values,
reports, attributes) are read as plain columns and decoded with Optuna's own
helpers, as ``RDBStorage`` does when it builds a ``FrozenTrial``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from optuna import distributions
from optuna.storages import RDBStorage
from optuna.storages._rdb import models as rdb_models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import func, select
from sqlalchemy.orm import Session

_Rows = dict[int, list[Any]]


def read_trial_page(
    storage: RDBStorage, study_id: int, state: str | None, limit: int, offset: int
) -> tuple[list[FrozenTrial], int]:
    """Trials ``offset`` to ``offset + limit`` in order of number, and how many match."""
    trial = rdb_models.TrialModel
    where = [trial.study_id == study_id]
    if state:
        where.append(trial.state == TrialState[state])
    with storage.scoped_session() as session:
        total = session.scalar(select(func.count()).select_from(trial).where(*where)) or 0
        rows = session.scalars(
            select(trial).where(*where).order_by(trial.number).limit(limit).offset(offset)
        ).all()
        related = _related_rows(session, [row.trial_id for row in rows])
        page = [_frozen_trial(row, related) for row in rows]
    return page, int(total)


def _related_rows(session: Session, trial_ids: Sequence[int]) -> dict[str, _Rows]:
    """Each related table's rows of these trials, by trial id, in Optuna's order."""
    if not trial_ids:
        return {}
    param = rdb_models.TrialParamModel
    value = rdb_models.TrialValueModel
    report = rdb_models.TrialIntermediateValueModel
    user = rdb_models.TrialUserAttributeModel
    system = rdb_models.TrialSystemAttributeModel
    queries: dict[str, tuple[Any, Any]] = {  # (model, select of its columns)
        "params": (
            param,
            select(
                param.trial_id, param.param_name, param.param_value, param.distribution_json
            ).order_by(param.param_id),
        ),
        "values": (
            value,
            select(value.trial_id, value.objective, value.value, value.value_type),
        ),
        "reports": (
            report,
            select(
                report.trial_id,
                report.step,
                report.intermediate_value,
                report.intermediate_value_type,
            ).order_by(report.trial_intermediate_value_id),
        ),
        "user_attrs": (
            user,
            select(user.trial_id, user.key, user.value_json).order_by(user.trial_user_attribute_id),
        ),
        "system_attrs": (
            system,
            select(system.trial_id, system.key, system.value_json).order_by(
                system.trial_system_attribute_id
            ),
        ),
    }
    found: dict[str, _Rows] = {}
    for name, (model, query) in queries.items():
        by_trial: _Rows = defaultdict(list)
        for row in session.execute(query.where(model.trial_id.in_(trial_ids))):
            by_trial[row[0]].append(row[1:])
        found[name] = by_trial
    return found


def _frozen_trial(row: rdb_models.TrialModel, related: dict[str, _Rows]) -> FrozenTrial:
    tid = row.trial_id
    values: list[float] | None = None
    stored_values = related["values"].get(tid, [])
    if stored_values:
        values = [0.0] * len(stored_values)
        for objective, value, value_type in stored_values:
            values[objective] = rdb_models.TrialValueModel.stored_repr_to_value(value, value_type)
    decoded: dict[str, distributions.BaseDistribution] = {}  # by its JSON
    params: dict[str, Any] = {}
    param_distributions: dict[str, distributions.BaseDistribution] = {}
    for name, internal, distribution_json in related["params"].get(tid, []):
        if distribution_json not in decoded:
            decoded[distribution_json] = distributions.json_to_distribution(distribution_json)
        param_distributions[name] = decoded[distribution_json]
        params[name] = param_distributions[name].to_external_repr(internal)
    return FrozenTrial(
        number=row.number,
        state=row.state,
        value=None,
        values=values,
        datetime_start=row.datetime_start,
        datetime_complete=row.datetime_complete,
        params=params,
        distributions=param_distributions,
        user_attrs={key: json.loads(raw) for key, raw in related["user_attrs"].get(tid, [])},
        system_attrs={key: json.loads(raw) for key, raw in related["system_attrs"].get(tid, [])},
        intermediate_values={
            step: rdb_models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
                value, value_type
            )
            for step, value, value_type in related["reports"].get(tid, [])
        },
        trial_id=tid,
    )
