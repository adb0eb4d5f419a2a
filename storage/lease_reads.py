"""Read-only figures from the leases for the API's views (no locks, no counters).

:mod:`storage.budget` changes leases under the study's row lock; what the
views read of them (where a trial ran, what pruning saved) lives here.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.trial import TrialState
from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from storage.models import Lease, LeaseState

PlacementRow = Row[int | None, str | None, str | None, str | None, float | None, int | None]


def trial_placement_rows(
    session: Session, study_id: int, numbers: list[int]
) -> Sequence[PlacementRow]:
    """Worker, device, MLflow run and usage of the leases of these trial numbers.

    In lease order, so that a later lease of a trial number (its retry) comes last.
    """
    return session.execute(
        select(
            Lease.trial_number,
            Lease.worker_id,
            Lease.device,
            Lease.mlflow_run_id,
            Lease.compute_s,
            Lease.train_examples,
        )
        .where(Lease.study_id == study_id, Lease.trial_number.in_(numbers))
        .order_by(Lease.id)
    ).all()


def compute_saved_s(session: Session, study_id: int) -> float | None:
    """Device-seconds pruning saved: per pruned trial, a completed trial's mean minus its own.

    None until a trial has completed (there is nothing to compare with).
    """
    complete, pruned = TrialState.COMPLETE.name, TrialState.PRUNED.name
    query = (
        select(Lease.outcome, func.avg(Lease.compute_s), func.sum(Lease.compute_s), func.count())
        .where(
            Lease.study_id == study_id,
            Lease.state == LeaseState.FINISHED,
            Lease.outcome.in_([complete, pruned]),
            Lease.compute_s.is_not(None),
        )
        .group_by(Lease.outcome)
    )
    stats = {outcome: (avg, total, count) for outcome, avg, total, count in session.execute(query)}
    if complete not in stats:
        return None
    mean_complete = float(stats[complete][0])
    if pruned not in stats:
        return 0.0
    _, pruned_total, pruned_count = stats[pruned]
    return max(0.0, mean_complete * int(pruned_count) - float(pruned_total))
