"""``hpo trials``, ``hpo trial`` and ``hpo enqueue``: a study's trials, one trial, a fixed trial."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from service.cli import render
from service.cli.client import ApiClient, ClientError
from service.cli.output import Format, OutputOption, emit, trial_row

STATES = ("RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL")
PAGE = 1000
console = Console()


def all_trials(client: ApiClient, name: str, state: str | None) -> dict[str, Any]:
    """Every trial of ``name`` (all pages) as one page document."""
    items: list[dict[str, Any]] = []
    while True:
        page = client.get(f"/studies/{name}/trials", state=state, limit=PAGE, offset=len(items))
        items.extend(page["items"])
        if not page["items"] or len(items) >= int(page["total"]):
            return {"items": items, "total": len(items), "limit": len(items), "offset": 0}


def curve_summary(curve: dict[str, float | None]) -> str:
    """``12 reports, step 0: 0.61 … step 110: 0.88, best 0.89 at step 90``."""
    points = [(int(step), value) for step, value in curve.items() if value is not None]
    if not points:
        return "no reports"
    points.sort()
    (first_step, first), (last_step, last) = points[0], points[-1]
    best_step, best = max(points, key=lambda p: p[1])
    low_step, low = min(points, key=lambda p: p[1])
    return (
        f"{len(curve)} reports, step {first_step}: {render.fmt(first)} … step {last_step}: "
        f"{render.fmt(last)}; highest {render.fmt(best)} at step {best_step}, "
        f"lowest {render.fmt(low)} at step {low_step}"
    )


def trial_panel(trial: dict[str, Any]) -> Table:
    """A trial for people: what ran, how it learnt, how it ended, where MLflow has it."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    values = trial.get("values") or []
    rows = [
        ("trial", f"#{trial['number']}"),
        ("state", trial["state"]),
        ("value", ", ".join(render.fmt(v) for v in values) if values else None),
        ("params", render.compact_params(trial.get("params") or {}) or None),
        ("curve", curve_summary(trial.get("intermediate_values") or {})),
        (
            "duration",
            f"{render.fmt(trial['duration_s'], 3)} s" if trial.get("duration_s") else None,
        ),
        ("worker", render.short_worker(trial.get("worker")) if trial.get("worker") else None),
        ("device", trial.get("device")),
        ("retry of", f"#{trial['retry_of']}" if trial.get("retry_of") is not None else None),
        ("fail reason", trial.get("fail_reason")),
        ("error", trial.get("error")),
        ("mlflow run", trial.get("mlflow_run_id")),
        ("mlflow", (trial.get("links") or {}).get("mlflow")),
    ]
    for key, value in rows:
        if value is not None:
            grid.add_row(key, str(value))
    return grid


def parse_param(text: str) -> tuple[str, Any]:
    """``name=value``; the value is JSON when it parses (numbers, true, "text"), else text.

    Raises:
        ClientError: no ``=``, or an empty name.
    """
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ClientError(f"--param {text!r}: write it as name=value, e.g. learning_rate=3e-4")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), value


def register(app: typer.Typer, client_factory: Callable[[], ApiClient]) -> None:
    """Add ``trials``, ``trial`` and ``enqueue`` to ``app``."""

    @app.command()
    def trials(
        name: str,
        state: Annotated[
            str | None, typer.Option(help="only trials in this state: " + " ".join(STATES))
        ] = None,
        output: OutputOption = Format.TABLE,
    ) -> None:
        """List every trial of a study, in order of number."""
        if state is not None and state.upper() not in STATES:
            raise ClientError(f"--state {state!r}: use one of {', '.join(STATES)}")
        page = all_trials(client_factory(), name, state.upper() if state else None)
        title = f"trials of {name} ({page['total']})"
        emit(
            output,
            page,
            map(trial_row, page["items"]),
            lambda: render.trials_table(page["items"], title),
        )

    @app.command()
    def trial(
        name: str,
        number: Annotated[int, typer.Argument(min=0, help="the trial's number")],
        output: OutputOption = Format.TABLE,
    ) -> None:
        """One trial: params, learning curve, error and fail reason, MLflow link."""
        found = client_factory().get(f"/studies/{name}/trials/{number}")
        emit(output, found, [trial_row(found)], lambda: trial_panel(found))

    @app.command()
    def enqueue(
        name: str,
        param: Annotated[
            list[str],
            typer.Option("--param", "-p", help="name=value (repeatable); JSON values are typed"),
        ],
    ) -> None:
        """Run a fixed configuration next (some or all search-space parameters)."""
        params = dict(parse_param(p) for p in param)
        answer = client_factory().post(f"/studies/{name}/trials", {"params": params})
        console.print(
            f"enqueued in {name} ({answer['state']}): {render.compact_params(answer['params'])}",
            highlight=False,
        )
