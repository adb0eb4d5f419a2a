"""``hpo token list|revoke`` and ``hpo export`` / ``hpo import``: over REST."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hpo.spec_files import SpecFileError, load_spec_file
from service.cli.client import ApiClient, ClientError
from service.cli.output import Format, OutputOption, emit

console = Console()
err_console = Console(stderr=True)


def tokens_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title=f"API tokens ({len(items)})")
    for column in ("id", "name", "scope", "prefix", "created", "last used", "revoked"):
        table.add_column(column, no_wrap=True)
    for t in items:
        table.add_row(
            str(t["id"]),
            t["name"],
            t["scope"],
            t["prefix"] + "…",
            _day(t["created_at"]),
            _day(t.get("last_used_at")),
            _day(t.get("revoked_at")),
        )
    return table


def _day(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


def register_tokens(token_app: typer.Typer, client_factory: Callable[[], ApiClient]) -> None:
    """Add ``list`` and ``revoke`` to the ``token`` group (they need an admin token)."""

    @token_app.command("list")
    def token_list(output: OutputOption = Format.TABLE) -> None:
        """List API tokens (never their secrets); needs an admin token."""
        items = client_factory().get("/tokens")["items"]
        emit(output, {"items": items}, items, lambda: tokens_table(items))

    @token_app.command("revoke")
    def token_revoke(
        token_id: Annotated[int, typer.Argument(min=1, help="the id from `hpo token list`")],
    ) -> None:
        """Revoke a token; it stops working at once. Needs an admin token."""
        client_factory().delete(f"/tokens/{token_id}")
        console.print(f"revoked token {token_id}")


def register_transfer(app: typer.Typer, client_factory: Callable[[], ApiClient]) -> None:
    """Add ``export`` and ``import``."""

    @app.command("export")
    def export(
        name: str,
        output: OutputOption = Format.JSON,
    ) -> None:
        """Print a study as JSON (spec and finished trials): hpo export NAME > study.json."""
        if output not in (Format.JSON, Format.YAML):
            raise ClientError("-o: an export is json or yaml")
        document = client_factory().get(f"/studies/{name}/export")
        emit(output, document, [], lambda: "")

    @app.command("import")
    def import_(
        path: Annotated[Path, typer.Argument(help="a file written by `hpo export`")],
        name: Annotated[str | None, typer.Option(help="create it under another name")] = None,
    ) -> None:
        """Create a study from an export; its finished trials count against its budget."""
        try:
            document = load_spec_file(path)
        except SpecFileError as exc:
            raise ClientError(exc.message) from None
        if not isinstance(document.get("spec"), dict):
            raise ClientError(f"{path} is not an export of `hpo export` (it has no spec)")
        if name:
            document["spec"] = {**document["spec"], "name": name}
        study = client_factory().post("/studies/import", document)
        trials = len(document.get("trials") or [])
        console.print(
            f"imported study [bold]{study['name']}[/] with {trials} trials "
            f"({study['budget']['finished']}/{study['budget']['n_trials']} finished, "
            f"{study['status']})"
        )
        for warning in study.get("warnings") or []:
            where = ".".join(str(part) for part in warning["loc"])
            err_console.print(f"note: {where}: {warning['msg']}", markup=False, highlight=False)
