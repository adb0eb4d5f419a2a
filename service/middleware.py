"""ASGI middleware: a request body size limit, and authentication before bodies are read."""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import bearer_token, check_scope, resolve_principal
from service.errors import error_body, error_response, headers_for
from service.state import AppState
from storage.errors import HpoError
from storage.states import ErrorCode
from storage.tokens import Scope as TokenScope

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STANDARD_METHODS = SAFE_METHODS | {"POST", "PUT", "PATCH", "DELETE"}
# Where the principal that AuthenticateFirst found waits for the route's dependency.
PRINCIPAL_KEY = "hpo_principal"
# Errors of a token check that are answered here; any other one is a bug and propagates.
_REFUSALS = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN, ErrorCode.UNAVAILABLE})


class StandardMethods:
    """Upper-case the request method, and answer 405 to any method outside HTTP's usual set.

    HTTP parsers accept any token as a method and the apps behind compare
    methods differently (Starlette exactly, Bottle upper-cased): every later
    check must see the one spelling that the app will act on.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope["method"]).upper()
        if method not in STANDARD_METHODS:
            response = error_response(
                ErrorCode.METHOD_NOT_ALLOWED,
                "unsupported HTTP method",
                headers={"Allow": ", ".join(sorted(STANDARD_METHODS))},
            )
            await response(scope, receive, send)
            return
        await self.app({**scope, "method": method}, receive, send)


class BodySizeLimit:
    """Answer 413 to bodies over ``max_bytes``, declared or streamed (chunked).

    The body is read here, up to the limit, before the app sees any of it:
    an app that reads a stream itself turns an error raised mid-stream into
    its own answer (FastAPI answered 400), so the limit must not depend on it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _reject(self, send: Send) -> None:
        body: dict[str, Any] = error_body(
            ErrorCode.PAYLOAD_TOO_LARGE, f"the request body is larger than {self.max_bytes} bytes"
        )
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over the buffered body once, then the real stream's events."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class AuthenticateFirst:
    """Authenticate requests that may carry a body before anything parses it.

    FastAPI parses a JSON body before it runs a route's dependencies, so an
    anonymous client learnt from 422s what the API would accept. Every
    method other than GET, HEAD and OPTIONS changes something and needs at
    least the write scope; the route's own dependency still checks the exact
    scope (admin for tokens), reusing the principal found here.
    """

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.state.auth_enabled
            or str(scope["method"]).upper() in SAFE_METHODS
        ):
            await self.app(scope, receive, send)
            return
        token = bearer_token(Headers(scope=scope).get("authorization"))
        try:
            # Token checks hit the database; keep them off the event loop.
            principal = await run_in_threadpool(resolve_principal, self.state, token)
            check_scope(principal, TokenScope.WRITE)
        except HpoError as exc:
            if exc.code not in _REFUSALS:
                raise
            response = error_response(exc.code, exc.message, headers=headers_for(exc.code))
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)
