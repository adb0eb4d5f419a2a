"""The Optuna dashboard behind the service's authentication.

optuna-dashboard has no authentication of its own, exposes write endpoints
(notes, user attributes, telling trials, renaming and deleting studies) and
cannot live under a sub-path, so it is served at the root of its own port
behind a gateway that:

- upper-cases the method and refuses methods outside HTTP's usual set, so
  that every check sees what optuna-dashboard (which upper-cases) will act on;
- accepts ``Authorization: Bearer <token>`` or the session cookie that the
  ``/login`` page sets, and verifies the token on every request exactly as
  the REST API does (see :mod:`service.dashboard_auth`);
- lets read-scope principals use safe methods only, and lets everyone else
  write only what the dashboard owns: the notes on studies and trials
  (``DASHBOARD_WRITES``). Creating, renaming and deleting studies, telling
  trials, user attributes and schema migrations are the service's business;
- redirects browsers without a session to ``/login`` and answers other
  requests with the API's JSON errors (401, 403, 405, 429, 503);
- is open (with a warning) when ``HPO_ADMIN_TOKEN`` is unset, like the API,
  but still refuses every write outside ``DASHBOARD_WRITES``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast
from urllib.parse import quote

import optuna_dashboard
from a2wsgi import WSGIMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from service.auth import check_scope
from service.dashboard_auth import (
    SESSION_COOKIE,
    DashboardAuth,
    LoginThrottle,
    SessionStore,
    TooManyAttemptsError,
    is_same_origin,
    safe_next,
)
from service.dashboard_controls import (
    READ_ONLY_SCRIPT_PATH,
    SCRIPT_PATH,
    controls,
    is_page,
    serve_page,
)
from service.errors import error_response, headers_for
from service.middleware import SAFE_METHODS, STANDARD_METHODS, BodySizeLimit, StandardMethods
from service.state import AppState
from storage.errors import ForbiddenError, UnauthorizedError, UnavailableError
from storage.settings import Settings
from storage.states import ErrorCode
from storage.tokens import Principal, Scope

__all__ = ["SESSION_COOKIE", "LoginThrottle", "SessionStore", "create_dashboard_app"]

logger = logging.getLogger(__name__)

# Threads for the dashboard's blocking handlers; within Optuna's default
# connection pool (5 + 10 overflow) so that no request waits for a connection.
DASHBOARD_THREADS = 10
_HIDDEN_HEADERS = frozenset({b"authorization", b"cookie"})
# The only writes the dashboard may make: its own notes (kept in Optuna's
# system attributes, which the service does not read). Everything else that
# writes is refused, whatever the token: an allow-list, so that a route added
# by a new optuna-dashboard release is refused until it is looked at.
DASHBOARD_WRITES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("PUT", re.compile(r"/api/studies/[0-9]{1,18}/note", re.ASCII)),
    ("PUT", re.compile(r"/api/studies/[0-9]{1,18}/[0-9]{1,18}/note", re.ASCII)),
)


def create_dashboard_app(
    settings: Settings,
    *,
    state: AppState | None = None,
    sessions: SessionStore | None = None,
    throttle: LoginThrottle | None = None,
    secure_cookie: bool = False,
) -> ASGIApp:
    """The dashboard at ``/``, ``/login`` and ``/logout``, behind the API's tokens.

    ``state`` (databases) is opened here unless given; one opened here is closed
    at shutdown. ``sessions`` defaults to a new in-memory store and ``throttle``
    (backoff after failed token checks) to one on the sessions' clock.
    ``secure_cookie`` marks the session cookie Secure even over plain HTTP
    (behind a TLS-terminating proxy); over HTTPS it always is.

    Raises:
        optuna.exceptions.StorageInternalError: Optuna's storage is unreachable
            or has no schema yet (``hpo db upgrade`` creates it).
    """
    owned = state is None
    state = state or AppState.open(settings)
    if not state.auth_enabled:
        logger.warning("HPO_ADMIN_TOKEN is unset: the dashboard accepts requests without a token")
    auth = DashboardAuth(
        state, sessions if sessions is not None else SessionStore(), secure_cookie, throttle
    )
    inner = WSGIMiddleware(optuna_dashboard.wsgi(state.optuna), DASHBOARD_THREADS)
    # a2wsgi types the ASGI protocol with TypedDicts; Starlette with plain mappings.
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


class DashboardGateway:
    """ASGI: authorize each request, then hand it to optuna-dashboard's WSGI app."""

    def __init__(self, auth: DashboardAuth, inner: ASGIApp) -> None:
        self.auth = auth
        self.inner = inner

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # The dashboard has no websockets; refuse rather than pass anything through.
            await send({"type": "websocket.close", "code": 1008})
            return
        method = str(scope.get("method", "")).upper()
        if method not in STANDARD_METHODS:
            # StandardMethods in front normally answers first; this gateway must not rely on it.
            not_allowed = error_response(ErrorCode.METHOD_NOT_ALLOWED, "unsupported HTTP method")
            await not_allowed(scope, receive, send)
            return
        scope = {**scope, "method": method}
        refusal, can_write = None, True
        if self.auth.state.auth_enabled:
            refusal, can_write = await self._refusal(Request(scope, receive))
        refusal = refusal or refuse_service_writes(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if is_page(scope):
            # Pages get the script that hides the controls refused here.
            await serve_page(self.inner, inner_scope(scope), receive, send, not can_write)
            return
        await self.inner(inner_scope(scope), receive, send)

    async def _refusal(self, request: Request) -> tuple[Response | None, bool]:
        """The response that refuses ``request`` (None when it may go through), and
        whether the principal may write (the dashboard's notes)."""
        response, principal = await self._check(request)
        if response is not None or principal is None:
            return response, False
        try:
            check_scope(principal, Scope.WRITE)
        except ForbiddenError:
            return None, False
        return None, True

    async def _check(self, request: Request) -> tuple[Response | None, Principal | None]:
        try:
            principal, by_cookie = await self.auth.principal(request)
        except UnauthorizedError as exc:
            return self._unauthenticated(request, exc.message), None
        except TooManyAttemptsError as exc:
            headers = {"Retry-After": str(exc.retry_after_s)}
            return error_response(exc.code, exc.message, headers=headers), None
        except UnavailableError as exc:
            return error_response(exc.code, exc.message, headers=headers_for(exc.code)), None
        if principal is None:
            return self._unauthenticated(
                request, "sign in at /login or send Authorization: Bearer <token>"
            ), None
        if request.method in SAFE_METHODS:
            return None, principal
        try:
            check_scope(principal, Scope.WRITE)
        except ForbiddenError as exc:
            return error_response(ErrorCode.FORBIDDEN, exc.message), principal
        # SameSite does not separate ports of one host; a cookie-borne write must
        # come from the dashboard's own origin.
        if by_cookie and not is_same_origin(request):
            return error_response(ErrorCode.FORBIDDEN, "cross-origin request refused"), principal
        return None, principal

    def _unauthenticated(self, request: Request, message: str) -> Response:
        response: Response
        if wants_html(request):
            target = safe_next(request.url.path + _query(request))
            response = RedirectResponse(f"/login?next={quote(target, safe='/')}", 303)
        else:
            code = ErrorCode.UNAUTHORIZED
            response = error_response(code, message, headers=headers_for(code))
        if SESSION_COOKIE in request.cookies:
            self.auth.clear_cookie(request, response)
        return response


def refuse_service_writes(scope: AsgiScope) -> Response | None:
    """Refuse every write but those in ``DASHBOARD_WRITES`` (the scope's method is upper-case).

    A study created, renamed or deleted here, or a trial told here, would
    leave the service's budget, leases and workers pointing at nothing;
    studies and trials are managed through the REST API.
    """
    method, path = scope.get("method", ""), scope.get("path", "")
    if method in SAFE_METHODS:
        return None
    if any(method == allowed and pattern.fullmatch(path) for allowed, pattern in DASHBOARD_WRITES):
        return None
    return error_response(
        ErrorCode.FORBIDDEN,
        "the dashboard only edits notes here; create, rename, delete and tell through the "
        "REST API (hpo submit, hpo cancel, hpo delete)",
    )


def inner_scope(scope: AsgiScope) -> AsgiScope:
    """The scope to hand optuna-dashboard: no credentials, always an ``Accept-Encoding``.

    optuna-dashboard 0.21 answers 500 for static files when ``Accept-Encoding``
    is missing; ``identity`` makes it send them uncompressed. It never needs
    the credentials, so they never reach its handlers or its logs.
    """
    headers = [(k, v) for k, v in scope["headers"] if k not in _HIDDEN_HEADERS]
    if not any(k == b"accept-encoding" for k, _ in headers):
        headers.append((b"accept-encoding", b"identity"))
    return {**scope, "headers": headers}


def wants_html(request: Request) -> bool:
    """True for a browser navigating to a page (not the dashboard's API or assets)."""
    return (
        request.method in ("GET", "HEAD")
        and "text/html" in request.headers.get("accept", "")
        and not request.url.path.startswith(("/api/", "/static/"))
    )


def _query(request: Request) -> str:
    query = request.url.query
    return f"?{query}" if query else ""
