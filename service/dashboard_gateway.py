"""The gateway in front of optuna-dashboard: authorize each request, then pass it on.

What it refuses and why is described in :mod:`service.dashboard`.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from service.auth import check_scope
from service.dashboard_auth import DashboardAuth, is_same_origin, safe_next
from service.dashboard_controls import is_page, serve_page
from service.dashboard_sessions import SESSION_COOKIE
from service.dashboard_throttle import TooManyAttemptsError
from service.errors import error_response, headers_for
from service.middleware import SAFE_METHODS, STANDARD_METHODS
from storage.errors import ForbiddenError, UnauthorizedError, UnavailableError
from storage.states import ErrorCode
from storage.tokens import Principal, Scope

_HIDDEN_HEADERS = frozenset({b"authorization", b"cookie"})
# The only writes the dashboard may make: its own notes (kept in Optuna's
# system attributes, which the service does not read). Everything else that
# writes is refused, whatever the token: an allow-list, so that a route added
# by a new optuna-dashboard release is refused until it is looked at.
DASHBOARD_WRITES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("PUT", re.compile(r"/api/studies/[0-9]{1,18}/note", re.ASCII)),
    ("PUT", re.compile(r"/api/studies/[0-9]{1,18}/[0-9]{1,18}/note", re.ASCII)),
)


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
