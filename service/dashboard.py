"""The Optuna dashboard behind the service's authentication.

optuna-dashboard has no authentication of its own, exposes write endpoints
(notes, user attributes, deleting studies) and cannot live under a sub-path,
so it is served at the root of its own port behind a gateway that:

- accepts ``Authorization: Bearer <token>`` or the session cookie that the
  ``/login`` page sets, and verifies tokens exactly as the REST API does;
- lets read-scope principals use safe methods only (write scope for the rest);
- redirects browsers without a session to ``/login`` and answers other
  requests with the API's JSON errors (401, 403, 503);
- is open (with a warning) when ``HPO_ADMIN_TOKEN`` is unset, like the API.

Sessions live in this process's memory: the cookie carries a random session
id, never the token, and the token behind a session is verified again at
least every ``REVERIFY_AFTER_S`` seconds so that revoking it ends the session.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qs, quote, urlsplit

import optuna_dashboard
from a2wsgi import WSGIMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from service.auth import bearer_token, check_scope, resolve_principal
from service.errors import error_response
from service.middleware import BodySizeLimit
from service.state import AppState
from storage.errors import ForbiddenError, UnauthorizedError, UnavailableError
from storage.settings import Settings
from storage.tokens import Principal, Scope

logger = logging.getLogger(__name__)

SESSION_COOKIE = "hpo_dashboard_session"
SESSION_TTL_S = 12 * 3600
# A revoked token keeps its dashboard sessions at most this long.
REVERIFY_AFTER_S = 30.0
# Only authenticated users can create sessions; the cap bounds their memory all the same.
MAX_SESSIONS = 10_000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HOME = "/dashboard"
# Threads for the dashboard's blocking handlers; within Optuna's default
# connection pool (5 + 10 overflow) so that no request waits for a connection.
DASHBOARD_THREADS = 10
_HIDDEN_HEADERS = frozenset({b"authorization", b"cookie"})


@dataclass
class DashboardSession:
    """A signed-in browser: the token it presented and when that was last verified."""

    token: str
    principal: Principal
    expires_at: float
    verified_at: float


class SessionStore:
    """Server-side login sessions, keyed by a random id that only the cookie holds.

    Thread-safe; ``clock`` is monotonic seconds (replaceable in tests).
    """

    def __init__(
        self,
        ttl_s: float = SESSION_TTL_S,
        reverify_after_s: float = REVERIFY_AFTER_S,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.reverify_after_s = reverify_after_s
        self.max_sessions = max_sessions
        self.clock = clock
        self._sessions: OrderedDict[str, DashboardSession] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, token: str, principal: Principal) -> str:
        """Start a session for a verified ``token``; return the id for the cookie."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                self._drop_expired(now)
            while len(self._sessions) >= self.max_sessions:
                self._sessions.popitem(last=False)
            self._sessions[session_id] = DashboardSession(token, principal, now + self.ttl_s, now)
        return session_id

    def get(self, session_id: str) -> DashboardSession | None:
        """The live session with this id; None when unknown or expired."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires_at <= self.clock():
                del self._sessions[session_id]
                return None
            return session

    def needs_verification(self, session: DashboardSession) -> bool:
        return self.clock() - session.verified_at >= self.reverify_after_s

    def mark_verified(self, session_id: str, principal: Principal) -> None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.principal = principal
                session.verified_at = self.clock()

    def discard(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]


def create_dashboard_app(
    settings: Settings,
    *,
    state: AppState | None = None,
    sessions: SessionStore | None = None,
    secure_cookie: bool = False,
) -> ASGIApp:
    """The dashboard at ``/``, ``/login`` and ``/logout``, behind the API's tokens.

    ``state`` (databases) is opened here unless given; one opened here is closed
    at shutdown. ``sessions`` defaults to a new in-memory store. ``secure_cookie``
    marks the session cookie Secure even over plain HTTP (behind a TLS-terminating
    proxy); over HTTPS it always is.

    Raises:
        optuna.exceptions.StorageInternalError: Optuna's storage is unreachable
            or has no schema yet (``hpo db upgrade`` creates it).
    """
    owned = state is None
    state = state or AppState.open(settings)
    if not state.auth_enabled:
        logger.warning("HPO_ADMIN_TOKEN is unset: the dashboard accepts requests without a token")
    auth = DashboardAuth(state, sessions if sessions is not None else SessionStore(), secure_cookie)
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
    ]
    router = Router(routes, redirect_slashes=False, default=gateway, lifespan=lifespan)
    return BodySizeLimit(router, max_bytes=settings.max_request_bytes)


class DashboardAuth:
    """Who a request comes from, and the login pages that start sessions."""

    def __init__(self, state: AppState, sessions: SessionStore, secure_cookie: bool) -> None:
        self.state = state
        self.sessions = sessions
        self.secure_cookie = secure_cookie

    async def principal(self, request: Request) -> tuple[Principal | None, bool]:
        """The caller and whether a session cookie (not a header) identified it.

        Raises:
            UnauthorizedError: a bearer token or a session's token is invalid or revoked.
            UnavailableError: the service database could not be reached.
        """
        token = bearer_token(request.headers.get("authorization"))
        if token is not None:
            return await self._verify(token), False
        session_id = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(session_id) if session_id else None
        if session_id is None or session is None:
            return None, False
        if not self.sessions.needs_verification(session):
            return session.principal, True
        try:
            principal = await self._verify(session.token)
        except UnauthorizedError:
            self.sessions.discard(session_id)
            raise
        self.sessions.mark_verified(session_id, principal)
        return principal, True

    async def _verify(self, token: str) -> Principal:
        # Token checks hit the database; keep them off the event loop.
        return await run_in_threadpool(resolve_principal, self.state, token)

    async def login_form(self, request: Request) -> Response:
        if not self.state.auth_enabled:
            return RedirectResponse(HOME, 303)
        return login_page(safe_next(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        """Check the form's token; on success start a session and go to the dashboard."""
        if not self.state.auth_enabled:
            return RedirectResponse(HOME, 303)
        if not is_same_origin(request):
            return error_response("forbidden", "cross-origin sign-in refused")
        form = await read_form(request)
        token = form.get("token", [""])[0].strip()
        target = safe_next(form.get("next", [None])[0])
        if not token:
            return login_page(target, "Enter an API token.", 400)
        try:
            principal = await self._verify(token)
        except UnauthorizedError:
            logger.info("dashboard sign-in refused for %s", _client_host(request))
            return login_page(target, "That token is invalid or has been revoked.", 401)
        except UnavailableError:
            return login_page(target, "The service database is unavailable; try again.", 503)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            SESSION_COOKIE,
            self.sessions.create(token, principal),
            max_age=int(self.sessions.ttl_s),
            path="/",
            secure=self._secure(request),
            httponly=True,
            samesite="strict",
        )
        logger.info("dashboard sign-in: %s (%s)", principal.name, principal.scope.name.lower())
        return response

    async def logout(self, request: Request) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            self.sessions.discard(session_id)
        response = RedirectResponse("/login", 303)
        self.clear_cookie(request, response)
        return response

    def clear_cookie(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            SESSION_COOKIE,
            path="/",
            secure=self._secure(request),
            httponly=True,
            samesite="strict",
        )

    def _secure(self, request: Request) -> bool:
        return self.secure_cookie or request.url.scheme == "https"


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
        refusal = None
        if self.auth.state.auth_enabled:
            refusal = await self._refusal(Request(scope, receive))
        refusal = refusal or bypasses_service(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.inner(inner_scope(scope), receive, send)

    async def _refusal(self, request: Request) -> Response | None:
        """The response that refuses ``request``; None when it may go through."""
        try:
            principal, by_cookie = await self.auth.principal(request)
        except UnauthorizedError as exc:
            return self._unauthenticated(request, exc.message)
        except UnavailableError as exc:
            return error_response("unavailable", exc.message, headers={"Retry-After": "5"})
        if principal is None:
            return self._unauthenticated(
                request, "sign in at /login or send Authorization: Bearer <token>"
            )
        if request.method in SAFE_METHODS:
            return None
        try:
            check_scope(principal, Scope.WRITE)
        except ForbiddenError as exc:
            return error_response("forbidden", exc.message)
        # SameSite does not separate ports of one host; a cookie-borne write must
        # come from the dashboard's own origin.
        if by_cookie and not is_same_origin(request):
            return error_response("forbidden", "cross-origin request refused")
        return None

    def _unauthenticated(self, request: Request, message: str) -> Response:
        response: Response
        if wants_html(request):
            target = safe_next(request.url.path + _query(request))
            response = RedirectResponse(f"/login?next={quote(target, safe='/')}", 303)
        else:
            response = error_response(
                "unauthorized", message, headers={"WWW-Authenticate": "Bearer"}
            )
        if SESSION_COOKIE in request.cookies:
            self.auth.clear_cookie(request, response)
        return response


_STUDY_PATH = re.compile(r"^/api/studies/\d+/?$")


def bypasses_service(scope: AsgiScope) -> Response | None:
    """Refuse creating or deleting studies here: the service would not know of them.

    A study deleted behind the service's back would leave its budget and
    leases pointing at nothing; studies are managed through the REST API.
    """
    method, path = scope.get("method", ""), scope.get("path", "")
    if (method == "POST" and path.rstrip("/") == "/api/studies") or (
        method == "DELETE" and _STUDY_PATH.match(path)
    ):
        return error_response(
            "forbidden", "create and delete studies through the REST API (hpo submit, hpo delete)"
        )
    return None


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


def is_same_origin(request: Request) -> bool:
    """False when a browser says the request comes from another origin.

    Clients that are not browsers send no ``Origin``; they pass.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard page, never another site."""
    if (
        target
        and len(target) <= 2000
        and (target == HOME or target.startswith((HOME + "/", HOME + "?")))
        and "//" not in target
        and "\\" not in target
    ):
        return target
    return HOME


async def read_form(request: Request) -> dict[str, list[str]]:
    """The fields of a urlencoded form body; empty when it is not one."""
    body = (await request.body()).decode("utf-8", "replace")
    try:
        return parse_qs(body, max_num_fields=10)
    except ValueError:
        return {}


def login_page(target: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    """The sign-in form: one token field, no external assets."""
    notice = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = _LOGIN_HTML.format(notice=notice, next=html.escape(target, quote=True))
    return HTMLResponse(body, status, headers=_PAGE_HEADERS)


def _query(request: Request) -> str:
    query = request.url.query
    return f"?{query}" if query else ""


def _client_host(request: Request) -> str:
    return request.client.host if request.client else "unknown"


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    # Not no-referrer: with it browsers send "Origin: null" on the sign-in POST,
    # which the same-origin check must refuse.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
_LOGIN_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in - HPO dashboard</title>
<style>
body {{ font-family: system-ui, sans-serif; display: flex; justify-content: center;
  margin-top: 15vh; }}
form {{ display: flex; flex-direction: column; gap: 0.6rem; width: 22rem; }}
input, button {{ font: inherit; padding: 0.45rem; }}
.error {{ color: #b00020; }}
</style>
</head>
<body>
<form method="post" action="/login">
<h1>HPO dashboard</h1>
{notice}
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
</form>
</body>
</html>
"""
