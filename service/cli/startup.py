"""What the commands that serve or run do first: logging, settings, the authentication guard."""

from __future__ import annotations

import logging

from pydantic import ValidationError
from rich.console import Console

from service.cli.client import ClientError
from service.cli.environment import warn_unknown_variables
from storage.settings import Settings, is_loopback

err_console = Console(stderr=True)


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def load_settings() -> Settings:
    """The settings from ``HPO_*``; a bad value is a user error, not a traceback.

    ``HPO_*`` variables that no setting reads are reported (with the closest
    known name), once per process: a typo would otherwise be silently ignored.

    Raises:
        ClientError: a variable holds an invalid value.
    """
    warn_unknown_variables(err_console)
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"HPO_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ClientError(f"invalid configuration: {problems}") from None


def refuse_open_public_bind(settings: Settings, host: str, what: str | None = None) -> None:
    """Refuse to serve (``what``, if named) without authentication but on a loopback address.

    Raises:
        ClientError: ``HPO_ADMIN_TOKEN`` is unset and ``host`` is not a loopback address.
    """
    if settings.admin_token is None and not is_loopback(host):
        raise ClientError(
            f"refusing to serve{f' {what}' if what else ''} on {host} without authentication: set "
            "HPO_ADMIN_TOKEN, or bind a loopback address"
        )
