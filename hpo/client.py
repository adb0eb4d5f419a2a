"""``hpo.Client``: studies, workers and tasks of one service, over REST."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hpo._http import Http
from hpo.models import Task, Worker
from hpo.spec_files import load_spec_file
from hpo.study import Study

DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    """A connection to one service's API.

    Args:
        url: the API's address; default ``HPO_API_URL`` or ``http://127.0.0.1:8000``.
        token: an API token; default ``HPO_API_TOKEN`` (none: for a server without auth).
        timeout: seconds to wait for each response.

    Every call raises :class:`hpo.ApiError` when the API refuses it, and
    :class:`hpo.ApiConnectionError` / :class:`hpo.ApiTimeout` (naming the
    URL) when the API cannot be reached.
    """

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.url = (url or os.environ.get("HPO_API_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("HPO_API_TOKEN") or None
        self._http = Http(self.url, token, timeout)

    def __repr__(self) -> str:
        return f"<hpo.Client {self.url}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, spec: dict[str, Any] | str | os.PathLike[str] | Any) -> Study:
        """Create a study from a spec: a dict, a YAML/JSON file's path, or a pydantic model.

        Raises:
            ApiError: ``invalid_spec`` (422, ``errors`` name the fields) or ``conflict``
                (409, the name is taken).
            SpecFileError: the file cannot be read or parsed (with file, line and reason).
        """
        return Study(self._http, self._http.post("/studies", spec_document(spec)))

    def study(self, name: str) -> Study:
        """The study called ``name`` (ApiError 404 when there is none)."""
        return Study(self._http, self._http.get(f"/studies/{name}"))

    def studies(self, status: str | None = None) -> list[Study]:
        """Every study (all pages), newest first; ``status`` keeps only those in that status."""
        return [Study(self._http, item) for item in self._http.pages("/studies", status=status)]

    def workers(self) -> list[Worker]:
        """Live worker slots: device, status, the study and trial each runs now."""
        return [Worker.from_api(w) for w in self._http.get("/workers")["items"]]

    def tasks(self) -> list[Task]:
        """Built-in tasks with their metrics, config schema and default search space."""
        return [Task.from_api(t) for t in self._http.get("/tasks")["items"]]

    def task(self, name: str) -> Task:
        """One built-in task by name.

        Raises:
            KeyError: no built-in task has that name.
        """
        for task in self.tasks():
            if task.name == name:
                return task
        raise KeyError(f"no built-in task {name!r}")

    def import_study(self, document: dict[str, Any] | str | os.PathLike[str]) -> Study:
        """Recreate a study from :meth:`Study.export`'s document (or a JSON file of it).

        Its spec creates the study; its finished trials (params, values,
        learning curves, user attributes) are added and count against the budget.

        Raises:
            ApiError: 409 when a study of that name exists, 422 for a bad document.
        """
        if not isinstance(document, dict):
            document = load_spec_file(Path(document))
        return Study(self._http, self._http.post("/studies/import", document))


def spec_document(spec: dict[str, Any] | str | os.PathLike[str] | Any) -> dict[str, Any]:
    """The JSON document of a spec given as a dict, a file path or a pydantic model.

    Raises:
        TypeError: ``spec`` is none of those.
    """
    if isinstance(spec, dict):
        return spec
    if isinstance(spec, str | os.PathLike):
        return load_spec_file(Path(spec))
    dump = getattr(spec, "model_dump", None)
    if callable(dump):
        document: dict[str, Any] = dump(mode="json", exclude_unset=True)
        return document
    raise TypeError(
        f"a spec is a dict, a YAML/JSON file's path or a pydantic model, not {type(spec).__name__}"
    )
