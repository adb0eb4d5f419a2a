"""The code of each built-in task, looked up by the task's name.

Modules are imported on first use: importing torch costs seconds and the
control plane never needs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from workers.context import TrialContext

TaskFunction = Callable[[TrialContext], Mapping[str, float]]

BUILTIN_TASKS: dict[str, str] = {
    "mlp-classifier": "workers.tasks.mlp:run",
    "text-classification": "workers.tasks.text_classification:run",
    "masked-lm": "workers.tasks.masked_lm:run",
    "seq2seq": "workers.tasks.seq2seq:run",
}


def load_builtin(name: str) -> TaskFunction:
    """The function that runs the built-in task ``name``.

    Raises:
        KeyError: no built-in task has that name.
    """
    module_name, _, function = BUILTIN_TASKS[name].partition(":")
    module = importlib.import_module(module_name)
    task: TaskFunction = getattr(module, function)
    return task
