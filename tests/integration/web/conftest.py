"""One real server with the web pages on, and releases made through the gRPC client.

Module-scoped: each test module gets one server (and the browser tests one browser).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dpgate._audit import AuditClient
from dpgate._client import Client
from dpgate._query import count, total
from dpgate_server.api.server import RunningServer, build_server
from dpgate_server.config import AuditSettings, Settings, WebSettings
from dpgate_server.store.store import DatasetVersion
from tests.integration.api.conftest import prepare_ledger, settings_for


@dataclass(frozen=True)
class WebService:
    running: RunningServer
    target: str
    base_url: str
    dataset_id: str
    tokens: dict[str, str]
    folder: Path
    released_values: tuple[float, ...]
    """Every cell value the analyst received (must never appear on a public page)."""
    questions: tuple[str, ...]
    """The releases made, in words, in order."""

    def export(self) -> dict[str, Any]:
        with AuditClient(self.target, token=self.tokens["auditor"]) as audit:
            return json.loads(audit.transparency_report("json"))

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.base_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8")

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8")


def web_settings(store_root: Path, folder: Path) -> Settings:
    base = settings_for(store_root, folder, workers=1)
    return base.model_copy(
        update={
            "web": WebSettings(enabled=True, address="127.0.0.1:0", page_size=2),
            "audit": AuditSettings(
                signing_key_file=folder / "keys" / "audit-signing.pem",
                signed_heads_dir=folder / "signed-heads",
            ),
        }
    )


QUERIES = (
    (
        count,
        None,
        {"status": "DNA"},
        ("month",),
        Decimal("0.5"),
        "count of appointments with status DNA by month",
    ),
    (count, None, {}, ("weekday",), Decimal("0.25"), "count of appointments by weekday"),
    (
        total,
        "duration_minutes",
        {"mode": "Telephone"},
        ("month",),
        Decimal("0.5"),
        "total duration minutes of appointments with mode Telephone by month",
    ),
)


@pytest.fixture(scope="module")
def web(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebService]:
    folder = tmp_path_factory.mktemp("web")
    settings = web_settings(small_dataset.path.parents[2], folder)
    running = build_server(settings)
    try:
        codes = small_dataset.metadata.column("practice_code").values or ("A00000",)
        tokens = prepare_ledger(
            settings.storage.ledger_path, small_dataset.dataset_id, str(codes[0])
        )
        target = f"127.0.0.1:{running.port}"
        values: list[float] = []
        with Client(target, token=tokens["analyst"]) as client:
            for make, column, where, by, epsilon, _ in QUERIES:
                spec = (
                    make(small_dataset.dataset_id)
                    if column is None
                    else make(small_dataset.dataset_id, column)
                )
                if where:
                    spec = spec.where(**where)
                result = client.query(spec.by(*by).epsilon(epsilon))
                values.extend(float(v) for v in result.frame["value"].to_list())
            # A repeat is free and listed as such.
            first = QUERIES[0]
            client.query(
                count(small_dataset.dataset_id).where(**first[2]).by(*first[3]).epsilon(first[4])
            )
        heads = running.sidecars.heads
        assert heads is not None
        heads.publish_now()
        web_listener = running.sidecars.web
        assert web_listener is not None
        yield WebService(
            running,
            target,
            web_listener.url,
            small_dataset.dataset_id,
            tokens,
            folder,
            tuple(values),
            tuple(q[-1] for q in QUERIES),
        )
    finally:
        running.stop(grace_seconds=1)
