"""The real client against no server at all: what a planner sees when nothing answers."""

from __future__ import annotations

import socket

import pytest

import dpgate._retry
from dpgate import Client, OverloadedError, RetryPolicy, ServerUnavailableError, count


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


def test_a_server_that_cannot_be_reached_is_unavailable_after_bounded_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(dpgate._retry.time, "sleep", waits.append)
    policy = RetryPolicy(retries=2, initial_backoff=0.01, max_backoff=0.05)
    with Client(f"127.0.0.1:{_closed_port()}", token="dpg_x", timeout=10, retries=policy) as c:
        with pytest.raises(ServerUnavailableError) as caught:
            c.query(count("gp_appointments").epsilon(0.1))
        assert len(waits) == 2  # three attempts, then the error
        with pytest.raises(ConnectionError):
            c.datasets()
    assert not isinstance(caught.value, OverloadedError)
    assert (caught.value.code, caught.value.reason) == ("UNAVAILABLE", "")
    assert all(0 <= wait <= 0.05 for wait in waits)
