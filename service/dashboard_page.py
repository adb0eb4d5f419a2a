"""The dashboard's sign-in page: one token field, no external assets."""

from __future__ import annotations

import html

from starlette.responses import HTMLResponse


def login_page(target: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    """The sign-in form: one token field, no external assets."""
    notice = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = _LOGIN_HTML.format(notice=notice, next=html.escape(target, quote=True))
    return HTMLResponse(body, status, headers=_PAGE_HEADERS)


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    # Not no-referrer: with it browsers send "Origin: null" on the sign-in POST,
    # which the same-origin check must refuse.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
_LOGIN_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in - HPO dashboard</title>
<style>
body {{ font-family: system-ui, sans-serif; display: flex; justify-content: center;
  margin-top: 15vh; }}
form {{ display: flex; flex-direction: column; gap: 0.6rem; width: 22rem; }}
input, button {{ font: inherit; padding: 0.45rem; }}
.error {{ color: #b00020; }}
</style>
</head>
<body>
<form method="post" action="/login">
<h1>HPO dashboard</h1>
{notice}
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
</form>
</body>
</html>
"""
