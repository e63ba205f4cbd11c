"""The CLI tests' server: the session's shared one (tests/integration/conftest.py)."""

from __future__ import annotations

import pytest

from tests.integration.cli.helpers import CliService
from tests.integration.conftest import SharedServer


@pytest.fixture(scope="session")
def cli_service(shared_server: SharedServer) -> CliService:
    return shared_server.cli
