"""The Optuna dashboard behind the service's authentication.

optuna-dashboard has no authentication of its own, exposes write endpoints
(notes, user attributes, telling trials, renaming and deleting studies) and
cannot live under a sub-path, so it is served at the root of its own port
behind a gateway that:

- upper-cases the method and refuses methods outside HTTP's usual set, so
  that every check sees what optuna-dashboard (which upper-cases) will act on;
- accepts ``Authorization: Bearer <token>`` or the session cookie that the
  ``/login`` page sets (sessions live in the service database), and verifies
  the token on every request exactly as the REST API does (see
  :mod:`service.dashboard_auth`);
- lets read-scope principals use safe methods only, and lets everyone else
  write only what the dashboard owns: the notes on studies and trials
  (``DASHBOARD_WRITES``). Creating, renaming and deleting studies, telling
  trials, user attributes and schema migrations are the service's business;
- redirects browsers without a session to ``/login`` and answers other
  requests with the API's JSON errors (401, 403, 405, 429, 503);
- answers 503 with Retry-After, not optuna-dashboard's 500, while Optuna's
  database is out of reach (see :mod:`service.dashboard_outages`), and pings
  each pooled connection before use, so that the first request after a
  database restart reconnects instead of failing;
- is open (with a warning) when ``HPO_ADMIN_TOKEN`` is unset, like the API,
  but still refuses every write outside ``DASHBOARD_WRITES``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import optuna_dashboard
from a2wsgi import WSGIMiddleware
from a2wsgi.wsgi_typing import WSGIApp
from starlette.routing import Route, Router
from starlette.types import ASGIApp

from service.dashboard_auth import DashboardAuth
from service.dashboard_controls import READ_ONLY_SCRIPT_PATH, SCRIPT_PATH, controls
from service.dashboard_gateway import DashboardGateway
from service.dashboard_outages import OutageAnswers, report_outages
from service.dashboard_sessions import SESSION_COOKIE, SessionStore
from service.dashboard_throttle import LoginThrottle
from service.middleware import BodySizeLimit, StandardMethods
from service.state import AppState
from storage.settings import Settings

__all__ = ["SESSION_COOKIE", "LoginThrottle", "SessionStore", "create_dashboard_app"]

logger = logging.getLogger(__name__)

# Threads for the dashboard's blocking handlers; within Optuna's default
# connection pool (5 + 10 overflow) so that no request waits for a connection.
DASHBOARD_THREADS = 10
# Ping every pooled connection at checkout: a round trip is nothing next to a
# dashboard request, and a connection lost in a restart is then replaced
# instead of failing the request that draws it.
DASHBOARD_PING_IDLE_S = 0.0


def create_dashboard_app(
    settings: Settings,
    *,
    state: AppState | None = None,
    sessions: SessionStore | None = None,
    throttle: LoginThrottle | None = None,
    secure_cookie: bool = False,
) -> ASGIApp:
    """The dashboard at ``/``, ``/login`` and ``/logout``, behind the API's tokens.

    ``state`` (databases) is opened here unless given, with connections pinged
    at every checkout; one opened here is closed at shutdown. Sign-in sessions
    are kept in the service database, with the lifetime and clock of
    ``sessions`` when given; ``throttle`` (backoff after failed token checks)
    defaults to one on the sessions' clock.
    ``secure_cookie`` marks the session cookie Secure even over plain HTTP
    (behind a TLS-terminating proxy); over HTTPS it always is.

    Raises:
        optuna.exceptions.StorageInternalError: Optuna's storage is unreachable
            or has no schema yet (``hpo db upgrade`` creates it).
    """
    owned = state is None
    state = state or AppState.open(settings, ping_idle_s=DASHBOARD_PING_IDLE_S)
    if not state.auth_enabled:
        logger.warning("HPO_ADMIN_TOKEN is unset: the dashboard accepts requests without a token")
    store = (sessions if sessions is not None else SessionStore()).bound_to(state.db)
    auth = DashboardAuth(state, store, secure_cookie, throttle)
    report_outages(state.optuna.engine)
    dashboard = OutageAnswers(optuna_dashboard.wsgi(state.optuna))
    # a2wsgi types the WSGI environ and the ASGI protocol with TypedDicts;
    # typeshed and Starlette with plain mappings.
    inner = WSGIMiddleware(cast(WSGIApp, dashboard), DASHBOARD_THREADS)
    gateway = DashboardGateway(auth, cast(ASGIApp, inner))

    @asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        yield
        if owned:
            state.close()

    routes = [
        Route("/login", auth.login_form, methods=["GET"]),
        Route("/login", auth.login, methods=["POST"]),
        Route("/logout", auth.logout, methods=["GET"]),
        Route(SCRIPT_PATH, controls, methods=["GET"]),
        Route(READ_ONLY_SCRIPT_PATH, controls, methods=["GET"]),
    ]
    router = Router(routes, redirect_slashes=False, default=gateway, lifespan=lifespan)
    return BodySizeLimit(StandardMethods(router), max_bytes=settings.max_request_bytes)
