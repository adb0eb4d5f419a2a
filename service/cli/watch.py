"""``hpo watch`` and ``submit --wait``: a study's progress until it ends.

Besides counts and the best value: the elapsed time, an ETA from the trials
finished so far, each running trial's latest report of the objective, and a
warning when no live worker can serve the study.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hpo.progress import Progress, measure
from service.cli import render
from service.cli.client import ApiClient, ClientError

console = Console()


def read_progress(client: ApiClient, study: dict[str, Any]) -> Progress:
    """The progress of ``study`` with its running trials and the live workers."""
    running = client.get(f"/studies/{study['name']}/trials", state="RUNNING", limit=100)
    try:
        workers: list[dict[str, Any]] | None = client.get("/workers")["items"]
    except ClientError:
        workers = None  # not readable with this token: no warning rather than a failure
    return measure(study, running["items"], workers)


def _finished(progress: Progress) -> bool:
    # A cancelled study's running trials still stop at their next report.
    return progress.done and progress.active == 0


def watch_study(client: ApiClient, name: str, interval: float = 2.0) -> dict[str, Any]:
    """Show a study live until it has ended and no trial runs; return its last view.

    On a terminal the view is redrawn in place; otherwise (a log, a pipe) one
    line is printed whenever the counts or the best value change.
    """
    study: dict[str, Any] = client.get(f"/studies/{name}")
    progress = read_progress(client, study)
    if not console.is_terminal:
        return _follow_in_lines(client, study, progress, interval)
    with Live(_view(client, study, progress), console=console, refresh_per_second=4) as live:
        while not _finished(progress):
            time.sleep(interval)
            study = client.get(f"/studies/{name}")
            progress = read_progress(client, study)
            live.update(_view(client, study, progress))
    return study


def _follow_in_lines(
    client: ApiClient, study: dict[str, Any], progress: Progress, interval: float
) -> dict[str, Any]:
    last, warned = "", ""
    while True:
        line = render.progress_line(study)
        if line != last:
            running = progress.running_summary()
            tail = progress.timing() + (f"; running {running}" if running else "")
            text = f"{line}  ({tail})" if tail else line
            console.print(text, highlight=False, soft_wrap=True, markup=False)
            last = line
        if progress.warning and progress.warning != warned:
            console.print(
                f"warning: {progress.warning}", highlight=False, soft_wrap=True, markup=False
            )
            warned = progress.warning
        if _finished(progress):
            return study
        time.sleep(interval)
        study = client.get(f"/studies/{study['name']}")
        progress = read_progress(client, study)


def latest_trials(client: ApiClient, name: str, count: int) -> list[dict[str, Any]]:
    """The ``count`` trials with the highest numbers (pages are in number order)."""
    total = int(client.get(f"/studies/{name}/trials", limit=1)["total"])
    offset = max(0, total - count)
    items: list[dict[str, Any]] = client.get(
        f"/studies/{name}/trials", limit=max(1, min(count, 1000)), offset=offset
    )["items"]
    return items


def progress_grid(progress: Progress) -> Table:
    """Elapsed, ETA, running trials and the worker warning, as rows of a grid."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("progress", progress.summary())
    if progress.running:
        grid.add_row("running", progress.running_summary())
    if progress.warning:
        grid.add_row(Text("warning", style="bold yellow"), Text(progress.warning, style="yellow"))
    return grid


def _view(client: ApiClient, study: dict[str, Any], progress: Progress) -> Group:
    recent = latest_trials(client, study["name"], 8)
    return Group(
        render.study_panel(study), progress_grid(progress), render.trials_table(recent, "latest")
    )
