"""One real server with metrics on (loopback, port 0) and signed audit heads, per module."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dpgate_server.api.server import RunningServer, build_server
from dpgate_server.config import AuditSettings, OperationsSettings, Settings
from dpgate_server.store.store import DatasetVersion
from tests.integration.api.conftest import prepare_ledger, settings_for


@dataclass(frozen=True)
class ObservedService:
    running: RunningServer
    target: str
    dataset_id: str
    tokens: dict[str, str]
    folder: Path

    @property
    def metrics_url(self) -> str:
        listener = self.running.sidecars.metrics_listener
        assert listener is not None
        return f"http://{listener.address}/metrics"

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics: (name, sorted labels) -> value."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode("utf-8")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def observed_settings(store_root: Path, folder: Path, **operations: object) -> Settings:
    base = settings_for(store_root, folder, workers=1)
    return base.model_copy(
        update={
            "operations": OperationsSettings(
                metrics_enabled=True, metrics_address="127.0.0.1:0", **operations
            ),
            "audit": AuditSettings(
                signing_key_file=folder / "keys" / "audit-signing.pem",
                signed_heads_dir=folder / "signed-heads",
                sign_interval_seconds=3600,
            ),
        }
    )


def start_observed(
    small_dataset: DatasetVersion, folder: Path, tokens: dict[str, str] | None = None
) -> ObservedService:
    """A server on `folder`'s ledger; a new ledger is prepared unless `tokens` are given."""
    settings = observed_settings(small_dataset.path.parents[2], folder)
    running = build_server(settings)
    if tokens is None:
        codes = small_dataset.metadata.column("practice_code").values or ("A00000",)
        tokens = prepare_ledger(
            settings.storage.ledger_path, small_dataset.dataset_id, str(codes[0])
        )
    return ObservedService(
        running, f"127.0.0.1:{running.port}", small_dataset.dataset_id, tokens, folder
    )


@pytest.fixture(scope="module")
def observed(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObservedService]:
    started = start_observed(small_dataset, tmp_path_factory.mktemp("observed"))
    yield started
    started.running.stop(grace_seconds=1)
