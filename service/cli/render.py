"""Rich renderings of studies, trials and workers for the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {
    "queued": "cyan",
    "running": "green",
    "paused": "yellow",
    "completed": "bold green",
    "cancelled": "magenta",
    "failed": "bold red",
}
STATE_STYLE = {
    "COMPLETE": "green",
    "PRUNED": "yellow",
    "FAIL": "red",
    "RUNNING": "cyan",
    "WAITING": "white",
}


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def studies_table(page: dict[str, Any]) -> Table:
    table = Table(title=f"studies ({page['total']})")
    for column in ("name", "status", "task", "finished", "active", "priority", "created"):
        table.add_column(column)
    for item in page["items"]:
        budget = item["budget"]
        table.add_row(
            item["name"],
            Text(item["status"], style=STATUS_STYLE.get(item["status"], "")),
            item["task"],
            f"{budget['finished']}/{budget['n_trials']}",
            str(budget["active"]),
            str(item["priority"]),
            item["created_at"][:19].replace("T", " "),
        )
    return table


def study_panel(study: dict[str, Any]) -> Group:
    spec = study["spec"]
    objectives = spec.get("objectives") or [spec.get("objective")]
    lines = Table.grid(padding=(0, 2))
    lines.add_column(style="bold")
    lines.add_column()
    lines.add_row("study", study["name"])
    status = Text(study["status"], style=STATUS_STYLE.get(study["status"], ""))
    if study.get("status_reason"):
        status.append(f"  ({study['status_reason']})", style="dim")
    lines.add_row("status", status)
    lines.add_row("task", spec["task"]["name"])
    lines.add_row(
        "objective", ", ".join(f"{o['direction']} {o['metric']}" for o in objectives if o)
    )
    budget = study["budget"]
    lines.add_row(
        "budget",
        f"{budget['finished']}/{budget['n_trials']} finished, "
        f"{budget['active']} running (max {budget['max_concurrent_trials']}), "
        f"{budget['lost']} lost and retried",
    )
    lines.add_row("compute", compute_line(budget))
    if budget.get("stop_reason") and study["status"] not in ("completed", "failed", "cancelled"):
        lines.add_row("stopping", f"{budget['stop_reason']}: no new trials; running ones finish")
    counts = study.get("counts") or {}
    lines.add_row("trials", "  ".join(f"{k} {v}" for k, v in counts.items()))
    best = study.get("best")
    if best:
        lines.add_row("best", f"#{best['number']} value {fmt(best['value'])}  {best['params']}")
    for name, link in (study.get("links") or {}).items():
        if link:
            lines.add_row(name, link)
    return Group(lines)


def compute_line(budget: dict[str, Any]) -> str:
    """Device-seconds and examples used, against their budgets, and what pruning saved."""
    used = f"{fmt(budget.get('compute_s', 0.0))} device-s"
    if budget.get("max_compute_s") is not None:
        used += f" of {fmt(budget['max_compute_s'])}"
    used += f", {budget.get('train_examples', 0)} examples"
    if budget.get("max_train_examples") is not None:
        used += f" of {budget['max_train_examples']}"
    if budget.get("compute_saved_s"):
        used += f", pruning saved {fmt(budget['compute_saved_s'])} device-s"
    return used


def progress_line(study: dict[str, Any]) -> str:
    """One plain line of a study's progress, for logs and pipes."""
    budget = study["budget"]
    counts = "  ".join(f"{k} {v}" for k, v in (study.get("counts") or {}).items() if v)
    line = (
        f"{study['name']}: {study['status']}  {budget['finished']}/{budget['n_trials']} finished"
        f"{f'  ({counts})' if counts else ''}"
    )
    best = study.get("best")
    if best:
        line += f"  best #{best['number']} {fmt(best.get('value'))}"
    return line


def short_worker(worker: str | None) -> str:
    """``host:device:slot`` of a worker id (which also holds the pid and a nonce)."""
    return ":".join(worker.split(":")[:3]) if worker else "-"


def compact_params(params: dict[str, Any]) -> str:
    return "  ".join(f"{k}={fmt(v, 3)}" for k, v in params.items())


def trials_table(trials: list[dict[str, Any]], title: str = "trials") -> Table:
    table = Table(title=title)
    for column in ("#", "state", "value", "steps", "duration", "worker"):
        table.add_column(column, no_wrap=True)
    table.add_column("params", overflow="fold")
    for trial in trials:
        values = trial.get("values") or []
        value = ", ".join(fmt(v) for v in values) if values else "-"
        state = trial["state"]
        if trial.get("fail_reason"):
            state += f" ({trial['fail_reason']})"
        table.add_row(
            str(trial["number"]),
            Text(state, style=STATE_STYLE.get(trial["state"], "")),
            value,
            str(len(trial.get("intermediate_values") or {})),
            fmt(trial.get("duration_s"), 3),
            short_worker(trial.get("worker")),
            compact_params(trial["params"]),
        )
    return table


def trial_detail(trial: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key in (
        "number",
        "state",
        "value",
        "values",
        "params",
        "duration_s",
        "worker",
        "device",
        "retry_of",
        "fail_reason",
        "error",
        "mlflow_run_id",
    ):
        if trial.get(key) is not None:
            grid.add_row(key, fmt(trial[key]))
    for key, link in (trial.get("links") or {}).items():
        if link:
            grid.add_row(key, link)
    return grid
