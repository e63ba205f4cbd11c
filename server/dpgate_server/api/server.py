"""The server factory: builds a gRPC server from settings; `serve` only runs it.

Tests call `build_server` with port 0 and read the bound port; the command line calls it
with the configured address. Health checking and reflection are always on, so any
standard gRPC client can find and call the services.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dpgate_proto.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    provider_pb2,
    provider_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)
from dpgate_server.answers import CacheSizes, QueryAnswerer
from dpgate_server.api.admin_servicer import AdminServicer
from dpgate_server.api.audit_servicer import AuditServicer
from dpgate_server.api.auth import AuthInterceptor, grpc_receive_limit
from dpgate_server.api.ledger_storage import open_ledger_storage, open_reader_leases
from dpgate_server.api.provider_servicer import ProviderServicer, governance_for
from dpgate_server.api.query_servicer import QueryServicer
from dpgate_server.api.rate_limit import TokenBuckets
from dpgate_server.api.startup_checks import StartupError, check_address_free, read_tls_material
from dpgate_server.config import Settings
from dpgate_server.execution import PoolSettings, QueryWorkerPool
from dpgate_server.ledger import errors as ledger_errors
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import Outcome, RequestInfo
from dpgate_server.sidecars import Sidecars
from dpgate_server.store.catalog import Catalog
from dpgate_server.store.leases import ReaderLeases
from dpgate_server.store.retention import tidy_store
from dpgate_server.store.store import DatasetStore
from dpgate_server.vocabulary.errors import DatasetNotFoundError

_log = logging.getLogger(__name__)

SERVICE_NAMES = (
    query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,
)


RECENT_EVENTS_VERIFIED_AT_START = 1000
"""Audit events whose links and hashes are checked at every start (with the stored head)."""


class InsecureBindError(StartupError, ValueError):
    """Plaintext was asked for on an address other hosts can reach."""


class BrokenAuditChainError(StartupError):
    """The audit chain's recent events or its head fail verification."""


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started server and what a caller needs to reach and stop it."""

    server: grpc.Server
    port: int
    address: str
    health: health.HealthServicer
    tls: bool
    ledger: Ledger
    pool: QueryWorkerPool
    store_root: Path
    sidecars: Sidecars
    """Metrics, health monitoring, signed heads and web pages beside the gRPC server."""
    leases: ReaderLeases
    """Who reads which dataset version (closed last, after every query has ended)."""

    def stop(self, grace_seconds: float) -> None:
        """Refuse new calls, let in-flight ones finish within the grace, then release state.

        Health turns NOT_SERVING first so load balancers stop sending; queries still
        running after the grace are cancelled (their workers end, nothing is charged,
        because a debit happens only after a worker's answer arrives).
        """
        self.sidecars.close()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_seconds).wait()
        self.pool.close()
        self.leases.close()
        try:
            self.ledger.flush_unauthenticated(everything=True)  # the open window too
        except ledger_errors.LedgerUnavailable as exc:  # counts not yet chained are lost
            _log.warning("could not chain the last unauthenticated counts: %s", exc)
        self.ledger.close()


def build_server(
    settings: Settings, *, accept_broken_audit_chain: bool = False, reuse_port: bool = False
) -> RunningServer:
    """Create, wire and start a server for `settings` (port 0 binds a free port).

    Args:
        settings: the validated settings.
        accept_broken_audit_chain: the operator's explicit override to start although the
            audit chain fails its start-up check; the start is then recorded in the chain.

    Raises:
        StartupError: the server cannot start (address, TLS files, ledger, audit chain);
            the message is one line saying what to change.
        reuse_port: bind with SO_REUSEPORT, as one of several serving processes on the
            port their supervisor locked (dpgate_server/serving); otherwise the port must
            be free.
    """
    options = [
        ("grpc.max_receive_message_length", grpc_receive_limit(settings.server.max_message_bytes)),
        ("grpc.max_send_message_length", settings.server.max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    tls = _credentials(settings)
    if tls is None:
        _refuse_plaintext_off_loopback(settings.server.address)
    if not reuse_port:
        check_address_free(settings.server.address)
    sidecars = Sidecars.prepare()
    ledger = _open_ledger(settings, sidecars)
    leases: ReaderLeases | None = None
    try:
        # The current versions live in the ledger, so every replica on it switches at once.
        store = DatasetStore(settings.storage.data_dir, pointer=ledger)
        leases = open_reader_leases(settings, store.root)
        tidy_store(store, leases, settings.publishing.keep_versions)
        catalog = Catalog(store)
        _check_audit_chain(ledger, accept_broken_audit_chain)
        _register_datasets(catalog, ledger)
    except BaseException:
        if leases is not None:
            leases.close()
        ledger.close()
        raise
    limits = settings.limits
    pool = QueryWorkerPool(
        settings.storage.data_dir,
        PoolSettings(
            workers=settings.server.workers,
            max_queue=limits.max_queued_queries,
            memory_limit_bytes=limits.worker_memory_mb * 1024 * 1024,
        ),
    )
    try:
        pool.start()
        sidecars.attach_heads(settings, ledger)
        return _start(
            settings, options, tls, store, leases, catalog, ledger, pool, sidecars, reuse_port
        )
    except BaseException:
        sidecars.close()
        pool.close()
        leases.close()
        ledger.close()
        raise


def _open_ledger(settings: Settings, sidecars: Sidecars) -> Ledger:
    return Ledger(sidecars.timed(open_ledger_storage(settings)))


def _check_audit_chain(ledger: Ledger, accept_broken: bool) -> None:
    """Refuse to start on a chain whose head or recent events fail verification.

    A broken chain means the ledger file was edited, truncated or damaged: serving on it
    would add new events to a record nobody can trust. The operator may still start (to
    export and investigate) with the explicit override, which is itself chained.
    """
    verification = ledger.verify_recent(RECENT_EVENTS_VERIFIED_AT_START)
    if verification.ok:
        return
    problem = (
        f"the audit chain is broken at event {verification.first_bad_seq}: {verification.problem}"
    )
    if not accept_broken:
        raise BrokenAuditChainError(
            f"{problem}; restore the ledger from a backup, or start anyway with"
            " --accept-broken-audit-chain (recorded in the chain)"
        )
    _log.warning("%s; starting anyway on the operator's override", problem)
    ledger.record_event(
        RequestInfo(request_id=f"startup-{uuid.uuid4().hex}", rpc="server-start", source="local"),
        Outcome.ANSWERED,
        detail=f"started on the operator's override (--accept-broken-audit-chain): {problem}",
    )


def _start(
    settings: Settings,
    options: list[tuple[str, int]],
    tls: grpc.ServerCredentials | None,
    store: DatasetStore,
    leases: ReaderLeases,
    catalog: Catalog,
    ledger: Ledger,
    pool: QueryWorkerPool,
    sidecars: Sidecars,
    reuse_port: bool,
) -> RunningServer:
    limits = settings.limits
    answerer = QueryAnswerer(
        store,
        ledger,
        pool,
        limits.query_limits(),
        timeout_s=limits.query_timeout_seconds,
        leases=leases,
        cache=CacheSizes(
            prepared_queries=settings.cache.prepared_queries,
            release_bytes=settings.cache.releases_mb * 1024 * 1024,
        ),
    )
    interceptor = AuthInterceptor(
        ledger,
        TokenBuckets(limits.requests_per_second, limits.burst),
        TokenBuckets(limits.peer_requests_per_second, limits.peer_burst),
        settings.server.max_message_bytes,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.server.rpc_threads, thread_name_prefix="rpc"
        ),
        interceptors=[sidecars.interceptor(), interceptor],
        options=options,
    )
    query_pb2_grpc.add_QueryServiceServicer_to_server(
        QueryServicer(catalog, ledger, answerer), server
    )
    governance = governance_for(settings, store, ledger, leases)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(ledger, catalog, governance), server
    )
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(ledger, sidecars.heads), server)
    provider_pb2_grpc.add_ProviderServiceServicer_to_server(
        ProviderServicer(governance, ledger), server
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_name, reflection.SERVICE_NAME), server
    )

    port = _add_port(server, settings.server.address, tls, probe=not reuse_port)
    server.start()
    try:
        sidecars.start(settings, ledger, pool, health_servicer, SERVICE_NAMES)
    except BaseException:
        server.stop(None)
        raise
    host = settings.server.address.rpartition(":")[0]
    return RunningServer(
        server,
        port,
        f"{host}:{port}",
        health_servicer,
        tls is not None,
        ledger,
        pool,
        settings.storage.data_dir,
        sidecars,
        leases,
    )


def _add_port(
    server: grpc.Server, address: str, tls: grpc.ServerCredentials | None, *, probe: bool
) -> int:
    """Bind `address`; gRPC raises RuntimeError (not OSError) when it cannot."""
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls)
    except RuntimeError:
        port = 0
    if port == 0:
        if probe:  # a shared port is never free: the probe would blame the other processes
            check_address_free(address)  # names the reason if it is one the probe can see
        raise StartupError(f"cannot listen on {address}: gRPC could not bind it")
    return port


def _register_datasets(catalog: Catalog, ledger: Ledger) -> None:
    """Give every stored dataset a ledger record, with a cap of zero until an admin sets one.

    Zero is the safe default: nothing can be spent on a dataset whose cap no administrator
    has decided.
    """
    request = RequestInfo(request_id="startup", rpc="server-start")
    for version in catalog.current_versions():
        try:
            ledger.get_dataset(version.dataset_id)
        except DatasetNotFoundError:
            try:
                ledger.admin.create_dataset(
                    version.dataset_id,
                    accounting=version.metadata.accounting,
                    cap_units=0,
                    reason="registered at server start; an administrator sets the cap",
                    request=request,
                )
            except ledger_errors.AlreadyExists:
                continue  # a replica starting at the same moment registered it first
            _log.info("registered dataset %s in the ledger with cap 0", version.dataset_id)


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    material = read_tls_material(settings.tls)
    if material is None:
        return None
    return grpc.ssl_server_credentials(
        [(material.key, material.cert)],
        root_certificates=material.client_ca,
        require_client_auth=material.client_ca is not None,
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
