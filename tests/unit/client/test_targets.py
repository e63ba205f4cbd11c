"""Several replicas: how the given addresses become one round_robin channel target."""

from __future__ import annotations

import json
import socket

import pytest

from dpgate._targets import ChannelTarget, channel_target, split_targets

V4, V6 = socket.AF_INET, socket.AF_INET6


def resolver(table: dict[str, list[tuple[int, str]]]):  # type: ignore[no-untyped-def]
    """A resolver that knows only `table` (a fake of the system's, no network)."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[tuple[int, str]]:
        asked.append(host)
        return table.get(host, [])

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def test_one_address_is_used_as_given_with_round_robin() -> None:
    target = channel_target("127.0.0.1:50051", tls=False)
    assert target == ChannelTarget("127.0.0.1:50051", None, ("127.0.0.1:50051",))
    config = json.loads(dict(target.options())["grpc.service_config"])  # type: ignore[arg-type]
    assert config == {"loadBalancingConfig": [{"round_robin": {}}]}


def test_one_dns_name_is_left_to_grpc_to_resolve() -> None:
    resolve = resolver({})
    target = channel_target("dpgate.example.nhs.uk:443", tls=True, resolve=resolve)
    assert (target.uri, target.authority) == ("dpgate.example.nhs.uk:443", None)
    assert resolve.asked == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "given",
    [
        ["127.0.0.1:50051", "127.0.0.1:50052"],
        "127.0.0.1:50051,127.0.0.1:50052",
        " 127.0.0.1:50051 , 127.0.0.1:50052 ,",
        ["127.0.0.1:50051,127.0.0.1:50052"],
        ["127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50051"],
    ],
)
def test_a_list_or_a_comma_separated_string_is_one_ipv4_list(given: object) -> None:
    target = channel_target(given, tls=False)  # type: ignore[arg-type]
    assert target.uri == "ipv4:127.0.0.1:50051,127.0.0.1:50052"
    assert target.replicas == ("127.0.0.1:50051", "127.0.0.1:50052")
    assert target.describe() == "127.0.0.1:50051,127.0.0.1:50052"


def test_one_host_with_several_ports_is_the_name_tls_checks() -> None:
    target = channel_target(["127.0.0.1:1", "127.0.0.1:2"], tls=True)
    assert target.authority == "127.0.0.1"
    assert ("grpc.default_authority", "127.0.0.1") in target.options()


def test_names_in_a_list_are_resolved_and_the_name_kept_for_tls() -> None:
    resolve = resolver({"replica.example": [(V6, "::1"), (V4, "10.0.0.7"), (V4, "10.0.0.8")]})
    target = channel_target(
        "replica.example:50051,replica.example:50052", tls=True, resolve=resolve
    )
    assert target.uri == ("ipv4:10.0.0.7:50051,10.0.0.8:50051,10.0.0.7:50052,10.0.0.8:50052")
    assert target.authority == "replica.example"


def test_ipv6_addresses_make_an_ipv6_list() -> None:
    target = channel_target("[::1]:50051,[::1]:50052", tls=False)
    assert target.uri == "ipv6:[::1]:50051,[::1]:50052"


def test_a_family_every_entry_has_is_chosen() -> None:
    resolve = resolver(
        {"six.example": [(V6, "fd00::1")], "both.example": [(V6, "fd00::2"), (V4, "10.0.0.2")]}
    )
    target = channel_target("six.example:1,both.example:2", tls=False, resolve=resolve)
    assert target.uri == "ipv6:[fd00::1]:1,[fd00::2]:2"


def test_mixed_families_are_refused_with_what_to_give() -> None:
    with pytest.raises(ValueError, match="mix IPv4 and IPv6"):
        channel_target("127.0.0.1:1,[::1]:2", tls=False)


def test_different_hosts_work_in_plaintext_but_not_over_tls() -> None:
    target = channel_target("10.0.0.1:50051,10.0.0.2:50051", tls=False)
    assert (target.uri, target.authority) == ("ipv4:10.0.0.1:50051,10.0.0.2:50051", None)
    with pytest.raises(ValueError, match="one DNS name that resolves to every replica"):
        channel_target("10.0.0.1:50051,10.0.0.2:50051", tls=True)


def test_a_grpc_target_is_passed_through_whole() -> None:
    given = "ipv4:10.0.0.1:443,10.0.0.2:443"
    assert channel_target(given, tls=False).uri == given
    assert channel_target("dns:///dpgate.example:443", tls=True).uri == "dns:///dpgate.example:443"
    with pytest.raises(ValueError, match="is a gRPC target: give it alone"):
        channel_target(["dns:///a:1", "127.0.0.1:2"], tls=False)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "no server address given"),
        (" , ", "no server address given"),
        ([], "no server address given"),
        ("127.0.0.1", "is not host:port"),
        ("127.0.0.1:0,127.0.0.1:2", "is not host:port"),
        ("127.0.0.1:1,127.0.0.1:http", "is not host:port"),
        ("127.0.0.1:1,:2", "is not host:port"),
        ("127.0.0.1:1,127.0.0.1:70000", "is not host:port"),
    ],
)
def test_bad_entries_are_refused_naming_the_entry(given: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        channel_target(given, tls=False)  # type: ignore[arg-type]


def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(ValueError, match=r"cannot resolve 'nowhere\.invalid'"):
        channel_target("127.0.0.1:1,nowhere.invalid:2", tls=False, resolve=resolver({}))


def test_split_keeps_order_and_drops_repeats() -> None:
    assert split_targets(["b:2", "a:1,b:2", " c:3 "]) == ("b:2", "a:1", "c:3")
