"""OpenAPI links: a created study leads to every operation that takes its name.

Generated clients and fuzzers (schemathesis' stateful runs) follow links from
``POST /studies`` (and ``POST /studies/import``) to the operations on
``/studies/{name}...``, passing ``$response.body#/name``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_CREATORS = (("/api/v1/studies", "post", "201"), ("/api/v1/studies/import", "post", "201"))
_STUDY_PATH = "/api/v1/studies/{name}"


def study_links(schema: dict[str, Any]) -> dict[str, Any]:
    """One link per operation whose path is under ``/studies/{name}``, named by its id."""
    links: dict[str, Any] = {}
    for path, operations in schema.get("paths", {}).items():
        if not (path == _STUDY_PATH or path.startswith(_STUDY_PATH + "/")):
            continue
        for method, operation in operations.items():
            operation_id = operation.get("operationId")
            if not operation_id:
                continue
            links[operation_id] = {
                "operationId": operation_id,
                "parameters": {"name": "$response.body#/name"},
                "description": f"{method.upper()} {path} of the study just created",
            }
    return links


def install_openapi_links(app: FastAPI) -> None:
    """Serve the app's OpenAPI schema with the links added (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            links = study_links(schema)
            for path, method, status in _CREATORS:
                response = schema["paths"].get(path, {}).get(method, {}).get("responses", {})
                if status in response:
                    response[status]["links"] = links
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
