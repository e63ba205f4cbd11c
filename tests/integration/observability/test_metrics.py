"""Metrics scraped before and after known calls move by exactly those calls."""

from __future__ import annotations

import pytest

from dpgate._client import Client
from dpgate._query import count
from dpgate.errors import AuthenticationError, BudgetExhaustedError, InvalidQueryError

from .conftest import ObservedService


def _delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_counters_move_by_exactly_the_calls_made(observed: ObservedService) -> None:
    dataset = observed.dataset_id
    before = observed.scrape()
    with Client(observed.target, token=observed.tokens["analyst"]) as client:
        client.query(count(dataset).by("month").epsilon(0.25))
        client.query(count(dataset).by("month").epsilon(0.25))  # a free repeat
        with pytest.raises(InvalidQueryError):
            client.query(count(dataset).by("no_such_column").epsilon(0.25))
        with pytest.raises(BudgetExhaustedError):
            client.query(count(dataset).by("weekday").epsilon(9))
    after = observed.scrape()

    assert (
        _delta(before, after, "dpgate_rpc_duration_seconds_count", method="RunQuery", code="OK")
        == 2
    )
    assert (
        _delta(
            before,
            after,
            "dpgate_rpc_duration_seconds_count",
            method="RunQuery",
            code="INVALID_ARGUMENT",
        )
        == 1
    )
    assert (
        _delta(
            before,
            after,
            "dpgate_rpc_duration_seconds_count",
            method="RunQuery",
            code="RESOURCE_EXHAUSTED",
        )
        == 1
    )
    assert (
        _delta(before, after, "dpgate_refusals_total", method="RunQuery", reason="UNKNOWN_COLUMN")
        == 1
    )
    assert (
        _delta(before, after, "dpgate_refusals_total", method="RunQuery", reason="BUDGET_EXHAUSTED")
        == 1
    )
    assert _delta(before, after, "dpgate_releases_total", dataset=dataset) == 1
    assert _delta(
        before, after, "dpgate_spend_total", dataset=dataset, measure="epsilon"
    ) == pytest.approx(0.25)
    # Every debit and audit event is a write: the ledger histogram saw them.
    assert _delta(before, after, "dpgate_ledger_write_duration_seconds_count") >= 4


def test_unauthenticated_calls_are_counted_as_bad_token(observed: ObservedService) -> None:
    before = observed.scrape()
    with (
        Client(observed.target, token="dpg_not_a_real_token") as client,
        pytest.raises(AuthenticationError),
    ):
        client.datasets()
    after = observed.scrape()
    assert (
        _delta(before, after, "dpgate_refusals_total", method="ListDatasets", reason="BAD_TOKEN")
        == 1
    )
    assert (
        _delta(
            before,
            after,
            "dpgate_rpc_duration_seconds_count",
            method="ListDatasets",
            code="UNAUTHENTICATED",
        )
        == 1
    )


def test_worker_pool_figures_are_exported(observed: ObservedService) -> None:
    scraped = observed.scrape()
    assert scraped[("dpgate_workers", ())] == 1
    assert scraped[("dpgate_workers_alive", ())] == 1
    assert scraped[("dpgate_workers_busy", ())] == 0
    assert scraped[("dpgate_query_queue_length", ())] == 0
    assert ("dpgate_worker_restarts_total", (("cause", "crash"),)) in scraped


def test_metrics_listener_is_on_loopback_and_serves_only_metrics(observed: ObservedService) -> None:
    listener = observed.running.sidecars.metrics_listener
    assert listener is not None
    assert listener.address.startswith("127.0.0.1:")
    assert listener.port != observed.running.port
