"""``hpo``: the service, the workers, the database and a REST client in one command."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from service.cli import admin as admin_commands
from service.cli import dashboard as dashboard_command
from service.cli import demo as demo_command
from service.cli import fleet as fleet_commands
from service.cli import studies as study_commands
from service.cli import trials as trial_commands
from service.cli.client import ApiClient, ClientError
from service.cli.environment import require_extra
from service.cli.startup import (
    configure_logging,
    err_console,
    load_settings,
    refuse_open_public_bind,
)
from storage.errors import HpoError
from storage.settings import Settings

app = typer.Typer(
    help="Hyperparameter optimization service: studies over REST, GPU workers, Optuna and MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
console = Console()


def _client() -> ApiClient:
    settings = load_settings()
    return ApiClient(settings.api_url, settings.api_token)


def _show_version(value: bool) -> None:
    if value:
        from hpo import __version__

        console.print(f"hpo {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Hyperparameter optimization service: studies over REST, GPU workers, Optuna and MLflow."""


study_commands.register(app, _client)
trial_commands.register(app, _client)
fleet_commands.register(app, _client)
admin_commands.register_transfer(app, _client)
admin_commands.register_tokens(token_app, _client)
dashboard_command.register(app)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8000,
    migrate: Annotated[bool, typer.Option(help="upgrade the schemas before serving")] = True,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="server processes (the API is CPU-bound per process)")
    ] = 1,
) -> None:
    """Serve the REST API (OpenAPI at /docs)."""
    require_extra("server", "uvicorn", "fastapi", "sqlalchemy", "optuna")
    import uvicorn

    from service.app import create_app
    from service.redact import install_redaction

    configure_logging()
    settings = load_settings()
    refuse_open_public_bind(settings, host)
    settings.ensure_data_dir()
    if migrate:
        _upgrade(settings)
    else:
        from storage.readiness import check_databases

        check_databases(settings.database_url, settings.optuna_storage)
    install_redaction()
    if workers == 1:
        app: Any = create_app(settings)
    else:
        # Each process builds its own app (and database pools) from the environment.
        app = "service.app:app_from_environment"
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        proxy_headers=False,
        workers=workers,
        factory=workers > 1,
    )


def _upgrade(settings: Settings) -> None:
    require_extra("server", "sqlalchemy", "alembic", "optuna")
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    from storage.migrate import (
        upgrade_mlflow_store,
        upgrade_optuna_schema,
        upgrade_service_database,
    )
    from storage.readiness import describe_db_error, safe_url

    steps: list[tuple[str, str, Callable[[str], None]]] = [
        ("HPO_DATABASE_URL", settings.database_url, upgrade_service_database),
        ("HPO_OPTUNA_STORAGE", settings.optuna_storage, upgrade_optuna_schema),
    ]
    if settings.mlflow_enabled:
        mlflow_uri = settings.mlflow_tracking_uri
        steps.append(("HPO_MLFLOW_TRACKING_URI", mlflow_uri, upgrade_mlflow_store))
    for variable, url, upgrade in steps:
        try:
            upgrade(url)
        except (DBAPIError, ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise ClientError(
                f"{variable}: cannot migrate {safe_url(url)}: {describe_db_error(exc)}"
            ) from None


@app.command()
def worker(
    devices: Annotated[str, typer.Option(help="auto, cpu, or GPU indices such as 0,1")] = "auto",
    per_device: Annotated[
        str,
        typer.Option(
            metavar="N|auto", help="slots per device (1-64), or auto: as many as fit in its memory"
        ),
    ] = "1",
    study: Annotated[list[str] | None, typer.Option(help="only these studies (repeatable)")] = None,
    max_trials: Annotated[
        int | None, typer.Option(min=1, help="each slot exits after this many trials")
    ] = None,
    exit_when_idle: Annotated[bool, typer.Option(help="exit when no study has work left")] = False,
) -> None:
    """Pull and run trials: one process per device slot."""
    require_extra("worker", "torch", "transformers", "optuna", "sqlalchemy", "mlflow")
    from storage.readiness import check_databases
    from workers.supervisor import DeviceError, Supervisor, parse_per_device, resolve_devices

    configure_logging()
    settings = load_settings()
    try:
        resolved = resolve_devices(devices)
        slots = parse_per_device(per_device)
    except DeviceError as exc:
        raise ClientError(str(exc)) from None
    check_databases(settings.database_url, settings.optuna_storage)
    supervisor = Supervisor(settings, resolved, slots, study or [], max_trials, exit_when_idle)
    raise typer.Exit(supervisor.run())


demo_command.register(app, load_settings, _upgrade)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the service schema and Optuna's schema."""
    configure_logging(logging.WARNING)
    settings = load_settings()
    settings.ensure_data_dir()
    _upgrade(settings)
    console.print("service schema and Optuna schema are up to date")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="who or what the token is for")],
    scope: Annotated[str, typer.Option(help="read, write or admin")] = "read",
) -> None:
    """Print a new API token once (only its hash is stored); needs the service database."""
    require_extra("server", "sqlalchemy")
    from storage.db import Database
    from storage.readiness import check_service_schema
    from storage.tokens import Scope, create_token

    if scope not in ("read", "write", "admin"):
        raise ClientError(f"unknown scope {scope!r}: use read, write or admin")
    if not name.strip() or len(name) > 100:
        raise ClientError("--name must be 1 to 100 characters")
    settings = load_settings()
    check_service_schema(settings.database_url)
    database = Database(settings.database_url)
    try:
        with database.session_scope() as session:
            _, token = create_token(session, name, Scope.parse(scope), "cli")
    finally:
        database.dispose()
    err_console.print(f"token for {name!r} ({scope}); it will not be shown again:")
    console.print(token)


def main() -> None:
    """Entry point of the ``hpo`` console script."""
    try:
        app()
    except ClientError as exc:
        # One line per message, however narrow the terminal: people grep these.
        err_console.print(f"[red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        for detail in exc.details:
            err_console.print(f"  - {escape(detail)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except HpoError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
