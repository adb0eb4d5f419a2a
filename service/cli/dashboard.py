"""``hpo dashboard``: the Optuna dashboard behind the service's authentication."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli.client import ClientError
from service.cli.startup import configure_logging, load_settings, refuse_open_public_bind
from storage.errors import UnavailableError
from storage.settings import Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp

logger = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    """Add the ``dashboard`` command to ``app``."""
    app.command("dashboard")(dashboard)


def dashboard(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to bind")] = 8080,
    secure_cookie: Annotated[
        bool, typer.Option(help="mark the session cookie Secure (behind a TLS proxy)")
    ] = False,
) -> None:
    """Serve the Optuna dashboard at / of its own port, behind the API's tokens.

    Sign in at /login with an API token, or send Authorization: Bearer <token>.
    """
    from service.cli.environment import require_extra

    require_extra("server", "uvicorn", "optuna_dashboard", "sqlalchemy")
    import uvicorn

    from service.redact import install_redaction

    configure_logging()
    settings = load_settings()
    refuse_open_public_bind(settings, host, "the dashboard")
    app = _open_app(settings, secure_cookie)
    logger.info("dashboard on http://%s:%d/dashboard", host, port)
    install_redaction()
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False)


def _open_app(settings: Settings, secure_cookie: bool) -> ASGIApp:
    """The dashboard app, with storage failures turned into one-line errors.

    Raises:
        ClientError: Optuna's storage cannot be opened (down, or not migrated).
    """
    # Imported here: optuna and the web stack would slow every other command down.
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import DBAPIError

    from service.dashboard import create_dashboard_app

    try:
        return create_dashboard_app(settings, secure_cookie=secure_cookie)
    except (StorageInternalError, DBAPIError, UnavailableError):
        # The URL may hold a password; the exception text would repeat it.
        logger.debug("opening the storage failed", exc_info=True)
        raise ClientError(
            "cannot open the Optuna storage (HPO_OPTUNA_STORAGE): is the database "
            "reachable, and has `hpo db upgrade` created its schema?"
        ) from None


def main() -> None:
    """``python -m service.cli.dashboard``: this command on its own."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    try:
        app()
    except ClientError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
