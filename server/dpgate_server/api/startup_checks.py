"""Checks made before the server binds, so a start-up fault is one line saying what to change.

gRPC reports every failure to add a port as the same `RuntimeError("Failed to bind to
address ...")`, whether the port is taken or the TLS key does not match its certificate,
and logs the real reason from its C core. These checks find the reason first, with the
standard library, and raise `StartupError` with a message an operator can act on.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from dpgate_server.config import TlsSettings


class StartupError(Exception):
    """The server cannot start; the message is one line saying what is wrong and what to do."""


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """The PEM bytes of a checked TLS configuration."""

    key: bytes
    cert: bytes
    client_ca: bytes | None


def read_tls_material(tls: TlsSettings) -> TlsMaterial | None:
    """The TLS files' contents once checked to work together, or None for plaintext.

    Raises:
        StartupError: a file is missing or unreadable, is not PEM of the right kind, or the
            key is not the certificate's.
    """
    if tls.cert_file is None and tls.key_file is None:
        if tls.client_ca_file is not None:
            raise StartupError("tls.client_ca_file needs tls.cert_file and tls.key_file")
        return None
    if tls.cert_file is None or tls.key_file is None:
        raise StartupError("TLS needs both tls.cert_file and tls.key_file")
    material = TlsMaterial(
        key=_read("tls.key_file", tls.key_file),
        cert=_read("tls.cert_file", tls.cert_file),
        client_ca=_read("tls.client_ca_file", tls.client_ca_file) if tls.client_ca_file else None,
    )
    _check_pair(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        _check_client_ca(tls.client_ca_file)
    return material


def check_address_free(address: str) -> None:
    """Refuse an address this process cannot listen on (port in use, not a local address).

    Port 0 always binds. The probe sets SO_REUSEADDR as gRPC does, so a port left in
    TIME_WAIT by a server that just stopped is not reported as taken.

    Raises:
        StartupError: naming the address and why it cannot be bound.
    """
    host, _, port_text = address.rpartition(":")
    port = int(port_text)
    if port == 0:
        return
    try:
        candidates = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {address}: unknown host ({exc.strerror})") from None
    failures: list[OSError] = []
    for family, kind, proto, _, sockaddr in candidates:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartupError(_bind_message(address, exc)) from None
                failures.append(exc)
    if failures and len(failures) == len(candidates):
        raise StartupError(_bind_message(address, failures[0]))


def _bind_message(address: str, error: OSError) -> str:
    reasons = {
        errno.EADDRINUSE: "the port is already in use (is another server running?);"
        " stop it or set server.address to another port",
        errno.EADDRNOTAVAIL: "the host is not an address of this machine; set server.address",
        errno.EACCES: "permission denied (ports below 1024 need privileges);"
        " set server.address to a higher port",
    }
    return f"cannot listen on {address}: {reasons.get(error.errno or 0, error.strerror)}"


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read {key} {path}: {exc.strerror}") from None


def _check_pair(cert_file: Path, key_file: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An empty password: an encrypted key fails here instead of prompting on a terminal
        # (gRPC cannot use an encrypted key either).
        context.load_cert_chain(cert_file, key_file, password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise StartupError(
                f"tls.key_file {key_file} is not the private key of tls.cert_file {cert_file};"
                " configure the key the certificate was issued for"
            ) from None
        raise StartupError(
            f"cannot use tls.cert_file {cert_file} with tls.key_file {key_file}:"
            f" {exc.reason or exc}; both must be PEM (certificate, unencrypted private key)"
        ) from None


def _check_client_ca(client_ca_file: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=client_ca_file)
    except ssl.SSLError as exc:
        raise StartupError(
            f"tls.client_ca_file {client_ca_file} holds no usable PEM CA certificate"
            f" ({exc.reason or exc})"
        ) from None
