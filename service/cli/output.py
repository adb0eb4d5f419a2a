"""``-o table|json|yaml|csv``: every read command prints the API's data in these forms.

``json`` and ``yaml`` print the API's document as it came; ``csv`` prints one
row per item with nested fields flattened (``budget.finished``) and trial
parameters as Optuna names them in DataFrames (``params_<name>``).
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console, RenderableType


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"
    CSV = "csv"


OutputOption = Annotated[
    Format,
    typer.Option("--output", "-o", help="table (for people), json, yaml or csv (for programs)"),
]
console = Console()
# Plain output for programs: no colours, no wrapping, no markup.
plain = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)


def emit(
    fmt: Format,
    document: Any,
    rows: Iterable[dict[str, Any]],
    table: Callable[[], RenderableType | list[RenderableType]],
) -> None:
    """Print ``document`` (json, yaml), ``rows`` (csv) or ``table()`` (table)."""
    if fmt is Format.JSON:
        plain.out(json.dumps(document, indent=2, ensure_ascii=False))
    elif fmt is Format.YAML:
        plain.out(yaml.safe_dump(document, sort_keys=False, allow_unicode=True).rstrip())
    elif fmt is Format.CSV:
        plain.out(to_csv(list(rows)).rstrip("\n"))
    else:
        rendered = table()
        for item in rendered if isinstance(rendered, list) else [rendered]:
            console.print(item)


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with a header of every column any row has, in order of first appearance."""
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value


def flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted columns; lists stay values (CSV writes them as JSON)."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def trial_row(trial: dict[str, Any]) -> dict[str, Any]:
    """A trial as a CSV row: Optuna's DataFrame names for number, values and params."""
    values = trial.get("values") or []
    row: dict[str, Any] = {"number": trial["number"], "state": trial["state"]}
    if len(values) <= 1:
        row["value"] = trial.get("value")
    else:
        row.update({f"values_{i}": v for i, v in enumerate(values)})
    row.update({f"params_{k}": v for k, v in sorted((trial.get("params") or {}).items())})
    curve = trial.get("intermediate_values") or {}
    row["steps"] = len(curve)
    for key in ("datetime_start", "datetime_complete", "duration_s", "worker", "device"):
        row[key] = trial.get(key)
    for key in ("retry_of", "fail_reason", "error", "mlflow_run_id"):
        row[key] = trial.get(key)
    return row
