"""How far a study is, in words: elapsed time, an ETA, running trials, worker warnings.

The CLI's ``watch`` and ``Study.wait`` show the same numbers, computed here from
the API's study view, its running trials and ``GET /workers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hpo.models import parse_time

TERMINAL = frozenset({"completed", "cancelled", "failed"})
WORKER_GRACE = timedelta(seconds=10)


@dataclass(frozen=True)
class RunningTrial:
    """A running trial's latest report of the objective (None before its first)."""

    number: int
    step: int | None
    value: float | None
    worker: str | None


@dataclass(frozen=True)
class Progress:
    """One moment of a study's progress."""

    name: str
    status: str
    finished: int
    n_trials: int
    active: int
    elapsed: timedelta | None
    eta: timedelta | None
    best: float | None
    running: list[RunningTrial]
    warning: str | None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def summary(self) -> str:
        """``3/8 finished, 2 running, elapsed 1m05s, ETA 1m48s, best 0.91``."""
        parts = [f"{self.finished}/{self.n_trials} finished", f"{self.active} running"]
        if self.timing():
            parts.append(self.timing())
        if self.best is not None:
            parts.append(f"best {self.best:.4g}")
        return ", ".join(parts)

    def timing(self) -> str:
        """``elapsed 1m05s, ETA 1m48s`` (what is known of it; empty before the first claim)."""
        parts = []
        if self.elapsed is not None:
            parts.append(f"elapsed {format_duration(self.elapsed)}")
        if self.eta is not None and not self.done:
            parts.append(f"ETA {format_duration(self.eta)}")
        return ", ".join(parts)

    def running_summary(self) -> str:
        """``#4 step 120: 0.83  #5 (no report yet)``: the running trials' latest metric."""
        return "  ".join(_running_text(t) for t in self.running)


def _running_text(trial: RunningTrial) -> str:
    if trial.step is None:
        return f"#{trial.number} (no report yet)"
    value = "-" if trial.value is None else f"{trial.value:.4g}"
    return f"#{trial.number} step {trial.step}: {value}"


def format_duration(duration: timedelta) -> str:
    """``42s``, ``3m05s``, ``2h03m``."""
    seconds = max(0, int(duration.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def measure(
    study: dict[str, Any],
    running: list[dict[str, Any]],
    workers: list[dict[str, Any]] | None,
    now: datetime | None = None,
) -> Progress:
    """The progress of ``study`` (the API's study view).

    ``running`` are its RUNNING trials; ``workers`` the live workers from
    ``GET /workers`` (None when they could not be read: no warning then).
    """
    now = now or datetime.now(UTC)
    budget = study["budget"]
    finished, n_trials = int(budget["finished"]), int(budget["n_trials"])
    started = parse_time(study.get("started_at"))
    ended = parse_time(study.get("finished_at"))
    elapsed = ((ended or now) - started) if started else None
    best = study.get("best") or {}
    return Progress(
        name=study["name"],
        status=study["status"],
        finished=finished,
        n_trials=n_trials,
        active=int(budget["active"]),
        elapsed=elapsed,
        eta=_eta(elapsed, finished, n_trials, budget.get("stop_reason")),
        best=best.get("value"),
        running=[_latest(t) for t in running if t.get("state") == "RUNNING"],
        warning=worker_warning(study, workers, now),
    )


def _eta(
    elapsed: timedelta | None, finished: int, n_trials: int, stop_reason: str | None
) -> timedelta | None:
    # Trials so far predict the rest; before the first finishes there is nothing to go on.
    if elapsed is None or finished <= 0 or finished >= n_trials or stop_reason:
        return None
    return elapsed * ((n_trials - finished) / finished)


def _latest(trial: dict[str, Any]) -> RunningTrial:
    curve = trial.get("intermediate_values") or {}
    step = max((int(s) for s in curve), default=None)
    return RunningTrial(
        number=int(trial["number"]),
        step=step,
        value=curve.get(str(step)) if step is not None else None,
        worker=trial.get("worker"),
    )


def worker_warning(
    study: dict[str, Any], workers: list[dict[str, Any]] | None, now: datetime | None = None
) -> str | None:
    """Why nothing may run: no live worker, or every live one busy with other studies.

    Quiet for the first ``WORKER_GRACE`` after the study was created: a worker
    started with it needs a moment to register.
    """
    if workers is None or study["status"] not in ("queued", "running"):
        return None
    created = parse_time(study.get("created_at"))
    if created and (now or datetime.now(UTC)) - created < WORKER_GRACE:
        return None
    if study["budget"]["active"] > 0 or study["budget"].get("stop_reason"):
        return None
    if not workers:
        return (
            "no live worker: nothing will run until one starts "
            f"(`hpo worker` on a machine that reaches this study's databases, "
            f"or `hpo worker --study {study['name']}`)"
        )
    busy = [w for w in workers if w.get("study") and w["study"] != study["name"]]
    if len(busy) == len(workers):
        others = sorted({str(w["study"]) for w in busy})
        return (
            f"all {len(workers)} live workers are running other studies "
            f"({', '.join(others)}); trials start when a slot frees up or a worker is added"
        )
    return None
