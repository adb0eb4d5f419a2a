"""A real worker slot process that dies (``os._exit``) at a chosen point of a trial.

``python -m tests.faults POINT [slot arguments]`` runs ``python -m workers.slot``
with one function of the trial's path wrapped so that the process exits
abruptly, as a SIGKILL would, at that moment (the first time it is reached):

- ``before-ask``: a slot is claimed, no Optuna trial exists yet;
- ``after-ask``: Optuna created the trial (marked with its lease), no parameter is
  suggested and the lease does not know the trial;
- ``before-attach``: the trial carries its lease id, the lease does not know the trial;
- ``before-settle``: Optuna was told the result, the lease is not settled.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import workers.trial
from workers import slot

EXIT_CODE = 137


def _dying(call: Callable[..., Any], *, after: bool) -> Callable[..., Any]:
    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not after:
            os._exit(EXIT_CODE)
        result = call(*args, **kwargs)
        os._exit(EXIT_CODE)
        return result  # pragma: no cover

    return wrapper


def install(point: str) -> None:
    if point == "before-ask":
        workers.trial._ask = _dying(workers.trial._ask, after=False)  # type: ignore[assignment]
    elif point == "after-ask":
        workers.trial.ask_trial = _dying(workers.trial.ask_trial, after=True)  # type: ignore[assignment]
    elif point == "before-attach":
        workers.trial._attach = _dying(workers.trial._attach, after=False)  # type: ignore[assignment]
    elif point == "before-settle":
        workers.trial.finish_lease = _dying(workers.trial.finish_lease, after=False)  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown fault point {point!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    sys.exit(slot.main(sys.argv[2:]))
