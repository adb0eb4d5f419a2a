"""Custom objectives: ``python:package.module:function`` from allowed modules only.

A study spec must not be a way to run arbitrary code on the workers: the
module must start with one of the prefixes in ``HPO_ALLOWED_TASK_MODULES``
of the *worker* (checked again here, whatever the API allowed), and the
function must be defined in that module, not merely imported into it.
"""

from __future__ import annotations

import importlib
import inspect

from storage.states import FailReason
from storage.validation import is_allowed_module
from workers.errors import TaskError
from workers.tasks import TaskFunction


class TaskImportError(TaskError):
    reason = FailReason.TASK_IMPORT


def load_custom(module: str, function: str, allowed_prefixes: list[str]) -> TaskFunction:
    """Import ``module.function``.

    Raises:
        TaskImportError: the module is not allowed, cannot be imported, or lacks the function.
    """
    if not is_allowed_module(module, allowed_prefixes):
        raise TaskImportError(
            f"module {module!r} is not allowed on this worker (HPO_ALLOWED_TASK_MODULES="
            f"{','.join(allowed_prefixes) or 'unset'})"
        )
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        raise TaskImportError(f"cannot import {module!r} on this worker: {exc}") from None
    found = getattr(loaded, function, None)
    # Only a function written in the allowed module itself: anything it imports
    # (os.system, subprocess.run) must not become a task.
    if not inspect.isfunction(found) or found.__module__ != loaded.__name__:
        raise TaskImportError(f"{module!r} defines no function {function!r}")
    task: TaskFunction = found
    return task
