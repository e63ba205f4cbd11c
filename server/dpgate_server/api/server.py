"""The server factory: builds a gRPC server from settings; `serve` only runs it.

Tests call `build_server` with port 0 and read the bound port; the command line calls it
with the configured address. Health checking and reflection are always on, so any
standard gRPC client can find and call the services.
"""

from __future__ import annotations

import ipaddress
import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from dpgate._proto.dpgate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    provider_pb2,
    provider_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dpgate_server.api.pending import pending_servicer
from dpgate_server.api.query_servicer import QueryServicer
from dpgate_server.config import Settings
from dpgate_server.data.catalog import Catalog
from dpgate_server.data.store import DatasetStore

_log = logging.getLogger(__name__)

SERVICE_NAMES = (
    query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,
)


class InsecureBindError(ValueError):
    """Plaintext was asked for on an address other hosts can reach."""


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started server and what a caller needs to reach and stop it."""

    server: grpc.Server
    port: int
    address: str
    health: health.HealthServicer
    tls: bool

    def stop(self, grace_seconds: float) -> None:
        """Mark every service NOT_SERVING, then let in-flight RPCs finish within the grace."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_seconds).wait()


def build_server(settings: Settings) -> RunningServer:
    """Create, wire and start a server for `settings` (port 0 binds a free port)."""
    options = [
        ("grpc.max_receive_message_length", settings.server.max_message_bytes),
        ("grpc.max_send_message_length", settings.server.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.server.rpc_threads, thread_name_prefix="rpc"
        ),
        options=options,
    )
    catalog = Catalog(DatasetStore(settings.storage.data_dir))
    query_pb2_grpc.add_QueryServiceServicer_to_server(QueryServicer(catalog), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        pending_servicer(
            admin_pb2_grpc.AdminServiceServicer,
            admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
            "the privacy ledger and authenticated servicers (issues 6 and 7)",
        ),
        server,
    )
    audit_pb2_grpc.add_AuditServiceServicer_to_server(
        pending_servicer(
            audit_pb2_grpc.AuditServiceServicer,
            audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
            "the audit chain and authenticated servicers (issues 6 and 7)",
        ),
        server,
    )
    provider_pb2_grpc.add_ProviderServiceServicer_to_server(
        pending_servicer(
            provider_pb2_grpc.ProviderServiceServicer,
            provider_pb2.DESCRIPTOR.services_by_name["ProviderService"],
            "provider uploads and consent (issue 9)",
        ),
        server,
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_name, reflection.SERVICE_NAME), server
    )

    tls = _credentials(settings)
    if tls is None:
        _refuse_plaintext_off_loopback(settings.server.address)
        port = server.add_insecure_port(settings.server.address)
    else:
        port = server.add_secure_port(settings.server.address, tls)
    if port == 0:
        raise OSError(f"could not bind {settings.server.address}")
    server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = settings.server.address.rpartition(":")[0]
    return RunningServer(server, port, f"{host}:{port}", health_servicer, tls is not None)


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    tls = settings.tls
    if tls.cert_file is None and tls.key_file is None:
        if tls.client_ca_file is not None:
            raise ValueError("tls.client_ca_file needs tls.cert_file and tls.key_file")
        return None
    if tls.cert_file is None or tls.key_file is None:
        raise ValueError("TLS needs both tls.cert_file and tls.key_file")
    pair = (tls.key_file.read_bytes(), tls.cert_file.read_bytes())
    client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _refuse_plaintext_off_loopback(address: str) -> None:
    """Tokens travel in metadata: without TLS they must never leave this machine."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InsecureBindError(
            f"refusing to serve without TLS on {address}: set tls.cert_file and tls.key_file, "
            "or bind a loopback address such as 127.0.0.1"
        )
