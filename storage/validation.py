"""Checks of a spec that depend on its task, sampler and pruner.

:func:`validate_spec` is the one entry point: it returns the *resolved* spec
(the task's defaults filled in) that is stored and that workers rebuild from.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from storage.errors import ErrorDetail, InvalidSpecError, quote
from storage.optimizers import check_pruner, check_sampler
from storage.paths import check_confined, looks_like_path
from storage.spec import (
    CategoricalParam,
    FloatParam,
    ObjectiveSpec,
    StudySpec,
    details_from_validation_error,
    parse_spec,
)
from storage.tasks import AnyParam, HyperParameter, TaskDeclaration, get_declaration
from storage.tasks.seq2seq import HubPairDataset
from storage.tasks.text import HubTextDataset


@dataclass(frozen=True)
class ValidationPolicy:
    """What the operator allows specs to reach."""

    allowed_task_modules: list[str] = field(default_factory=list)
    dataset_roots: list[Path] = field(default_factory=list)


def validate_spec(data: Any, policy: ValidationPolicy) -> StudySpec:
    """Validate a spec document and fill in the task's defaults.

    Raises:
        InvalidSpecError: listing every problem with the path of its field.
    """
    return resolve_spec(parse_spec(data), policy)


def resolve_spec(spec: StudySpec, policy: ValidationPolicy) -> StudySpec:
    """Check a structurally valid spec against its task, sampler and pruner.

    Raises:
        InvalidSpecError: listing every problem with the path of its field.
    """
    declaration, errors = _check_task_name(spec, policy)
    if declaration is not None:
        spec, config_errors = _resolve_task_defaults(spec, declaration)
        errors += config_errors
        if not config_errors:
            errors += _check_against_task(spec, declaration, policy)
    elif not spec.objective_list and not errors:
        errors.append(ErrorDetail(("objective",), "a custom task needs an objective"))
    errors += _check_stopping(spec)
    if spec.pruner is None:
        spec = spec.model_copy(update={"pruner": spec.default_pruner})
    if not errors:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            errors += check_sampler(spec) + check_pruner(spec)
    if errors:
        raise InvalidSpecError("invalid study spec", errors)
    return spec


def _check_stopping(spec: StudySpec) -> list[ErrorDetail]:
    errors = []
    if spec.budget.stop_when is not None and spec.is_multi_objective:
        errors.append(
            ErrorDetail(("budget", "stop_when"), "study-level stopping needs a single objective")
        )
    if spec.warm_start is not None and spec.warm_start.from_study == spec.name:
        errors.append(ErrorDetail(("warm_start", "from_study"), "name another study to start from"))
    return errors


def is_allowed_module(module: str, prefixes: list[str]) -> bool:
    """Whether ``python:module:function`` tasks may come from ``module``.

    A prefix allows itself and its submodules (``pkg`` allows ``pkg.tasks``,
    not ``pkg2``). The API checks specs with the service's prefixes and every
    worker again with its own before importing anything.
    """
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _check_task_name(
    spec: StudySpec, policy: ValidationPolicy
) -> tuple[TaskDeclaration | None, list[ErrorDetail]]:
    loc = ("task", "name")
    target = spec.task.python_target
    if target is not None:
        module = target[0]
        allowed = policy.allowed_task_modules
        if not is_allowed_module(module, allowed):
            return None, [
                ErrorDetail(
                    loc,
                    f"module {quote(module)} is not in HPO_ALLOWED_TASK_MODULES "
                    f"({', '.join(allowed) or 'none allowed'})",
                )
            ]
        return None, []
    declaration = get_declaration(spec.task.name)
    if declaration is None:
        return None, [
            ErrorDetail(
                loc,
                f"unknown task {quote(spec.task.name)}; see GET /api/v1/tasks "
                "or use python:module:function",
            )
        ]
    return declaration, []


def _resolve_task_defaults(
    spec: StudySpec, declaration: TaskDeclaration
) -> tuple[StudySpec, list[ErrorDetail]]:
    try:
        config = declaration.config_model.model_validate(spec.task.config)
    except ValidationError as exc:
        return spec, details_from_validation_error(exc, ("task", "config"), spec.task.config)
    task = spec.task.model_copy(update={"config": config.model_dump(mode="json")})
    update: dict[str, Any] = {"task": task}
    if spec.search_space is None:
        update["search_space"] = declaration.default_search_space(config)
    if not spec.objective_list:
        metric = declaration.default_objective
        update["objective"] = ObjectiveSpec(metric=metric, direction=declaration.metrics[metric])
    return spec.model_copy(update=update), []


def _check_against_task(
    spec: StudySpec, declaration: TaskDeclaration, policy: ValidationPolicy
) -> list[ErrorDetail]:
    config = declaration.config_model.model_validate(spec.task.config)
    errors = _check_objectives(spec, declaration, config)
    space = spec.search_space or {}
    for name, param in space.items():
        hyper = declaration.hyperparameters.get(name)
        if hyper is None:
            known = ", ".join(sorted(declaration.hyperparameters))
            errors.append(
                ErrorDetail(
                    ("search_space", name),
                    f"{declaration.name} has no hyperparameter {quote(name)}; known: {known}",
                )
            )
        else:
            errors += _check_param(name, param, hyper)
    if declaration.check is not None:
        errors += declaration.check(config, space)
    errors += _check_paths(config, policy)
    return errors


def _check_objectives(
    spec: StudySpec, declaration: TaskDeclaration, config: BaseModel
) -> list[ErrorDetail]:
    errors = []
    single = spec.objectives is None
    seen: set[str] = set()
    for index, objective in enumerate(spec.objective_list):
        loc: tuple[str | int, ...] = (
            ("objective", "metric") if single else ("objectives", index, "metric")
        )
        if objective.metric not in declaration.metrics:
            errors.append(
                ErrorDetail(
                    loc,
                    f"{declaration.name} does not report {quote(objective.metric)}; "
                    f"it reports {', '.join(declaration.metrics)}",
                )
            )
        elif declaration.metric_problem is not None:
            problem = declaration.metric_problem(config, objective.metric)
            if problem is not None:
                errors.append(ErrorDetail(loc, problem))
        if objective.metric in seen:
            errors.append(ErrorDetail(loc, f"{quote(objective.metric)} is listed twice"))
        seen.add(objective.metric)
    return errors


def _check_param(name: str, param: AnyParam, hyper: HyperParameter) -> list[ErrorDetail]:
    loc = ("search_space", name)
    if isinstance(param, CategoricalParam):
        found = (_check_value((*loc, "choices", i), v, hyper) for i, v in enumerate(param.choices))
        return [detail for detail in found if detail is not None]
    if hyper.kind == "categorical":
        return [
            ErrorDetail(
                (*loc, "type"),
                f"{name} takes one of {list(hyper.choices or ())}; use type: categorical",
            )
        ]
    if hyper.kind == "int" and isinstance(param, FloatParam):
        return [ErrorDetail((*loc, "type"), f"{name} is an integer; use type: int")]
    errors = []
    for bound in ("low", "high"):
        detail = _check_value((*loc, bound), getattr(param, bound), hyper)
        if detail is not None:
            errors.append(detail)
    return errors


def _check_value(
    loc: tuple[str | int, ...], value: object, hyper: HyperParameter
) -> ErrorDetail | None:
    if hyper.kind == "categorical":
        if hyper.choices is not None and value not in hyper.choices:
            return ErrorDetail(loc, f"{quote(value)} is not one of {list(hyper.choices)}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ErrorDetail(loc, f"{quote(value)} is not a number")
    if hyper.kind == "int" and not float(value).is_integer():
        return ErrorDetail(loc, f"{quote(value)} is not an integer")
    if hyper.bounds is not None and not hyper.bounds[0] <= value <= hyper.bounds[1]:
        low, high = hyper.bounds
        return ErrorDetail(loc, f"{quote(value)} is outside the allowed range [{low}, {high}]")
    return None


def _check_paths(config: BaseModel, policy: ValidationPolicy) -> list[ErrorDetail]:
    errors = []
    dataset = getattr(config, "dataset", None)
    if isinstance(dataset, HubTextDataset | HubPairDataset) and looks_like_path(dataset.name):
        errors.append(
            ErrorDetail(
                ("task", "config", "dataset", "name"),
                f"{quote(dataset.name)} is a local folder, not a hub dataset id; read local "
                "files with source: csv, jsonl, parquet or text and a path",
            )
        )
    for key in ("path", "validation_path"):
        value = getattr(dataset, key, None)
        if isinstance(value, str):
            errors += check_confined(
                value, policy.dataset_roots, ("task", "config", "dataset", key)
            )
    model = getattr(config, "model", None)
    name_or_path = getattr(model, "name_or_path", None)
    if isinstance(name_or_path, str) and looks_like_path(name_or_path):
        errors += check_confined(
            name_or_path, policy.dataset_roots, ("task", "config", "model", "name_or_path")
        )
    return errors
