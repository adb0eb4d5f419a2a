"""Ending the MLflow runs of trials whose worker can no longer end them.

A worker killed mid-trial leaves its run RUNNING; the reaper settles the
lease (lost, or counted when Optuna had been told). The sweep finds the
study's trial runs still RUNNING, maps each back to its lease through the
``hpo.lease_id`` tag (so a run whose id never reached the lease row is found
too), and ends those whose lease has ended the way the lease did.
"""

from __future__ import annotations

import logging

from mlflow.entities import Run, RunTag
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from storage.db import Database
from storage.tracking_rows import LeaseEnd, lease_ends, record_lease_run
from workers.tracking.run_tags import (
    TAG_ERROR,
    TAG_FAIL_REASON,
    TAG_KIND,
    TAG_LEASE_ID,
    TAG_STATE,
    TRIAL_RUN_STATUS,
    clip,
    now_ms,
)

logger = logging.getLogger(__name__)
RUNNING_TRIALS = f"attributes.status = 'RUNNING' and tags.`{TAG_KIND}` = 'trial'"
MAX_RUNS = 1000


def run_end_of(end: LeaseEnd) -> tuple[str, dict[str, str]]:
    """The run status and ``hpo.*`` tags that match how the lease ended."""
    state = end.outcome if end.outcome in TRIAL_RUN_STATUS else TrialState.FAIL.name
    tags = {TAG_STATE: state}
    if end.fail_reason:
        tags[TAG_FAIL_REASON] = end.fail_reason
    if end.error:
        tags[TAG_ERROR] = clip(end.error)
    return TRIAL_RUN_STATUS[state], tags


def sweep_study(client: MlflowClient, db: Database, study_id: int, experiment_id: str) -> int:
    """End the study's RUNNING trial runs whose lease is no longer active; how many were ended.

    Runs of active leases are left alone: their worker is still at work.
    """
    runs = client.search_runs([experiment_id], filter_string=RUNNING_TRIALS, max_results=MAX_RUNS)
    if not runs:
        return 0
    lease_ids = {n for run in runs if (n := _lease_id(run)) is not None}
    run_ids = {run.info.run_id for run in runs}
    with db.session_scope(read_only=True) as session:
        ends = lease_ends(session, study_id, lease_ids, run_ids)
    by_lease = {end.id: end for end in ends}
    by_run = {end.mlflow_run_id: end for end in ends if end.mlflow_run_id}
    ended = 0
    for run in runs:
        run_id = run.info.run_id
        lease_id = _lease_id(run)
        end = by_lease.get(lease_id) if lease_id is not None else by_run.get(run_id)
        if end is None or end.active:
            continue
        end_run(client, run_id, end)
        if end.mlflow_run_id is None:
            with db.session_scope() as session:
                record_lease_run(session, end.id, run_id)
        ended += 1
    if ended:
        logger.info("ended %d MLflow run(s) of trials that ended without their worker", ended)
    return ended


def end_run(client: MlflowClient, run_id: str, end: LeaseEnd) -> None:
    status, tags = run_end_of(end)
    tags["hpo.ended_by"] = "sweep"
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    end_ms = int(end.finished_at.timestamp() * 1000) if end.finished_at else now_ms()
    client.set_terminated(run_id, status, end_time=end_ms)


def _lease_id(run: Run) -> int | None:
    raw = run.data.tags.get(TAG_LEASE_ID)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
