"""Where a client connects: one server, several replicas, or a DNS name naming them all.

A client takes one address, a list of addresses, or a comma-separated string of them, and
gets one gRPC channel that spreads calls over every replica with gRPC's `round_robin`
policy. round_robin only picks replicas it is connected to, so when one replica stops
answering, the calls after the failure (a `Client` retry included, with the same
idempotency key) go to the others, and the replica rejoins once it answers again.

The rules, from what is given to what the channel is opened with:

- one `host:port`: as given; gRPC resolves the name and round_robin spreads calls over
  every address it resolves to (one DNS name for all replicas is the usual deployment).
- several `host:port` entries: each IP address is used as is, each name is resolved
  here, once; the channel is an `ipv4:` (or `ipv6:`) list of them all. TLS checks each
  replica's certificate against the entries' one host name, so over TLS the entries must
  share one host (one name, or one address, with several ports); replicas on different
  hosts are reached over TLS through one DNS name that resolves to all of them.
- a gRPC target with its scheme (`dns:///name:443`, `ipv4:10.0.0.1:443,10.0.0.2:443`,
  `unix:/path`): passed to gRPC unchanged.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc.experimental

GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")
"""Target prefixes that mean a gRPC target URI, passed through unchanged."""
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
MAX_RECONNECT_BACKOFF_MS = 5000
"""A replica that comes back is used again within about this long (gRPC's default: 120 s)."""

Resolver = Callable[[str, int], list[tuple[int, str]]]
"""A name and port to (address family, address) pairs."""


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    """What a gRPC channel is opened with for a set of replicas.

    Attributes:
        uri: the gRPC target.
        authority: the name the channel addresses (and TLS checks certificates against)
            when the uri lists addresses; None to let gRPC derive it.
        replicas: the entries as given, for messages.
    """

    uri: str
    authority: str | None
    replicas: tuple[str, ...]

    def options(self) -> list[tuple[str, str | int]]:
        """Channel options: round_robin over every replica, a quick reconnect, the authority.

        Each channel keeps its own connections (a local subchannel pool): by default gRPC
        shares one connection between every channel of a process to the same target, and a
        server of several processes on one port (the kernel spreads connections, not
        calls) would then serve all of a process's clients from one of them.

        Server-streaming calls (a query's answer) are read on the calling thread
        (gRPC's SingleThreadedUnaryStream, a Python-only option): by default gRPC starts a
        thread per such call to drive it, about 0.1-0.2 ms of a 2 ms repeated question and
        a thread start per call for a client asking many. The client only iterates the
        answer, the one thing such a call does not restrict (its future methods never block);
        deadlines, errors and Ctrl-C behave as before.
        """
        options: list[tuple[str, str | int]] = [
            ("grpc.service_config", ROUND_ROBIN),
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
            ("grpc.use_local_subchannel_pool", 1),
            (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
        ]
        if self.authority is not None:
            options.append(("grpc.default_authority", self.authority))
        return options

    def describe(self) -> str:
        """The replicas as a user would write them."""
        return ",".join(self.replicas)


def split_targets(targets: str | Sequence[str]) -> tuple[str, ...]:
    """The entries of a comma-separated string or of a list (which may hold such strings).

    A gRPC target with its scheme is one entry (its own commas separate addresses).

    Raises:
        ValueError: nothing given.
    """
    given = [targets] if isinstance(targets, str) else list(targets)
    entries: list[str] = []
    for item in given:
        text = item.strip()
        if text.startswith(GRPC_SCHEMES):
            entries.append(text)
        else:
            entries.extend(part.strip() for part in text.split(",") if part.strip())
    if not entries:
        raise ValueError("no server address given: give host:port, or several separated by commas")
    return tuple(dict.fromkeys(entries))


def channel_target(
    targets: str | Sequence[str], *, tls: bool, resolve: Resolver | None = None
) -> ChannelTarget:
    """The channel target for `targets` (see the module's rules).

    `resolve` defaults to the system resolver (`socket.getaddrinfo`).

    Raises:
        ValueError: an entry that is not host:port, a name that does not resolve, a gRPC
            target among others, or replicas on different hosts over TLS; the message
            says what to give instead.
    """
    entries = split_targets(targets)
    if len(entries) == 1:
        only = entries[0]
        if not only.startswith(GRPC_SCHEMES):
            _host_port(only)
        return ChannelTarget(uri=only, authority=None, replicas=entries)
    schemed = [e for e in entries if e.startswith(GRPC_SCHEMES)]
    if schemed:
        raise ValueError(
            f"{schemed[0]!r} is a gRPC target: give it alone, or give host:port entries"
        )
    parsed = [_host_port(e) for e in entries]
    hosts = tuple(dict.fromkeys(host for host, _ in parsed))
    if tls and len(hosts) > 1:
        raise ValueError(
            f"replicas on different hosts ({', '.join(hosts)}) over TLS: a certificate is"
            " checked against one name, so give one DNS name that resolves to every"
            " replica, or entries that share one host"
        )
    found = [_addresses(host, port, resolve or _system_resolver) for host, port in parsed]
    family = _common_family(found, entries)
    if family == socket.AF_INET:
        listed = [f"{address}:{port}" for each in found for address, port in each[family]]
        uri = "ipv4:" + ",".join(dict.fromkeys(listed))
    else:
        listed = [f"[{address}]:{port}" for each in found for address, port in each[family]]
        uri = "ipv6:" + ",".join(dict.fromkeys(listed))
    return ChannelTarget(uri=uri, authority=hosts[0] if len(hosts) == 1 else None, replicas=entries)


def _host_port(entry: str) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(
            f"{entry!r} is not host:port (e.g. 127.0.0.1:50051, or [::1]:50051);"
            " separate several replicas with commas"
        )
    return host, int(port)


def _addresses(host: str, port: int, resolve: Resolver) -> dict[int, list[tuple[str, int]]]:
    """The entry's addresses by family: itself if an IP address, else what `host` resolves to."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pairs = resolve(host, port)
        if not pairs:
            raise ValueError(f"cannot resolve {host!r} to an address") from None
    else:
        pairs = [(socket.AF_INET if literal.version == 4 else socket.AF_INET6, str(literal))]
    by_family: dict[int, list[tuple[str, int]]] = {socket.AF_INET: [], socket.AF_INET6: []}
    for family, address in pairs:
        if family in by_family and (address, port) not in by_family[family]:
            by_family[family].append((address, port))
    return by_family


def _common_family(found: list[dict[int, list[tuple[str, int]]]], entries: Sequence[str]) -> int:
    """IPv4 if every entry has an IPv4 address, else IPv6 if every one has one (gRPC lists one)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        if all(each[family] for each in found):
            return family
    raise ValueError(
        f"the replicas {', '.join(entries)} mix IPv4 and IPv6 addresses; gRPC lists one"
        " family: give addresses of one family, or one DNS name for them all"
    )


def _system_resolver(host: str, port: int) -> list[tuple[int, str]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc.strerror}") from None
    return [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in infos]
