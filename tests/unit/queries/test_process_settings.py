"""The engine's process-wide switches are set once per process, never by a query."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opendp.mod import disable_features, enable_features

from dpgate_server.queries import engine
from dpgate_server.queries.errors import EngineError
from dpgate_server.queries.model import Aggregate, Query, Spend
from dpgate_server.queries.process_settings import (
    OPENDP_FEATURES,
    STREAMING_VARIABLE,
    configure_process,
)
from dpgate_server.store.store import DatasetVersion


def _total(version: DatasetVersion) -> Query:
    return Query(version.dataset_id, Aggregate.count(), spend=Spend.epsilon(1))


@pytest.fixture
def unconfigured() -> Iterator[None]:
    """OpenDP's features off for one test (the session configured them), then back on."""
    disable_features(*OPENDP_FEATURES)
    try:
        yield
    finally:
        enable_features(*OPENDP_FEATURES)


def test_a_query_leaves_the_environment_alone(
    small_dataset: DatasetVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(STREAMING_VARIABLE, raising=False)
    engine.run(small_dataset, _total(small_dataset))
    assert STREAMING_VARIABLE not in os.environ


@pytest.mark.usefixtures("unconfigured")
def test_a_query_in_an_unconfigured_process_names_the_cause(small_dataset: DatasetVersion) -> None:
    with pytest.raises(EngineError, match="configure_process"):
        engine.run(small_dataset, _total(small_dataset))


def test_configure_process_lets_polars_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STREAMING_VARIABLE, raising=False)
    configure_process()
    assert os.environ[STREAMING_VARIABLE] == "1"


def test_configure_process_keeps_the_operators_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STREAMING_VARIABLE, "0")
    configure_process()
    assert os.environ[STREAMING_VARIABLE] == "0"
