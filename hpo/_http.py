"""The one place the client talks HTTP: JSON in, JSON out, failures as ApiError."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from hpo.errors import error_from_response, error_from_transport

API_PREFIX = "/api/v1"
PAGE_SIZE = 500


class Http:
    """Requests to ``<url>/api/v1`` with the token; bodies decoded from JSON."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=self.url + API_PREFIX, headers=headers, timeout=timeout
        )

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body (None for an empty one).

        Raises:
            ApiError: an error status; ApiConnectionError / ApiTimeout (naming the URL)
                when no response came.
        """
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, self.url) from None
        if response.status_code >= 400:
            raise error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paged collection (``{items, total, limit, offset}``)."""
        offset = 0
        while True:
            page = self.get(path, limit=PAGE_SIZE, offset=offset, **params)
            items: list[dict[str, Any]] = page["items"]
            yield from items
            offset += len(items)
            if not items or offset >= int(page["total"]):
                return
