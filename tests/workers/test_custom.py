"""Custom tasks: only functions defined in an allowed module run."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.spec import TaskSpec
from workers.tasks.custom import TaskImportError, load_custom

MODULE = """
import os
from os import system
from subprocess import run
from functools import partial

from tests.objectives import quadratic


def objective(ctx):
    return {"loss": 0.0}


class Task:
    def __call__(self, ctx):
        return {"loss": 0.0}


task = Task()
bound = partial(objective)
"""


@pytest.fixture
def allowed_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "custom_probe.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "custom_probe"


def test_only_functions_defined_in_the_module_load(allowed_module: str) -> None:
    assert load_custom(allowed_module, "objective", [allowed_module]).__name__ == "objective"
    for name in ("system", "run", "quadratic", "os", "task", "bound", "Task", "missing"):
        with pytest.raises(TaskImportError, match=f"defines no function {name!r}"):
            load_custom(allowed_module, name, [allowed_module])


def test_modules_outside_the_allowed_prefixes_are_refused(allowed_module: str) -> None:
    with pytest.raises(TaskImportError, match="not allowed"):
        load_custom("os", "system", [allowed_module])
    with pytest.raises(TaskImportError, match="not allowed"):
        load_custom(allowed_module + "_other", "objective", [allowed_module])


@pytest.mark.parametrize(
    "name",
    [
        "python:tests.objectives:quadratic\n",
        "python:tests.objectives:quadratic\n\n",
        "python:tests.objectives:quadratic ",
        " python:tests.objectives:quadratic",
        "python:tests.objectives:quadratic:extra",
        "python:tests..objectives:quadratic",
    ],
)
def test_task_names_are_matched_whole(name: str) -> None:
    assert TaskSpec(name=name).python_target is None
    assert TaskSpec(name=name.strip()).python_target in (None, ("tests.objectives", "quadratic"))
