"""REST-client commands: submit, ls, show, watch, best, pause, resume, cancel, delete."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live

from service.cli import render
from service.cli.client import ApiClient
from service.cli.spec_files import load_spec_file

TERMINAL = {"completed", "cancelled", "failed"}
console = Console()


def watch_study(client: ApiClient, name: str, interval: float = 2.0) -> dict[str, Any]:
    """Show a study live until it reaches a final status; return its last view.

    On a terminal the view is redrawn in place; otherwise (a log, a pipe) one
    line is printed whenever the counts or the best value change.
    """
    study: dict[str, Any] = client.get(f"/studies/{name}")
    if not console.is_terminal:
        return _follow_in_lines(client, study, interval)
    with Live(_watch_view(client, study), console=console, refresh_per_second=4) as live:
        while study["status"] not in TERMINAL:
            time.sleep(interval)
            study = client.get(f"/studies/{name}")
            live.update(_watch_view(client, study))
    return study


def _follow_in_lines(client: ApiClient, study: dict[str, Any], interval: float) -> dict[str, Any]:
    last = ""
    while True:
        line = render.progress_line(study)
        if line != last:
            console.print(line, highlight=False, soft_wrap=True)
            last = line
        if study["status"] in TERMINAL:
            return study
        time.sleep(interval)
        study = client.get(f"/studies/{study['name']}")


def latest_trials(client: ApiClient, name: str, count: int) -> list[dict[str, Any]]:
    """The ``count`` trials with the highest numbers (pages are in number order)."""
    total = int(client.get(f"/studies/{name}/trials", limit=1)["total"])
    offset = max(0, total - count)
    items: list[dict[str, Any]] = client.get(
        f"/studies/{name}/trials", limit=max(1, min(count, 1000)), offset=offset
    )["items"]
    return items


def _watch_view(client: ApiClient, study: dict[str, Any]) -> Group:
    recent = latest_trials(client, study["name"], 8)
    return Group(render.study_panel(study), render.trials_table(recent, "latest trials"))


def register(app: typer.Typer, client_factory: Any) -> None:
    """Add the client commands to ``app``; ``client_factory()`` opens an ApiClient."""

    @app.command()
    def submit(
        spec: Annotated[Path, typer.Argument(help="a study spec, YAML or JSON")],
        wait: Annotated[bool, typer.Option(help="watch the study until it ends")] = False,
    ) -> None:
        """Submit a study spec."""
        client = client_factory()
        study = client.post("/studies", load_spec_file(spec))
        console.print(f"created study [bold]{study['name']}[/] ({study['status']})")
        if wait:
            study = watch_study(client, study["name"])
            raise typer.Exit(0 if study["status"] == "completed" else 1)

    @app.command("ls")
    def list_studies(
        status: Annotated[str | None, typer.Option(help="only studies with this status")] = None,
        limit: int = 50,
    ) -> None:
        """List studies."""
        console.print(
            render.studies_table(client_factory().get("/studies", status=status, limit=limit))
        )

    @app.command()
    def show(
        name: str, trials: Annotated[int, typer.Option(help="latest trials to list")] = 10
    ) -> None:
        """Show a study: status, budget, counts, best trial, links."""
        client = client_factory()
        console.print(render.study_panel(client.get(f"/studies/{name}")))
        if trials > 0:
            recent = latest_trials(client, name, trials)
            console.print(render.trials_table(recent, "latest trials"))

    @app.command()
    def watch(name: str) -> None:
        """Follow a study live until it ends."""
        watch_study(client_factory(), name)

    @app.command()
    def best(name: str) -> None:
        """Show the best trial (or the Pareto front)."""
        result = client_factory().get(f"/studies/{name}/best")
        if "pareto_front" in result:
            console.print(render.trials_table(result["pareto_front"], "Pareto front"))
        else:
            console.print(render.trial_detail(result))

    def _transition(name: str, action: str) -> None:
        study = client_factory().post(f"/studies/{name}/{action}")
        console.print(f"{name}: {study['status']}")

    @app.command()
    def pause(name: str) -> None:
        """Pause a study (running trials finish)."""
        _transition(name, "pause")

    @app.command()
    def resume(name: str) -> None:
        """Resume a paused study."""
        _transition(name, "resume")

    @app.command()
    def cancel(name: str) -> None:
        """Cancel a study (running trials stop at their next report)."""
        _transition(name, "cancel")

    @app.command()
    def delete(name: str) -> None:
        """Delete a study and its trials."""
        client_factory().delete(f"/studies/{name}")
        console.print(f"deleted {name}")
