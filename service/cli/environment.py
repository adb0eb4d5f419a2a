"""Start-up checks of the CLI's environment: mistyped ``HPO_*`` names, missing extras."""

from __future__ import annotations

import difflib
import importlib.util
import os

from rich.console import Console
from rich.markup import escape

from service.cli.client import ClientError
from storage.settings import Settings

# HPO_* names that something other than the settings reads (the tests, the build).
OTHER_VARIABLES = frozenset({"HPO_TEST_POSTGRES_URL", "HPO_TEST_PROCESSES", "HPO_VENV", "HPO_UID"})
_reported = False


def known_variables() -> set[str]:
    """Every ``HPO_*`` name a setting reads, and the few read elsewhere."""
    return {f"HPO_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES


def unknown_variables(environ: dict[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``(name, closest known name or None)`` for each ``HPO_*`` variable nothing reads."""
    environ = dict(os.environ) if environ is None else environ
    known = known_variables()
    found = []
    for name in sorted(environ):
        if name.upper().startswith("HPO_") and name not in known:
            close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.6)
            found.append((name, close[0] if close else None))
    return found


def warn_unknown_variables(console: Console) -> None:
    """Print a warning per unknown ``HPO_*`` variable (once per process)."""
    global _reported  # noqa: PLW0603 - a once-per-process flag
    if _reported:
        return
    _reported = True
    for name, close in unknown_variables():
        hint = f"; did you mean {close}?" if close else ""
        console.print(
            f"[yellow]warning:[/] {escape(name)} is not a setting and is ignored{escape(hint)}",
            highlight=False,
            soft_wrap=True,
        )


def require_extra(extra: str, *modules: str) -> None:
    """Stop with what to install when a module of a role's extra is missing.

    Raises:
        ClientError: one of ``modules`` is not installed.
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ClientError(
            f"this command needs {', '.join(missing)}, which the base install leaves out: "
            f"pip install 'hpo-service[{extra}]'"
        )
