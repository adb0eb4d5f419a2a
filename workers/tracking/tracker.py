"""The buffered tracker: ops queue in memory, a thread sends them in order.

MLflow down or slow never stops a trial: ops wait in the queue and are
retried with backoff until they succeed. Ops still queued when the process
stops are written to a spool file in ``HPO_DATA_DIR`` and sent by the next
worker that starts there — metrics are never silently dropped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from storage.db import Database
from storage.settings import Settings
from workers.retry import is_transient_remote
from workers.tracking.ops import Executor, Op
from workers.tracking.run_tags import now_ms

logger = logging.getLogger(__name__)
# MLflow's HTTP client retries for minutes by default; this thread retries itself.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
MAX_BACKOFF_S = 30.0
FLUSH_RETRY_S = 1.0


class MlflowTracker:
    def __init__(self, settings: Settings, db: Database, spool_name: str) -> None:
        self.settings = settings
        self.executor = Executor(settings, db)
        self.spool_dir = settings.data_dir / "mlflow-spool"
        self.spool_file = self.spool_dir / f"{spool_name}.jsonl"
        self._queue: deque[Op] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._flushing = False  # someone waits for the queue to drain: retry soon
        self._down_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name="mlflow-tracker", daemon=True)
        self._load_spools()
        self._thread.start()

    # -- what workers call -------------------------------------------------
    def put(self, op: Op) -> None:
        with self._cond:
            self._queue.append(op)
            self._cond.notify()

    def start_trial(
        self,
        study: str,
        number: int,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
        *,
        lease_id: int | None,
        study_id: int | None = None,
    ) -> str:
        key = f"{study}/{number}/{uuid.uuid4().hex[:8]}"
        self.put(
            Op(
                "start_trial",
                study,
                key,
                {
                    "number": number,
                    "params": dict(params),
                    "tags": dict(tags),
                    "start_ms": now_ms(),
                    "lease_id": lease_id,
                },
                study_id,
            )
        )
        return key

    def log_metrics(
        self,
        study: str,
        key: str,
        step: int,
        metrics: Mapping[str, float],
        study_id: int | None = None,
    ) -> None:
        stamp = now_ms()
        rows = [[name, float(value), stamp, step] for name, value in metrics.items()]
        self.put(Op("metrics", study, key, {"metrics": rows}, study_id))

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def has_pending(self, kind: str, study_id: int) -> bool:
        """True while an op of ``kind`` for the study waits in the queue."""
        with self._cond:
            return any(op.kind == kind and op.study_id == study_id for op in self._queue)

    def pending_model_dirs(self) -> set[Path]:
        with self._cond:
            return {Path(op.data["model_dir"]) for op in self._queue if op.kind == "model"}

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued op is sent; False if ``timeout_s`` ran out."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._flushing = True
            self._cond.notify_all()  # a send waiting out a long backoff retries now
            try:
                while self._queue or self._busy:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(min(left, 0.5))
            finally:
                self._flushing = False
        return True

    def close(self, timeout_s: float) -> None:
        """Send what can be sent within ``timeout_s``; spool the rest to disk."""
        drained = self.flush(timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        if not drained:
            self._spool()

    # -- the sending thread --------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                op = self._next_batch()
                self._busy = True
            try:
                self._send(op)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _next_batch(self) -> Op:
        """The next op; consecutive metric ops of one run are sent as one batch."""
        op = self._queue.popleft()
        if op.kind != "metrics":
            return op
        rows = list(op.data["metrics"])
        while (
            self._queue
            and self._queue[0].kind == "metrics"
            and self._queue[0].key == op.key
            and len(rows) < 900
        ):
            rows += self._queue.popleft().data["metrics"]
        return Op("metrics", op.study_name, op.key, {"metrics": rows}, op.study_id)

    def _send(self, op: Op) -> None:
        delay = 0.5
        while True:
            try:
                self.executor.run(op)
            except Exception as exc:
                if not is_transient_remote(exc):
                    logger.error(
                        "MLflow refused a %s operation for %s (not retried): %s",
                        op.kind,
                        op.study_name,
                        exc,
                        exc_info=exc,
                    )
                    return
                if not self._retry_wait(op, exc, delay):
                    with self._cond:
                        self._queue.appendleft(op)  # spooled by close()
                    return
                delay = min(MAX_BACKOFF_S, delay * 2)
                continue
            if self._down_since is not None:
                logger.info(
                    "MLflow is reachable again after %.0f s; sending buffered data",
                    time.monotonic() - self._down_since,
                )
                self._down_since = None
            return

    def _retry_wait(self, op: Op, exc: Exception, delay: float) -> bool:
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "MLflow unavailable (%s: %s); buffering tracking data and retrying",
                type(exc).__name__,
                str(exc)[:300],
            )
        with self._cond:
            if self._closing:
                return False
            # While a flush waits (a worker about to exit), a backoff of up to
            # MAX_BACKOFF_S could outlast it although MLflow is back.
            self._cond.wait(min(delay, FLUSH_RETRY_S) if self._flushing else delay)
            return not self._closing

    # -- spooling --------------------------------------------------------------
    def _spool(self) -> None:
        with self._cond:
            ops = list(self._queue)
            self._queue.clear()
        if not ops:
            return
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        record = {"run_ids": self.executor.run_ids, "ops": [op.to_json() for op in ops]}
        with self.spool_file.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        logger.warning(
            "MLflow still unavailable: %d tracking operation(s) saved to %s and "
            "sent by the next worker that starts",
            len(ops),
            self.spool_file,
        )

    def _load_spools(self) -> None:
        if not self.spool_dir.is_dir():
            return
        for path in sorted(self.spool_dir.glob("*.jsonl")):
            claimed = path.with_suffix(f".replay-{os.getpid()}")
            try:
                path.rename(claimed)  # only one process replays each file
            except OSError:
                continue
            for line in claimed.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                self.executor.run_ids.update(record.get("run_ids", {}))
                self._queue.extend(Op.from_json(raw) for raw in record["ops"])
            claimed.unlink()
            logger.info("replaying tracking operations spooled in %s", path.name)
