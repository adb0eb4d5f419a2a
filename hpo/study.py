"""A study on the service, as a Python object (Optuna's names where they fit)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hpo._http import Http
from hpo.errors import ApiError
from hpo.models import Trial, parse_time
from hpo.progress import Progress, measure

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)
TRIAL_STATES = ("RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL")


class Study:
    """A study: its status and budget, its trials, and the calls that change it.

    Attributes are a snapshot of the last read; :meth:`refresh` reads again.
    """

    def __init__(self, http: Http, data: dict[str, Any]) -> None:
        self._http = http
        self._data = data

    def __repr__(self) -> str:
        budget = self._data.get("budget") or {}
        return (
            f"<Study {self.name!r} {self.status} "
            f"{budget.get('finished', '?')}/{budget.get('n_trials', '?')} finished>"
        )

    @property
    def name(self) -> str:
        return str(self._data["name"])

    @property
    def status(self) -> str:
        """``queued running paused completed cancelled failed``."""
        return str(self._data["status"])

    @property
    def status_reason(self) -> str | None:
        return self._data.get("status_reason")

    @property
    def spec(self) -> dict[str, Any]:
        """The stored study spec (read once; :meth:`refresh` for a list entry)."""
        if "spec" not in self._data:
            self.refresh()
        return dict(self._data["spec"])

    @property
    def budget(self) -> dict[str, Any]:
        """n_trials, finished, active, lost, compute used, and why it stops (``stop_reason``)."""
        return dict(self._data["budget"])

    @property
    def counts(self) -> dict[str, int]:
        """Trials by state (Optuna's names); read on demand for a list entry."""
        if "counts" not in self._data:
            self.refresh()
        return dict(self._data["counts"])

    @property
    def links(self) -> dict[str, str | None]:
        """The dashboard and MLflow UI pages of the study, where those are configured."""
        if "links" not in self._data:
            self.refresh()
        return dict(self._data["links"])

    @property
    def created_at(self) -> datetime | None:
        return parse_time(self._data.get("created_at"))

    @property
    def directions(self) -> list[str]:
        spec = self.spec
        objectives = spec.get("objectives") or [spec.get("objective")]
        return [str(o["direction"]) for o in objectives if o]

    @property
    def is_finished(self) -> bool:
        return self.status in ("completed", "cancelled", "failed")

    def refresh(self) -> Study:
        """Read the study again; returns itself."""
        self._data = self._http.get(f"/studies/{self.name}")
        return self

    def progress(self) -> Progress:
        """Elapsed time, ETA, running trials' latest metric; a warning when no worker serves it."""
        self.refresh()
        running = list(self._http.pages(f"/studies/{self.name}/trials", state="RUNNING"))
        try:
            workers = self._http.get("/workers")["items"]
        except ApiError:
            workers = None  # a read token may not see workers everywhere; no warning then
        return measure(self._data, running, workers)

    def wait(
        self, timeout: float | None = None, progress: bool = True, interval: float = 2.0
    ) -> Study:
        """Block until the study has ended (completed, cancelled, failed) and no trial runs.

        Returns the study. With ``progress``, a progress bar (terminal or notebook) shows
        the trials finished, the ETA, the best value and the running trials.

        Raises:
            TimeoutError: still not finished after ``timeout`` seconds.
            ApiError: the API refused or could not be reached.
        """
        from hpo.bar import ProgressBar

        deadline = None if timeout is None else time.monotonic() + timeout
        bar = ProgressBar(self.name) if progress else None
        warned: set[str] = set()
        try:
            while True:
                state = self.progress()
                if bar is not None:
                    bar.update(state)
                if state.warning and state.warning not in warned:
                    warned.add(state.warning)
                    logger.warning("study %s: %s", self.name, state.warning)
                if state.done and state.active == 0:
                    return self
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"study {self.name!r} is still {self.status} after {timeout}s "
                        f"({state.summary()})"
                    )
                pause = interval if deadline is None else min(interval, deadline - time.monotonic())
                time.sleep(max(0.0, pause))
        finally:
            if bar is not None:
                bar.close()

    @property
    def best_trial(self) -> Trial | None:
        """The best finished trial (None while none has completed).

        Raises:
            ValueError: the study has several objectives (use :attr:`pareto_front`).
        """
        try:
            best = self._http.get(f"/studies/{self.name}/best")
        except ApiError as exc:
            if exc.status == 404 and "completed yet" in exc.message:
                return None
            raise
        if "pareto_front" in best:
            raise ValueError(
                f"study {self.name!r} has several objectives: use .pareto_front instead"
            )
        return Trial.from_api(self.name, best, best=True)

    @property
    def best_value(self) -> float | None:
        best = self.best_trial
        return best.value if best else None

    @property
    def best_params(self) -> dict[str, Any] | None:
        best = self.best_trial
        return best.params if best else None

    @property
    def pareto_front(self) -> list[Trial]:
        """The Pareto-optimal trials (for one objective: the best trial alone)."""
        try:
            best = self._http.get(f"/studies/{self.name}/best")
        except ApiError as exc:
            if exc.status == 404 and "completed yet" in exc.message:
                return []
            raise
        if "pareto_front" in best:
            return [Trial.from_api(self.name, t) for t in best["pareto_front"]]
        return [Trial.from_api(self.name, best, best=True)]

    def trials(self, state: str | None = None) -> list[Trial]:
        """Every trial (all pages), in order of number; ``state`` filters by Optuna state.

        Raises:
            ValueError: ``state`` is not one of RUNNING WAITING COMPLETE PRUNED FAIL.
        """
        if state is not None and state.upper() not in TRIAL_STATES:
            raise ValueError(f"unknown trial state {state!r}: use one of {', '.join(TRIAL_STATES)}")
        items = self._http.pages(
            f"/studies/{self.name}/trials", state=state.upper() if state else None
        )
        return [Trial.from_api(self.name, t) for t in items]

    def trial(self, number: int) -> Trial:
        """One trial by number (its params, learning curve, error, MLflow run)."""
        return Trial.from_api(self.name, self._http.get(f"/studies/{self.name}/trials/{number}"))

    def trials_dataframe(self, state: str | None = None) -> pd.DataFrame:
        """The trials as a pandas DataFrame with Optuna's column names.

        Columns: ``number``, ``value`` (``values_0``, ``values_1``, ... for
        several objectives), ``datetime_start``, ``datetime_complete``,
        ``duration``, ``params_<name>``, ``user_attrs_<name>``, ``state``, and
        the service's ``worker``, ``device``, ``fail_reason``, ``mlflow_run_id``.
        """
        from hpo.frames import trials_frame

        return trials_frame(self.trials(state), len(self.directions))

    def importance(self, metric: str | None = None) -> dict[str, float]:
        """Hyperparameter importances for ``metric`` (default: the first objective).

        Raises:
            ApiError: 409 while fewer than two completed trials differ in their parameters.
            KeyError: ``metric`` is not one of the study's objectives.
        """
        items = self._http.get(f"/studies/{self.name}/importance")["items"]
        by_metric = {item["metric"]: dict(item["importances"]) for item in items}
        if metric is None:
            return dict(items[0]["importances"]) if items else {}
        if metric not in by_metric:
            raise KeyError(f"{metric!r} is not an objective of {self.name!r}: {list(by_metric)}")
        return by_metric[metric]

    def enqueue(self, params: dict[str, Any]) -> dict[str, Any]:
        """Run this configuration next (some or all search-space parameters); the API's answer."""
        answer: dict[str, Any] = self._http.post(f"/studies/{self.name}/trials", {"params": params})
        return answer

    def pause(self) -> Study:
        """Stop starting trials (running ones finish); pausing a paused study does nothing."""
        return self._transition("pause", "paused")

    def resume(self) -> Study:
        """Start trials again; resuming a study that is not paused does nothing."""
        return self._transition("resume", "queued", "running")

    def cancel(self) -> Study:
        """Stop the study; running trials stop at their next report."""
        return self._transition("cancel", "cancelled")

    def delete(self) -> None:
        """Delete the study and its trials (ApiError 409 while trials run)."""
        self._http.request("DELETE", f"/studies/{self.name}")

    def export(self) -> dict[str, Any]:
        """The study as a document :meth:`hpo.Client.import_study` recreates elsewhere."""
        document: dict[str, Any] = self._http.get(f"/studies/{self.name}/export")
        return document

    def _transition(self, action: str, *already: str) -> Study:
        try:
            self._data = self._http.post(f"/studies/{self.name}/{action}")
        except ApiError as exc:
            if exc.status != 409:
                raise
            # Already there (or got there meanwhile): the wish is met.
            if self.refresh().status not in already:
                raise
        return self
