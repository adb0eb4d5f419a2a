"""Who calls the dashboard: bearer tokens and sign-in sessions, checked on every request.

Bearer tokens are verified exactly as the REST API does, uncached; a session
cookie is looked up in the service database (:mod:`service.dashboard_sessions`)
together with its token. Failed token checks slow the client down
(:mod:`service.dashboard_throttle`).
"""

from __future__ import annotations

import logging
import math
from urllib.parse import parse_qs, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.auth import bearer_token, resolve_principal
from service.dashboard_page import login_page
from service.dashboard_sessions import SESSION_COOKIE, SessionStore
from service.dashboard_throttle import LoginThrottle, TooManyAttemptsError
from service.errors import error_response, headers_for
from service.state import AppState
from storage.errors import UnauthorizedError, UnavailableError
from storage.states import ErrorCode
from storage.tokens import Principal

logger = logging.getLogger(__name__)

HOME = "/dashboard"


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
        if not session_id:
            return None, False
        admin = self.state.settings.admin_token
        principal = await run_in_threadpool(self.sessions.principal, session_id, admin)
        return principal, principal is not None

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
        try:
            session_id = await run_in_threadpool(self.sessions.create, token)
        except UnavailableError:
            return login_page(target, "The service database is unavailable; try again.", 503)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
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
            try:
                await run_in_threadpool(self.sessions.discard, session_id)
            except UnavailableError:
                code = ErrorCode.UNAVAILABLE
                message = "the service database is unavailable"
                return error_response(code, message, headers=headers_for(code))
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


def client_host(request: Request) -> str:
    """The peer's address (proxy headers are not trusted: ``proxy_headers=False``)."""
    return request.client.host if request.client else "unknown"
