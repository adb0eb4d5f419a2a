"""What the MLflow runs of studies and trials carry: tag names, run statuses, value limits.

Tags that repeat an Optuna user attribute use that attribute's name (the
``ATTR_*`` constants of :mod:`storage.optuna_store`), so a trial reads the
same in the Optuna dashboard and in MLflow.
"""

from __future__ import annotations

import time

from optuna.trial import TrialState

from storage.models import StudyStatus
from storage.optuna_store import ATTR_ERROR, ATTR_FAIL_REASON, ATTR_RETRY_OF, ATTR_SEED

MAX_TAG_CHARS = 5000

TAG_KIND = "hpo.kind"  # "study" (the parent run) or "trial"
TAG_STUDY = "hpo.study"
TAG_STUDY_ID = "hpo.study_id"
TAG_KEY = "hpo.key"
TAG_LEASE_ID = "hpo.lease_id"
TAG_TRIAL_NUMBER = "hpo.trial_number"
TAG_STATE = "hpo.state"
TAG_FAIL_REASON = ATTR_FAIL_REASON
TAG_ERROR = ATTR_ERROR
TAG_RETRY_OF = ATTR_RETRY_OF
TAG_SEED = ATTR_SEED
# On a registered model version: the objective value and trial it came from.
TAG_OBJECTIVE = "hpo.objective"
TAG_TRIAL = "hpo.trial"

# How a trial's Optuna state shows as the status of its MLflow run.
TRIAL_RUN_STATUS = {
    TrialState.COMPLETE.name: "FINISHED",
    TrialState.PRUNED.name: "KILLED",
    TrialState.FAIL.name: "FAILED",
}
# How an ended study's status shows as the status of its parent run.
STUDY_RUN_STATUS = {
    StudyStatus.COMPLETED: "FINISHED",
    StudyStatus.FAILED: "FAILED",
    StudyStatus.CANCELLED: "KILLED",
}


def now_ms() -> int:
    return int(time.time() * 1000)


def clip(value: object) -> str:
    """``value`` as a tag or param value MLflow accepts (at most ``MAX_TAG_CHARS``)."""
    return str(value)[:MAX_TAG_CHARS]
