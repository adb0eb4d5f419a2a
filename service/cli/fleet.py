"""``hpo workers`` and ``hpo tasks``: who runs trials, and what they can run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
import yaml
from rich.console import Group
from rich.syntax import Syntax
from rich.table import Table

from service.cli import render
from service.cli.client import ApiClient, ClientError
from service.cli.output import Format, OutputOption, emit, flatten


def workers_table(page: dict[str, Any]) -> Table:
    table = Table(title=f"live workers ({page['total']})")
    for column in ("worker", "device", "status", "study", "trial", "trials run", "heartbeat"):
        table.add_column(column, no_wrap=True)
    for w in page["items"]:
        table.add_row(
            render.short_worker(w["id"]),
            w["device"],
            w["status"],
            w.get("study") or "-",
            "-" if w.get("trial_number") is None else f"#{w['trial_number']}",
            str(w["trials_run"]),
            str(w["heartbeat_at"])[:19].replace("T", " "),
        )
    if not page["items"]:
        table.caption = "no live worker: start one with `hpo worker`"
    return table


def tasks_table(tasks: list[dict[str, Any]]) -> Table:
    table = Table(title="tasks")
    for column in ("task", "metrics", "searched by default"):
        table.add_column(column)
    table.add_column("description", overflow="fold")
    for task in tasks:
        table.add_row(
            task["name"],
            ", ".join(task["metrics"]),
            ", ".join(task["default_search_space"]),
            task["description"],
        )
    table.caption = "hpo tasks NAME: its config schema and default search space"
    return table


def task_detail(task: dict[str, Any]) -> Group:
    """Description, metrics, the config fields and the default search space(s)."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    head.add_row("task", task["name"])
    head.add_row("description", task["description"])
    head.add_row("metrics", ", ".join(task["metrics"]))
    if fidelity := task.get("fidelity"):
        head.add_row("fidelity", f"{fidelity['unit']}; up to {fidelity['maximum']}")
    fields = Table(title="config (task.config)")
    for column in ("field", "type", "default"):
        fields.add_column(column)
    fields.add_column("description", overflow="fold")
    for name, prop in (task["config_schema"].get("properties") or {}).items():
        kind = prop.get("type") or " | ".join(
            str(p.get("type", p.get("$ref", "?")).rsplit("/", 1)[-1]) for p in prop.get("anyOf", [])
        )
        fields.add_row(
            name, str(kind), json.dumps(prop.get("default")), prop.get("description", "")
        )
    spaces = task.get("default_search_spaces") or {"default": task["default_search_space"]}
    space_text = yaml.safe_dump({"search_space": spaces}, sort_keys=False).rstrip()
    return Group(head, fields, Syntax(space_text, "yaml", theme="ansi_dark"))


def register(app: typer.Typer, client_factory: Callable[[], ApiClient]) -> None:
    """Add ``workers`` and ``tasks`` to ``app``."""

    @app.command()
    def workers(output: OutputOption = Format.TABLE) -> None:
        """Live worker slots: device, status, the study and trial each runs now."""
        page = client_factory().get("/workers")
        emit(output, page, map(flatten, page["items"]), lambda: workers_table(page))

    @app.command()
    def tasks(
        name: Annotated[str | None, typer.Argument(help="one task: its schema and space")] = None,
        output: OutputOption = Format.TABLE,
    ) -> None:
        """Built-in tasks; with NAME, its config schema and default search space."""
        items: list[dict[str, Any]] = client_factory().get("/tasks")["items"]
        if name is None:
            rows = [
                {"name": t["name"], "metrics": t["metrics"], "description": t["description"]}
                for t in items
            ]
            emit(output, {"items": items}, rows, lambda: tasks_table(items))
            return
        task = next((t for t in items if t["name"] == name), None)
        if task is None:
            known = ", ".join(t["name"] for t in items)
            raise ClientError(
                f"no built-in task {name!r} (tasks: {known}; "
                "custom tasks are python:module:function)"
            )
        rows = [{"parameter": k, **flatten(v)} for k, v in task["default_search_space"].items()]
        emit(output, task, rows, lambda: task_detail(task))
