"""Hide the dashboard's controls that the gateway refuses.

optuna-dashboard shows buttons to create, rename and delete studies, to tell
(complete or fail) trials and to upload or delete artifacts; the gateway
refuses all of those (studies and trials belong to the REST API), and a
read-scope principal may not even edit notes. A button that only ever fails
is a trap, so every dashboard page gets a small script (served from the
dashboard's own origin: its Content-Security-Policy allows no inline script)
that hides them as the single-page app renders them.
"""

from __future__ import annotations

import json
import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

SCRIPT_PATH = "/hpo/controls.js"
READ_ONLY_SCRIPT_PATH = "/hpo/controls-read-only.js"
# optuna-dashboard 0.21's own labels (tests check them against its bundle).
REFUSED_LABELS = ("delete study", "rename study", "delete artifact", "skip trial")
REFUSED_TEXTS = ("Create", "Fail Trial", "Upload", "Upload a New Image", "Upload a New File")
# The trial form's Submit tells Optuna a result; the note editor's buttons write notes.
FORM_TEXTS = ("Submit",)
NOTE_TEXTS = ("Edit", "Save")
_HEAD_END = re.compile(rb"</head>", re.IGNORECASE)
_CONDITIONAL = frozenset({b"if-modified-since", b"if-none-match", b"range", b"if-range"})

_SCRIPT = """(function () {
  "use strict";
  var labels = %(labels)s, texts = %(texts)s;
  function hide(root) {
    root.querySelectorAll("button").forEach(function (b) {
      var label = (b.getAttribute("aria-label") || "").toLowerCase();
      var text = (b.textContent || "").trim();
      if (labels.indexOf(label) >= 0 || texts.indexOf(text) >= 0) {
        b.style.display = "none";
        b.disabled = true;
        b.title = "managed through the service's REST API";
      }
    });
  }
  new MutationObserver(function () { hide(document); })
    .observe(document.documentElement, {childList: true, subtree: true});
  document.addEventListener("DOMContentLoaded", function () { hide(document); });
})();
"""


def controls_script(read_only: bool) -> str:
    """The script that hides refused controls (also the note editor's for read-only)."""
    texts = [*REFUSED_TEXTS, *FORM_TEXTS, *(NOTE_TEXTS if read_only else ())]
    return _SCRIPT % {"labels": json.dumps(list(REFUSED_LABELS)), "texts": json.dumps(texts)}


async def controls(request: Request) -> Response:
    """``GET /hpo/controls.js`` and ``/hpo/controls-read-only.js``."""
    read_only = request.url.path == READ_ONLY_SCRIPT_PATH
    return Response(
        controls_script(read_only),
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def is_page(scope: AsgiScope) -> bool:
    """A dashboard page (the single-page app's HTML), not its API or assets."""
    path = str(scope.get("path", ""))
    return scope.get("method") == "GET" and (path == "/dashboard" or path.startswith("/dashboard/"))


async def serve_page(
    inner: ASGIApp, scope: AsgiScope, receive: Receive, send: Send, read_only: bool
) -> None:
    """Run ``inner`` for a page and add the controls script to its HTML.

    Conditional and range headers are dropped so that the page always comes
    whole (a cached copy could carry the other principal's script).
    """
    headers = [(k, v) for k, v in scope["headers"] if k not in _CONDITIONAL]
    start: Message | None = None
    body = bytearray()

    async def capture(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        body.extend(message.get("body", b""))
        if message.get("more_body"):
            return
        assert start is not None
        await _send_page(send, start, bytes(body), read_only)

    await inner({**scope, "headers": headers}, receive, capture)


async def _send_page(send: Send, start: Message, body: bytes, read_only: bool) -> None:
    headers = list(start.get("headers", []))
    is_html = any(k == b"content-type" and v.startswith(b"text/html") for k, v in headers)
    encoded = any(k == b"content-encoding" for k, _ in headers)
    if is_html and not encoded and start["status"] == 200:
        src = (READ_ONLY_SCRIPT_PATH if read_only else SCRIPT_PATH).encode()
        tag = b'<script defer src="' + src + b'"></script>'
        body = _HEAD_END.sub(lambda m: tag + m.group(0), body, count=1)
        headers = [(k, v) for k, v in headers if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body})
