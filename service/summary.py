"""What the study view reads from Optuna's trials, kept per API process.

Counting a study's trials by state and finding its best one read Optuna's
tables, whose cost grows with the study; under many clients that was most of
``GET /studies/{name}``. The study view reads the study's own row on every
request anyway, and that row changes with every claim, settled result, reap,
enqueue and status change (its counters and ``updated_at``). So the
Optuna-derived part is computed once per version of that row and reused
until the row changes or ``max_age_s`` passes; the age bound covers the one
change no row records, a worker's ask turning a WAITING trial RUNNING, so
the counts are never more than ``max_age_s`` behind Optuna.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from service.bounded_map import BoundedMap
from service.schemas import TrialOut
from storage.models import Study

# How long a summary may be reused while its study's row has not changed.
SUMMARY_MAX_AGE_S = 1.0
MAX_CACHED_STUDIES = 1024


@dataclass(frozen=True)
class TrialSummary:
    """Trial counts by Optuna state, the best trial's view and what pruning saved."""

    counts: dict[str, int]
    best: TrialOut | None
    compute_saved_s: float | None


def study_version(study: Study) -> Hashable:
    """What changes whenever the service settles, claims, reaps or enqueues a trial of ``study``."""
    return (
        study.optuna_study_id,
        study.updated_at,
        study.status,
        study.n_claims,
        study.n_active,
        study.n_finished,
        study.n_lost,
        study.mlflow_experiment_id,
    )


@dataclass
class _Entry:
    version: Hashable = None
    computed_at: float = float("-inf")
    summary: TrialSummary | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class SummaryCache:
    """Trial summaries by study id, computed at most once per study version and age."""

    def __init__(
        self,
        max_age_s: float = SUMMARY_MAX_AGE_S,
        max_entries: int = MAX_CACHED_STUDIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._entries: BoundedMap[int, _Entry] = BoundedMap(max_entries)

    def get(self, study: Study, compute: Callable[[], TrialSummary]) -> TrialSummary:
        """The summary of ``study`` as of its row: reused, or ``compute()`` once for all callers."""
        version = study_version(study)
        entry = self._entries.get_or_add(study.id, _Entry)
        # One caller computes; the others wait for its result instead of scanning too.
        with entry.lock:
            if entry.summary is None or not self._fresh(entry, version):
                started = self._clock()
                entry.summary = compute()
                entry.version, entry.computed_at = version, started
            return entry.summary

    def _fresh(self, entry: _Entry, version: Hashable) -> bool:
        return entry.version == version and self._clock() - entry.computed_at < self.max_age_s
