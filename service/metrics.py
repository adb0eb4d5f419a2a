"""Prometheus metrics: request counts and latencies, studies, trials and workers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.routing import Match

from service.deps import ReadDep, StateDep
from service.responses import errors_for
from service.state import AppState
from storage.models import Study, StudyStatus
from storage.workers import live_workers

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class ServiceCollector(Collector):
    """Gauges read from the service database at scrape time."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        studies = GaugeMetricFamily("hpo_studies", "studies by status", labels=["status"])
        active = GaugeMetricFamily("hpo_trials_active", "trial slots held by workers")
        finished = GaugeMetricFamily("hpo_trials_finished", "trials counted against budgets")
        workers = GaugeMetricFamily("hpo_workers_live", "workers with a recent heartbeat")
        try:
            with self.state.db.session_scope(read_only=True) as session:
                rows = session.execute(
                    select(
                        Study.status,
                        func.count(),
                        func.sum(Study.n_active),
                        func.sum(Study.n_finished),
                    ).group_by(Study.status)
                ).all()
                n_workers = len(live_workers(session, self.state.settings.heartbeat_grace_s))
        except Exception:  # a scrape must not fail because the database is down
            logger.warning("metrics: database unavailable")
            return
        by_status = {row[0]: row for row in rows}
        for status in StudyStatus:
            row = by_status.get(status.value)
            studies.add_metric([status.value], row[1] if row else 0)
        active.add_metric([], sum(int(r[2] or 0) for r in rows))
        finished.add_metric([], sum(int(r[3] or 0) for r in rows))
        workers.add_metric([], n_workers)
        yield from (studies, active, finished, workers)


# Label values come from fixed sets only: a label taken from the request
# (any method string parses) would add a series per distinct value, unbounded.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics(BaseHTTPMiddleware):
    """Counts requests and times them by method, route template and status class."""

    def __init__(self, app: Any, registry: CollectorRegistry) -> None:
        super().__init__(app)
        self.requests = Counter(
            "hpo_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "hpo_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
        )

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        method = method_label(request.method)
        route = _route_template(request)
        self.requests.labels(method, route, status_class(response.status_code)).inc()
        self.latency.labels(method, route).observe(time.perf_counter() - start)
        return response


def method_label(method: str) -> str:
    """The method if it is a standard one, else ``other``."""
    upper = method.upper()
    return upper if upper in METHODS else "other"


def status_class(status: int) -> str:
    """``2xx``, ``4xx``...: the class of a status (``other`` outside 100-599)."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def _route_template(request: Request) -> str:
    """The template of the route that serves ``request`` (``unmatched`` for none).

    Templates are the app's own strings, a fixed set; a route that matches
    the path but not the method counts under its template too.
    """
    partial = None
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "unmatched"))
        if match == Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", "unmatched"))
    return partial or "unmatched"


@router.get("/metrics", response_class=Response, responses=errors_for(401, 403))
def metrics(request: Request, state: StateDep, _: ReadDep) -> Response:
    """Prometheus text format."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
