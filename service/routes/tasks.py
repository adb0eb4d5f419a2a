"""``/tasks``: built-in tasks, their config schema and default search space."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.deps import ReadDep
from service.responses import errors_for
from service.schemas import FidelityOut, HyperParameterOut, TaskList, TaskOut
from storage.tasks import AnyParam, TaskDeclaration, all_declarations

router = APIRouter(prefix="/tasks", tags=["tasks"])


def task_view(declaration: TaskDeclaration) -> TaskOut:
    return TaskOut(
        name=declaration.name,
        description=declaration.description,
        metrics=list(declaration.metrics),
        config_schema=declaration.config_model.model_json_schema(),
        default_search_space=_space_view(declaration.default_search_space()),
        default_search_spaces={
            name: _space_view(space) for name, space in declaration.default_search_spaces().items()
        },
        hyperparameters={
            name: HyperParameterOut(
                kind=h.kind,
                default=h.default,
                description=h.description,
                choices=list(h.choices) if h.choices else None,
            )
            for name, h in declaration.hyperparameters.items()
        },
        fidelity=FidelityOut(unit=declaration.fidelity.unit, maximum=declaration.fidelity.maximum),
    )


def _space_view(space: dict[str, AnyParam]) -> dict[str, Any]:
    return {
        name: param.model_dump(mode="json", exclude_defaults=True) | {"type": param.type}
        for name, param in space.items()
    }


@router.get("", response_model=TaskList, responses=errors_for(401, 403))
def list_tasks(_: ReadDep) -> TaskList:
    """Every built-in task (custom tasks are ``python:module:function``)."""
    return TaskList(items=[task_view(d) for d in all_declarations()])
