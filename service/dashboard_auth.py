"""Who calls the dashboard: bearer tokens, sign-in sessions, and backoff for guessers.

Sessions live in this process's memory: the cookie carries a random session
id, never the token, and the token behind a session is verified again on
every request, so that revoking it ends the session at once.

Token checks that fail are counted per client address: after
``FREE_FAILURES`` of them each further attempt waits twice as long as the
one before (up to ``MAX_BACKOFF_S``), whether it comes through the sign-in
form or a bearer header.
"""

from __future__ import annotations

import html
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from service.auth import bearer_token, resolve_principal
from service.errors import error_response
from service.state import AppState
from storage.errors import HpoError, UnauthorizedError, UnavailableError
from storage.states import ErrorCode
from storage.tokens import Principal

logger = logging.getLogger(__name__)

SESSION_COOKIE = "hpo_dashboard_session"
SESSION_TTL_S = 12 * 3600
# Only authenticated users can create sessions; the cap bounds their memory all the same.
MAX_SESSIONS = 10_000
FREE_FAILURES = 5
MAX_BACKOFF_S = 300.0
# A client that stopped failing this long ago starts afresh.
FORGET_FAILURES_AFTER_S = 900.0
MAX_TRACKED_CLIENTS = 10_000
HOME = "/dashboard"


@dataclass
class DashboardSession:
    """A signed-in browser: the token it presented (verified on each request)."""

    token: str
    principal: Principal
    expires_at: float


class SessionStore:
    """Server-side login sessions, keyed by a random id that only the cookie holds.

    Thread-safe; ``clock`` is monotonic seconds (replaceable in tests).
    """

    def __init__(
        self,
        ttl_s: float = SESSION_TTL_S,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
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
            self._sessions[session_id] = DashboardSession(token, principal, now + self.ttl_s)
        return session_id

    def get(self, session_id: str) -> DashboardSession | None:
        """The live session with this id; None when unknown or expired."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires_at <= self.clock():
                del self._sessions[session_id]
                return None
            return session

    def discard(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]


@dataclass
class _Failures:
    count: int = 0
    last_at: float = field(default=0.0)


class LoginThrottle:
    """Exponential backoff per client address for failed token checks.

    Thread-safe and bounded: at most ``max_clients`` addresses are tracked
    (the least recently failing are forgotten first).
    """

    def __init__(
        self,
        free_failures: int = FREE_FAILURES,
        max_backoff_s: float = MAX_BACKOFF_S,
        forget_after_s: float = FORGET_FAILURES_AFTER_S,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.max_backoff_s = max_backoff_s
        self.forget_after_s = forget_after_s
        self.max_clients = max_clients
        self.clock = clock
        self._clients: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds ``client`` must wait before its next attempt (0 when it may try now)."""
        now = self.clock()
        with self._lock:
            failures = self._clients.get(client)
            if failures is None:
                return 0.0
            if now - failures.last_at > max(self.forget_after_s, self._backoff(failures.count)):
                del self._clients[client]
                return 0.0
            return max(0.0, failures.last_at + self._backoff(failures.count) - now)

    def failed(self, client: str) -> None:
        with self._lock:
            failures = self._clients.pop(client, None) or _Failures()
            failures.count += 1
            failures.last_at = self.clock()
            self._clients[client] = failures
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)

    def _backoff(self, count: int) -> float:
        over = count - self.free_failures
        if over < 0:
            return 0.0
        return min(self.max_backoff_s, 2.0 ** min(over, 30))


@dataclass
class TooManyAttemptsError(HpoError):
    """A client failed too many token checks; it may try again after ``retry_after_s``."""

    retry_after_s: int = 1
    code: ErrorCode = ErrorCode.TOO_MANY_REQUESTS


class DashboardAuth:
    """Who a request comes from, and the login pages that start sessions."""

    def __init__(
        self,
        state: AppState,
        sessions: SessionStore,
        secure_cookie: bool,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.state = state
        self.sessions = sessions
        self.secure_cookie = secure_cookie
        self.throttle = throttle if throttle is not None else LoginThrottle(clock=sessions.clock)

    async def principal(self, request: Request) -> tuple[Principal | None, bool]:
        """The caller and whether a session cookie (not a header) identified it.

        Raises:
            UnauthorizedError: a bearer token or a session's token is invalid or revoked.
            TooManyAttemptsError: this client failed too many token checks lately.
            UnavailableError: the service database could not be reached.
        """
        token = bearer_token(request.headers.get("authorization"))
        if token is not None:
            return await self.verify_guess(token, client_host(request)), False
        session_id = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(session_id) if session_id else None
        if session_id is None or session is None:
            return None, False
        try:
            principal = await self._verify(session.token)
        except UnauthorizedError:
            self.sessions.discard(session_id)
            raise
        session.principal = principal
        return principal, True

    async def verify_guess(self, token: str, client: str) -> Principal:
        """Verify a token that ``client`` presents, counting failures against it.

        Raises:
            TooManyAttemptsError: the client must wait first (the token is not checked).
            UnauthorizedError: the token is invalid or revoked.
            UnavailableError: the service database could not be reached.
        """
        wait = self.throttle.retry_after(client)
        if wait > 0:
            raise TooManyAttemptsError(
                f"too many failed sign-ins from this address; try again in {math.ceil(wait)} s",
                retry_after_s=max(1, math.ceil(wait)),
            )
        try:
            principal = await self._verify(token)
        except UnauthorizedError:
            self.throttle.failed(client)
            logger.info("dashboard token refused for %s", client)
            raise
        self.throttle.succeeded(client)
        return principal

    async def _verify(self, token: str) -> Principal:
        # Token checks hit the database; keep them off the event loop.
        # Uncached: revoking a token ends its dashboard session at once.
        return await run_in_threadpool(lambda: resolve_principal(self.state, token, cached=False))

    async def login_form(self, request: Request) -> Response:
        if not self.state.auth_enabled:
            return RedirectResponse(HOME, 303)
        return login_page(safe_next(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        """Check the form's token; on success start a session and go to the dashboard."""
        if not self.state.auth_enabled:
            return RedirectResponse(HOME, 303)
        if not is_same_origin(request):
            return error_response(ErrorCode.FORBIDDEN, "cross-origin sign-in refused")
        form = await read_form(request)
        token = form.get("token", [""])[0].strip()
        target = safe_next(form.get("next", [None])[0])
        if not token:
            return login_page(target, "Enter an API token.", 400)
        try:
            principal = await self.verify_guess(token, client_host(request))
        except TooManyAttemptsError as exc:
            page = login_page(target, exc.message[:1].upper() + exc.message[1:] + ".", 429)
            page.headers["Retry-After"] = str(exc.retry_after_s)
            return page
        except UnauthorizedError:
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


def client_host(request: Request) -> str:
    """The peer's address (proxy headers are not trusted: ``proxy_headers=False``)."""
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
