"""REST-client commands on studies: submit, ls, show, watch, best, pause, resume, cancel, delete."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from service.cli import render
from service.cli.client import ApiClient, ClientError
from service.cli.output import Format, OutputOption, emit, flatten, trial_row
from service.cli.spec_files import load_spec_file
from service.cli.watch import latest_trials, watch_study

__all__ = ["latest_trials", "register", "watch_study"]
console = Console()
err_console = Console(stderr=True)
ClientFactory = Callable[[], ApiClient]
IntervalOption = Annotated[
    float, typer.Option(min=0.1, max=3600, help="seconds between reads of the study")
]
# Where a transition leads; asking for it again is a no-op, not an error.
ALREADY = {"pause": ("paused",), "resume": ("queued", "running"), "cancel": ("cancelled",)}


def study_row(item: dict[str, Any]) -> dict[str, Any]:
    """A study as one CSV row: dotted budget columns, no spec."""
    return flatten({k: v for k, v in item.items() if k not in ("spec", "best", "links", "counts")})


def register(app: typer.Typer, client_factory: ClientFactory) -> None:
    """Add the study commands to ``app``; ``client_factory()`` opens an ApiClient."""
    _register_reads(app, client_factory)
    _register_changes(app, client_factory)


def _register_reads(app: typer.Typer, client_factory: ClientFactory) -> None:
    @app.command()
    def submit(
        spec: Annotated[Path, typer.Argument(help="a study spec, YAML or JSON")],
        wait: Annotated[bool, typer.Option(help="watch the study until it ends")] = False,
        interval: IntervalOption = 2.0,
    ) -> None:
        """Submit a study spec."""
        client = client_factory()
        study = client.post("/studies", load_spec_file(spec))
        console.print(f"created study [bold]{study['name']}[/] ({study['status']})")
        if wait:
            study = watch_study(client, study["name"], interval)
            raise typer.Exit(0 if study["status"] == "completed" else 1)
        console.print(f"follow it with: hpo watch {study['name']}", highlight=False)

    @app.command("ls")
    def list_studies(
        status: Annotated[str | None, typer.Option(help="only studies with this status")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
        output: OutputOption = Format.TABLE,
    ) -> None:
        """List studies, newest first."""
        page = client_factory().get("/studies", status=status, limit=limit)
        emit(output, page, map(study_row, page["items"]), lambda: render.studies_table(page))

    @app.command()
    def show(
        name: str,
        trials: Annotated[int, typer.Option(help="latest trials to list (table)")] = 10,
        output: OutputOption = Format.TABLE,
    ) -> None:
        """Show a study: status, budget, counts, best trial, links."""
        client = client_factory()
        study = client.get(f"/studies/{name}")

        def table() -> list[Any]:
            parts: list[Any] = [render.study_panel(study)]
            if trials > 0:
                parts.append(render.trials_table(latest_trials(client, name, trials), "latest"))
            return parts

        row = study_row(study) | {f"counts.{k}": v for k, v in study["counts"].items()}
        emit(output, study, [row], table)

    @app.command()
    def watch(name: str, interval: IntervalOption = 2.0) -> None:
        """Follow a study live until it ends: progress, ETA, running trials, warnings."""
        watch_study(client_factory(), name, interval)

    @app.command()
    def best(name: str, output: OutputOption = Format.TABLE) -> None:
        """Show the best trial (or the Pareto front)."""
        result = client_factory().get(f"/studies/{name}/best")
        trials = result.get("pareto_front", [result])
        if "pareto_front" in result:
            emit(
                output,
                result,
                map(trial_row, trials),
                lambda: render.trials_table(trials, "Pareto front"),
            )
        else:
            emit(output, result, [trial_row(result)], lambda: render.trial_detail(result))


def _register_changes(app: typer.Typer, client_factory: ClientFactory) -> None:
    def _transition(name: str, action: str) -> None:
        client = client_factory()
        try:
            study = client.post(f"/studies/{name}/{action}")
        except ClientError as exc:
            if exc.status != 409:
                raise
            study = client.get(f"/studies/{name}")
            if study["status"] not in ALREADY[action]:
                raise
            err_console.print(f"note: {name} is already {study['status']}; nothing to do")
        console.print(f"{name}: {study['status']}")

    @app.command()
    def pause(name: str) -> None:
        """Pause a study (running trials finish); a paused study stays paused."""
        _transition(name, "pause")

    @app.command()
    def resume(name: str) -> None:
        """Resume a paused study; a study that is not paused is left as it is."""
        _transition(name, "resume")

    @app.command()
    def cancel(name: str) -> None:
        """Cancel a study (running trials stop at their next report)."""
        _transition(name, "cancel")

    @app.command()
    def delete(
        name: str,
        yes: Annotated[
            bool, typer.Option("--yes", "-y", help="do not ask for confirmation")
        ] = False,
    ) -> None:
        """Delete a study and its trials (asks first unless --yes)."""
        client = client_factory()
        if not yes:
            study = client.get(f"/studies/{name}")
            counts = "  ".join(f"{k} {v}" for k, v in study["counts"].items() if v) or "no trials"
            if not typer.confirm(
                f"delete study {name} ({study['status']}; {counts}) and all its trials?",
                err=True,
            ):
                err_console.print("not deleted")
                raise typer.Exit(1)
        client.delete(f"/studies/{name}")
        console.print(f"deleted {name}")
