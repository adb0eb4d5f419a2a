"""Trials as a pandas DataFrame with Optuna's column names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpo.models import Trial

if TYPE_CHECKING:
    import pandas as pd


def trial_row(trial: Trial, n_objectives: int) -> dict[str, Any]:
    """One row: Optuna's ``trials_dataframe`` columns, then the service's own."""
    row: dict[str, Any] = {"number": trial.number}
    if n_objectives == 1:
        row["value"] = trial.value
    else:
        values = trial.values or [None] * n_objectives
        row.update({f"values_{i}": v for i, v in enumerate(values)})
    row["datetime_start"] = trial.datetime_start
    row["datetime_complete"] = trial.datetime_complete
    row["duration"] = trial.duration
    row.update({f"params_{k}": v for k, v in sorted(trial.params.items())})
    row.update({f"user_attrs_{k}": v for k, v in sorted(trial.user_attrs.items())})
    row["state"] = trial.state
    row["worker"] = trial.worker
    row["device"] = trial.device
    row["fail_reason"] = trial.fail_reason
    row["mlflow_run_id"] = trial.mlflow_run_id
    return row


def trials_frame(trials: list[Trial], n_objectives: int) -> pd.DataFrame:
    """A DataFrame of ``trials``, one row each, columns in Optuna's order.

    Raises:
        ImportError: pandas is not installed (it comes with the base install).
    """
    import pandas as pd

    rows = [trial_row(t, n_objectives) for t in trials]
    if not rows:
        value_columns = (
            ["value"] if n_objectives == 1 else [f"values_{i}" for i in range(n_objectives)]
        )
        empty = ["number", *value_columns, "datetime_start", "datetime_complete", "duration"]
        return pd.DataFrame(columns=[*empty, "state"])
    # Params appear in the order of first use; later trials may add some (conditional spaces).
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    fixed = [c for c in columns if not c.startswith(("params_", "user_attrs_"))]
    params = sorted(c for c in columns if c.startswith("params_"))
    attrs = sorted(c for c in columns if c.startswith("user_attrs_"))
    head = fixed[: fixed.index("duration") + 1]
    tail = fixed[fixed.index("duration") + 1 :]
    return pd.DataFrame(rows, columns=[*head, *params, *attrs, *tail])
