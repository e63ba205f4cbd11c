"""gRPC health says NOT_SERVING when the worker pool or the ledger is down."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dpgate_server.ledger.ledger import Ledger
from dpgate_server.observability.health import ledger_check, pool_check
from dpgate_server.store.store import DatasetVersion

from .conftest import start_observed

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_health_turns_not_serving_when_the_workers_are_gone(
    small_dataset: DatasetVersion, tmp_path: Path
) -> None:
    service = start_observed(small_dataset, tmp_path)
    try:
        assert _status(service.target) == SERVING
        assert _status(service.target, "dpgate.v1.QueryService") == SERVING
        service.running.pool.close()
        monitor = service.running.sidecars.health
        assert monitor is not None
        assert monitor.check_now() == ("no query worker is running",)
        assert _status(service.target) == NOT_SERVING
        assert _status(service.target, "dpgate.v1.QueryService") == NOT_SERVING
    finally:
        service.running.stop(grace_seconds=1)


def test_ledger_check_fails_once_the_ledger_cannot_be_read(tmp_path: Path) -> None:
    ledger = Ledger.open_sqlite(tmp_path / "ledger.sqlite")
    check = ledger_check(ledger.head)
    assert check().problem is None
    ledger.close()
    assert check().problem == "the ledger cannot be read: RuntimeError"


def test_pool_check_needs_one_live_worker() -> None:
    assert pool_check(lambda: 1)().problem is None
    assert pool_check(lambda: 0)().problem == "no query worker is running"
