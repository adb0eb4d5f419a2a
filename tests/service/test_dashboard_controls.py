"""Dashboard pages hide the controls the gateway refuses (and read-only principals' note editor)."""

from __future__ import annotations

from pathlib import Path

import optuna_dashboard
from fastapi.testclient import TestClient

from service.dashboard import create_dashboard_app
from service.dashboard_controls import FORM_TEXTS, NOTE_TEXTS, REFUSED_LABELS, REFUSED_TEXTS
from tests.conftest import sqlite_urls
from tests.service.test_dashboard import ADMIN, HTML, bearer, make_world

BUNDLE = Path(optuna_dashboard.__file__).parent / "public" / "bundle.js"


def test_the_hidden_controls_are_the_dashboards_own() -> None:
    """An optuna-dashboard release that renames them fails here, not silently in browsers."""
    bundle = BUNDLE.read_text(errors="replace")
    for label in REFUSED_LABELS:
        assert f'"aria-label":"{label}"' in bundle, label
    for text in (*REFUSED_TEXTS, *FORM_TEXTS, *NOTE_TEXTS):
        assert f'children:"{text}"' in bundle, text


def test_pages_carry_the_script_for_the_principals_scope(tmp_path: Path) -> None:
    world = make_world(tmp_path, sqlite_urls(tmp_path / "data"), ADMIN)
    with TestClient(create_dashboard_app(world.settings)) as client:
        page = client.get(
            f"/dashboard/studies/{world.study_id}",
            headers={**HTML, **bearer(world.write), "If-Modified-Since": "Tue, 1 Dec 2099"},
        )
        assert page.status_code == 200  # whole, never a 304 of another scope's page
        assert '<script defer src="/hpo/controls.js"></script></head>' in page.text
        assert int(page.headers["content-length"]) == len(page.content)
        read = client.get("/dashboard", headers={**HTML, **bearer(world.read)})
        assert '<script defer src="/hpo/controls-read-only.js">' in read.text

        script = client.get("/hpo/controls.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert '"delete study"' in script.text and '"Fail Trial"' in script.text
        assert '"Edit"' not in script.text  # writers keep the note editor
        read_only = client.get("/hpo/controls-read-only.js").text
        assert '"Edit"' in read_only and '"Save"' in read_only

        # Everything but the pages passes through untouched.
        api = client.get("/api/studies", headers=bearer(world.read))
        assert api.status_code == 200 and "controls.js" not in api.text
        bundle = client.get(
            "/static/bundle.js", headers={**bearer(world.read), "Accept-Encoding": "gzip"}
        )
        assert bundle.status_code == 200 and "controls.js" not in bundle.text
        # The refusals themselves are unchanged.
        delete = client.delete(f"/api/studies/{world.study_id}", headers=bearer(world.write))
        assert delete.status_code == 403
