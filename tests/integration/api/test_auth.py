"""Every RPC refuses missing, bad, revoked and expired tokens, and every wrong role; audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory

from dpgate_proto.v1 import admin_pb2, audit_pb2, provider_pb2, query_pb2
from dpgate_server.api.roles import ROLES_BY_METHOD
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import Outcome, Role
from dpgate_server.store.store import DatasetVersion

from .conftest import SETUP, Service, start_service

FILES = (query_pb2, admin_pb2, audit_pb2, provider_pb2)
METHODS = {
    f"/{service.full_name}/{method.name}": method
    for module in FILES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}


def test_every_rpc_has_a_role_decision() -> None:
    assert set(METHODS) == set(ROLES_BY_METHOD)


def call(channel: grpc.Channel, path: str, metadata: tuple[tuple[str, str], ...]) -> None:
    """Call `path` with an empty request; raises grpc.RpcError on refusal."""
    method = METHODS[path]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    kwargs: dict[str, Any] = {
        "request_serializer": request_class.SerializeToString,
        "response_deserializer": response_class.FromString,
    }
    request = request_class()
    if method.client_streaming and method.server_streaming:
        list(channel.stream_stream(path, **kwargs)(iter([request]), metadata=metadata, timeout=30))
    elif method.client_streaming:
        channel.stream_unary(path, **kwargs)(iter([request]), metadata=metadata, timeout=30)
    elif method.server_streaming:
        list(channel.unary_stream(path, **kwargs)(request, metadata=metadata, timeout=30))
    else:
        channel.unary_unary(path, **kwargs)(request, metadata=metadata, timeout=30)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def channel(service: Service) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(service.target) as chan:
        yield chan


@pytest.fixture(scope="module")
def dead_tokens(service: Service) -> dict[str, str]:
    """A revoked and an expired analyst token."""
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        revoked = ledger.admin.issue_token("analyst-1", Role.ANALYST, request=SETUP)
        ledger.admin.revoke_token(revoked.info.token_id, request=SETUP)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    # Issued two minutes ago (a ledger clock set back), valid for one: expired by now.
    with Ledger.open_sqlite(
        service.ledger_path, clock=lambda: past - dt.timedelta(minutes=1)
    ) as ledger:
        expired = ledger.admin.issue_token(
            "analyst-1", Role.ANALYST, request=SETUP, expires_at=past
        )
    return {"revoked": revoked.token, "expired": expired.token}


CREDENTIALS: dict[str, Callable[[dict[str, str]], tuple[tuple[str, str], ...]]] = {
    "none": lambda dead: (),
    "not bearer": lambda dead: (("authorization", "Basic dXNlcjpwYXNz"),),
    "unknown": lambda dead: bearer("dpg_" + "A" * 43),
    "garbage": lambda dead: bearer("dpg_" + "z" * 4000),
    "revoked": lambda dead: bearer(dead["revoked"]),
    "expired": lambda dead: bearer(dead["expired"]),
}


@pytest.mark.parametrize("path", sorted(ROLES_BY_METHOD))
@pytest.mark.parametrize("credential", sorted(CREDENTIALS))
def test_rpc_without_a_valid_token_is_unauthenticated(
    channel: grpc.Channel, dead_tokens: dict[str, str], path: str, credential: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, path, CREDENTIALS[credential](dead_tokens))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in (caught.value.details() or "")


WRONG_ROLES = [
    (path, role)
    for path, allowed in sorted(ROLES_BY_METHOD.items())
    for role in sorted(r.value for r in Role)
    if Role(role) not in allowed
]


@pytest.mark.parametrize(("path", "role"), WRONG_ROLES)
def test_rpc_with_a_wrong_role_is_permission_denied(
    channel: grpc.Channel, service: Service, path: str, role: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, path, bearer(service.tokens[role]))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"a token with role {role} may not call" in (caught.value.details() or "")


def test_refusals_are_audited(channel: grpc.Channel, service: Service) -> None:
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        before = ledger.head().count
    with pytest.raises(grpc.RpcError):
        call(channel, "/dpgate.v1.AdminService/ListRequesters", bearer(service.tokens["analyst"]))
    with pytest.raises(grpc.RpcError):
        call(channel, "/dpgate.v1.QueryService/ListDatasets", ())
    service.running.ledger.flush_unauthenticated(everything=True)  # counted in its memory
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        events = ledger.list_events(after_seq=before, limit=10_000)
        assert ledger.verify().ok
    outcomes = {(e.rpc, e.outcome) for e in events}
    assert ("ListRequesters", Outcome.DENIED) in outcomes
    assert any(e.outcome is Outcome.UNAUTHENTICATED for e in events)


def test_tokens_never_appear_in_the_audit_log(service: Service) -> None:
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        dump = repr(ledger.list_events(limit=1_000_000))
    for token in service.tokens.values():
        assert token not in dump


def test_an_address_over_its_rate_is_refused_before_its_token_is_looked_at(
    small_dataset: DatasetVersion, tmp_path: Path
) -> None:
    limited = start_service(small_dataset, tmp_path, peer_requests_per_second=0.01, peer_burst=2)
    try:
        ledger = limited.running.ledger
        ledger.flush_unauthenticated(everything=True)
        before = ledger.head().count
        codes = []
        with grpc.insecure_channel(limited.target) as channel:
            for _ in range(4):
                with pytest.raises(grpc.RpcError) as caught:
                    call(channel, "/dpgate.v1.QueryService/ListDatasets", ())
                codes.append(caught.value.code())
            with pytest.raises(grpc.RpcError) as valid_token:  # the address, not the token
                call(
                    channel,
                    "/dpgate.v1.QueryService/ListDatasets",
                    bearer(limited.tokens["analyst"]),
                )
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 2 + [grpc.StatusCode.UNAVAILABLE] * 2
        assert valid_token.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "from your address" in (valid_token.value.details() or "")
        ledger.flush_unauthenticated(everything=True)
        events = ledger.list_events(after_seq=before)
        assert [e.outcome for e in events] == [Outcome.UNAUTHENTICATED]
        assert events[0].detail.startswith("2 unauthenticated request(s) from 127.0.0.1")
    finally:
        limited.running.stop(grace_seconds=1)
