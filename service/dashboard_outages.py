"""optuna-dashboard during a storage outage: the API's 503, never its own 500.

optuna-dashboard catches every exception of its handlers itself (its
``json_api_view`` answers ``500 {"reason": "internal server error"}``, bottle's
catch-all an HTML 500), so no exception reaches the gateway to be mapped.
Instead, the Optuna storage's engine reports each connection-level error
(SQLAlchemy's ``handle_error`` event, raised in the thread and context that
serve the request), and :class:`OutageAnswers`, the WSGI app around
optuna-dashboard, answers a request that ended in a 500 after such an error
with the API's 503 and its Retry-After. A 500 without one (a bug, a broken
schema) stays a 500: waiting would not cure it, and Retry-After would say so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextvars import ContextVar
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event

from service.errors import storage_unavailable
from storage.db import is_outage

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(__name__)

# The connection errors seen while serving the current request; None outside one.
_OUTAGES: ContextVar[list[str] | None] = ContextVar("hpo_dashboard_outages", default=None)


def report_outages(engine: Engine) -> None:
    """Have ``engine`` note each connection-level error on the request being served."""

    def on_error(context: Any) -> None:
        seen = _OUTAGES.get()
        error = context.sqlalchemy_exception or context.original_exception
        if seen is not None and (context.is_disconnect or is_outage(error)):
            seen.append(type(context.original_exception).__name__)

    event.listen(engine, "handle_error", on_error)


class OutageAnswers:
    """WSGI: a 500 after a connection-level storage error becomes the API's 503."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        unavailable = storage_unavailable()
        self.status = f"{unavailable.status_code} {HTTPStatus(unavailable.status_code).phrase}"
        self.headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in unavailable.raw_headers
        ]
        self.body = bytes(unavailable.body)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        seen: list[str] = []
        replaced = False

        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal replaced
            if not (status.startswith("500") and seen):
                return start_response(status, headers, exc_info)
            replaced = True
            logger.warning(
                "Optuna storage unavailable on %s %s (%s)",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                ", ".join(sorted(set(seen))),
            )
            # No exc_info: the error is answered here, not re-raised by the server.
            return start_response(self.status, self.headers)

        token = _OUTAGES.set(seen)
        try:
            body = self.app(environ, respond)
        finally:
            _OUTAGES.reset(token)
        if not replaced:
            return body
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [self.body]
