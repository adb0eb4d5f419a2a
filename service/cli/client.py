"""A small REST client for the CLI that turns failures into one-line messages."""

from __future__ import annotations

from typing import Any

import httpx

API_PREFIX = "/api/v1"


class ClientError(Exception):
    """A failure to show the user as one line (plus located details)."""

    def __init__(self, message: str, details: list[str] | None = None, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.status = status


class ApiClient:
    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url + API_PREFIX, headers=headers, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the decoded JSON body (None for 204).

        Raises:
            ClientError: unreachable server, or an error status with the server's message.
        """
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach the API at {self.base_url} ({type(exc).__name__}); is `hpo serve` "
                "running, and is HPO_API_URL right?"
            ) from None
        if response.status_code >= 400:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _error_from(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = body.get("message") or response.reason_phrase or "request failed"
    details = [
        f"{'.'.join(str(p) for p in err.get('loc', [])) or '(document)'}: {err.get('msg')}"
        for err in body.get("errors", [])
        if isinstance(err, dict)
    ]
    hint = {
        401: " (set HPO_API_TOKEN to a valid token)",
        403: " (this token's scope is too small)",
    }.get(response.status_code, "")
    return ClientError(
        f"HTTP {response.status_code}: {message}{hint}", details, response.status_code
    )
