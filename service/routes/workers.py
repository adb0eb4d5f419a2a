"""``/workers``: live worker slots and what they run."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ReadDep, StateDep
from service.responses import errors_for
from service.schemas import WorkerList
from service.views import worker_view
from storage.workers import live_workers

router = APIRouter(prefix="/workers", tags=["workers"])


@router.get("", response_model=WorkerList, responses=errors_for(401, 403, 503))
def list_workers(state: StateDep, _: ReadDep) -> WorkerList:
    """Workers whose heartbeat is within the grace period."""
    with state.db.session_scope(read_only=True) as session:
        workers = live_workers(session, state.settings.heartbeat_grace_s)
        items = [worker_view(w) for w in workers]
    return WorkerList(items=items, total=len(items))
