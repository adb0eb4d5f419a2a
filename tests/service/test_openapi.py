"""OpenAPI tells the truth: the statuses of unparsable bodies, links from created studies."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from storage.states import ErrorCode, FailReason

BODIES = [b"\xff\xfe{", b"{", b"[1, 2", b"\x00"]


def _operations_with_bodies(schema: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (path, method)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    ]


@pytest.mark.parametrize("body", BODIES, ids=["not-utf8", "truncated", "list", "nul"])
def test_unparsable_bodies_get_documented_statuses(client: TestClient, body: bytes) -> None:
    schema = client.get("/openapi.json").json()
    operations = _operations_with_bodies(schema)
    assert ("/api/v1/studies", "post") in operations and len(operations) >= 4
    for path, method in operations:
        url = path.replace("{name}", "some-study")
        response = client.request(
            method.upper(), url, content=body, headers={"Content-Type": "application/json"}
        )
        documented = schema["paths"][path][method]["responses"]
        assert str(response.status_code) in documented, (path, response.status_code)
        assert response.json()["code"] in ("invalid_request", "invalid_spec", "not_found")


def test_created_studies_link_to_the_operations_on_them(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    ids = {
        op["operationId"]: path
        for path, operations in schema["paths"].items()
        for op in operations.values()
    }
    for creator in ("/api/v1/studies", "/api/v1/studies/import"):
        links = schema["paths"][creator]["post"]["responses"]["201"]["links"]
        targets = {ids[link["operationId"]] for link in links.values()}
        assert {
            "/api/v1/studies/{name}",
            "/api/v1/studies/{name}/trials",
            "/api/v1/studies/{name}/trials/{number}",
            "/api/v1/studies/{name}/best",
            "/api/v1/studies/{name}/pause",
            "/api/v1/studies/{name}/export",
        } <= targets
        assert all(
            link["parameters"] == {"name": "$response.body#/name"} for link in links.values()
        )


def test_every_fail_reason_and_error_code_is_listed(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert set(components["FailReason"]["enum"]) == {r.value for r in FailReason}
    reason = components["TrialOut"]["properties"]["fail_reason"]
    assert {"$ref": "#/components/schemas/FailReason"} in reason["anyOf"]
    assert set(components["ErrorCode"]["enum"]) == {c.value for c in ErrorCode}
    assert components["ErrorOut"]["properties"]["code"]["$ref"].endswith("/ErrorCode")
