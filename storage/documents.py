"""Bounds on user documents (specs, request bodies) checked before any other work.

Everything else that reads a document (pydantic, the JSON encoder, the
database) recurses into it or converts its numbers, so its shape is bounded
first, by one iterative walk that cannot itself run out of stack:

- nesting at most ``MAX_DEPTH`` levels (deeper documents exhaust the stack
  of the encoders, which answered 500);
- integers within 64 bits (Optuna, Postgres and JSON clients use floats or
  int64; a 400-digit integer broke them);
- finite floats (Python's JSON parser accepts ``NaN``, Postgres refuses it);
- no NUL characters (databases cannot store them).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

Path = tuple[str | int, ...]
MAX_DEPTH = 32
MAX_INT = 2**63 - 1
# Every problem is located; past this many, the rest add nothing for the user.
MAX_PROBLEMS = 20


def document_problems(document: Any) -> list[tuple[Path, str]]:
    """``(path, message)`` for each value that the service refuses to store."""
    problems: list[tuple[Path, str]] = []
    stack: list[tuple[Any, Path]] = [(document, ())]
    while stack and len(problems) < MAX_PROBLEMS:
        value, path = stack.pop()
        if isinstance(value, dict | list | tuple) and len(path) >= MAX_DEPTH:
            problems.append((path, f"nested deeper than {MAX_DEPTH} levels"))
            continue
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    problems.append(((*path, key), "NUL characters are not allowed"))
                stack.append((item, (*path, str(key))))
        elif isinstance(value, list | tuple):
            stack.extend((item, (*path, index)) for index, item in enumerate(value))
        else:
            problem = _scalar_problem(value)
            if problem:
                problems.append((path, problem))
    return problems


def _scalar_problem(value: Any) -> str:
    if isinstance(value, str) and "\x00" in value:
        return "NUL characters are not allowed"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return f"integers must lie within ±{MAX_INT}"
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite"
    return ""


def check_document(data: Any, title: str = "input") -> Any:
    """A ``mode="before"`` validator body: refuse documents the service cannot store.

    Raises:
        ValidationError: one located error per problem (at most ``MAX_PROBLEMS``).
    """
    found = document_problems(data)
    if found:
        details = [
            InitErrorDetails(
                type=PydanticCustomError("unstorable_value", message), loc=path, input=None
            )
            for path, message in sorted(found, key=lambda item: [str(p) for p in item[0]])
        ]
        raise ValidationError.from_exception_data(title, details)
    return data
