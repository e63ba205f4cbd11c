"""The client's channel over several replicas, against small real gRPC servers.

Each server answers one method with its own name, so a test sees which replica a call
reached: calls go to every replica, TLS over a list checks the certificate against the
entries' host, and a replica that comes back on its address is used again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from dpgate._channel import Connection
from tests.integration.api.test_tls import Pem, make_cert

METHOD = "/dpgate.test.Who/Ask"
HANG_GUARD_S = 60.0
"""Only to end a hung wait with a message; no assertion depends on time."""


def _server(name: str, port: int = 0, key_pair: Pem | None = None) -> tuple[grpc.Server, int]:
    """A gRPC server on loopback whose one method answers `name`."""
    handler = grpc.method_handlers_generic_handler(
        "dpgate.test.Who",
        {"Ask": grpc.unary_unary_rpc_method_handler(lambda request, context: name.encode())},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    address = f"127.0.0.1:{port}"
    if key_pair is None:
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials([(key_pair.key, key_pair.cert)])
        bound = server.add_secure_port(address, credentials)
    server.start()
    return server, bound


def _ask(connection: Connection) -> str | None:
    """Which replica answered one call; None if the call failed."""
    ask = connection._channel.unary_unary(METHOD)
    try:
        return bytes(ask(b"", timeout=5)).decode()
    except grpc.RpcError:
        return None


@pytest.fixture
def stopped_at_end() -> Iterator[list[grpc.Server]]:
    servers: list[grpc.Server] = []
    yield servers
    for server in servers:
        server.stop(0)


def test_calls_reach_every_replica_of_a_list(stopped_at_end: list[grpc.Server]) -> None:
    ports = []
    for name in ("a", "b", "c"):
        server, port = _server(name)
        stopped_at_end.append(server)
        ports.append(port)
    with Connection([f"127.0.0.1:{port}" for port in ports]) as connection:
        answered = Counter(_ask(connection) for _ in range(30))
    assert set(answered) == {"a", "b", "c"}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_over_a_list_checks_the_certificate_against_the_host(
    host: str, stopped_at_end: list[grpc.Server]
) -> None:
    authority = make_cert("test CA", None, server=False)
    key_pair = make_cert("replica", authority, server=True)  # names localhost and 127.0.0.1
    ports = []
    for name in ("a", "b"):
        server, port = _server(name, key_pair=key_pair)
        stopped_at_end.append(server)
        ports.append(port)
    targets = ",".join(f"{host}:{port}" for port in ports)
    with Connection(targets, root_certificates=authority.cert) as connection:
        answered = Counter(_ask(connection) for _ in range(20))
    assert set(answered) == {"a", "b"}
    stranger = make_cert("another CA", None, server=False)
    with Connection(targets, root_certificates=stranger.cert) as connection:
        assert _ask(connection) is None  # a certificate from another CA is refused


def test_a_replica_that_comes_back_on_its_address_is_used_again(
    stopped_at_end: list[grpc.Server],
) -> None:
    first, first_port = _server("a")
    second, second_port = _server("b")
    stopped_at_end.extend([first, second])
    with Connection([f"127.0.0.1:{first_port}", f"127.0.0.1:{second_port}"]) as connection:
        assert set(_wait_for(connection, {"a", "b"})) >= {"a", "b"}
        second.stop(0).wait()
        assert "b" not in _wait_for(connection, {"a"}, calls=10)
        again, _ = _server("b again", port=second_port)
        stopped_at_end.append(again)
        assert "b again" in _wait_for(connection, {"b again"})


def _wait_for(connection: Connection, wanted: set[str], calls: int = 0) -> Counter[str | None]:
    """Answers until every name in `wanted` has answered (and at least `calls` answers)."""
    answered: Counter[str | None] = Counter()
    deadline = time.monotonic() + HANG_GUARD_S
    while not (wanted <= set(answered) and sum(answered.values()) >= calls):
        assert time.monotonic() < deadline, f"never answered by {wanted}: {answered}"
        answered[_ask(connection)] += 1
        time.sleep(0.05)
    return answered
