from __future__ import annotations

from collections.abc import Iterator

import pytest

import hpo
from tests.conftest import PostgresServer
from tests.deployment import Deployment, deployment


@pytest.fixture(scope="module")
def site(
    pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    with deployment(pg_server, tmp_path_factory.mktemp("site")) as running:
        yield running


@pytest.fixture
def client(site: Deployment) -> Iterator[hpo.Client]:
    with hpo.Client(site.url, site.token) as connected:
        yield connected
