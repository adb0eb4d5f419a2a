"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from service import metrics
from service.background import ReaperThread
from service.errors import install_error_handlers
from service.middleware import AuthenticateFirst, BodySizeLimit, StandardMethods
from service.openapi import install_openapi_links
from service.routes import health, studies, tasks, tokens, transfer, trials, workers
from service.state import AppState
from storage.settings import Settings

logger = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def create_app(settings: Settings, state: AppState | None = None) -> FastAPI:
    """Build the app; ``state`` (databases) is opened here unless given."""
    state = state or AppState.open(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = ReaperThread(state)
        reaper.start()
        yield
        reaper.stop()
        state.close()

    app = FastAPI(
        title="HPO service",
        version="0.1.0",
        description="Hyperparameter optimization of Transformer/BERT models with Optuna "
        "workers. Authenticate with `Authorization: Bearer <token>`.",
        lifespan=lifespan,
    )
    app.state.hpo = state
    registry = CollectorRegistry()
    registry.register(metrics.ServiceCollector(state))
    app.state.metrics_registry = registry
    if not state.auth_enabled:
        logger.warning("HPO_ADMIN_TOKEN is unset: the API accepts requests without a token")
    install_error_handlers(app)
    for module in (transfer, studies, trials, workers, tasks, tokens, health, metrics):
        app.include_router(module.router, prefix=API_PREFIX)
    app.add_middleware(AuthenticateFirst, state=state)
    app.add_middleware(metrics.RequestMetrics, registry=registry)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(StandardMethods)
    install_openapi_links(app)
    return app


def app_from_environment() -> FastAPI:
    """The app with settings read from ``HPO_*`` (for ``uvicorn --factory``, one per process)."""
    from service.redact import install_redaction

    install_redaction()  # each server process configures its own logging
    return create_app(Settings())
