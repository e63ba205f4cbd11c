"""What runs beside the gRPC server: metrics, health monitoring, signed heads, web pages,
and the flusher that chains each window's unauthenticated counts as the window ends.

`Sidecars.prepare` makes the parts the gRPC server itself needs (the metrics it records
into, the head publisher its publish hook calls); `start` starts the listeners and threads
once the server is up; `close` stops them before the server drains. Each part is optional
and off unless its settings turn it on (health monitoring is always on).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from grpc_health.v1 import health as grpc_health
from prometheus_client import CollectorRegistry

from dpgate_server.api.startup_checks import StartupError
from dpgate_server.config import Settings
from dpgate_server.execution import QueryWorkerPool
from dpgate_server.ledger.errors import LedgerUnavailable
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.storage import LedgerStorage
from dpgate_server.ledger.unauthenticated import UnauthenticatedFlusher
from dpgate_server.observability.health import HealthMonitor, ledger_check, pool_check
from dpgate_server.observability.interceptor import PUBLISH_RPCS, ObservabilityInterceptor
from dpgate_server.observability.metrics import (
    DatasetFigures,
    MetricsListener,
    PoolFigures,
    ServerMetrics,
    StateCollector,
)
from dpgate_server.observability.timed_storage import TimedStorage
from dpgate_server.signed_heads import HeadPublisher, SigningKeyError, load_or_create_signing_key
from dpgate_server.spend import units_to_decimal
from dpgate_server.vocabulary.accounting import Accounting

if TYPE_CHECKING:
    from dpgate_server.web.listener import WebListener

# The web pages (Starlette, Jinja2, uvicorn: about 0.3 CPU s of a start) are imported by
# `start_web`, only when `web.enabled`; a server without them never loads them.

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class Sidecars:
    """The server's companions; `close` is idempotent."""

    registry: CollectorRegistry
    metrics: ServerMetrics
    heads: HeadPublisher | None = None
    health: HealthMonitor | None = None
    metrics_listener: MetricsListener | None = None
    web: WebListener | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def prepare(cls) -> Sidecars:
        """A fresh metrics registry (one per server, so tests can run several)."""
        registry = CollectorRegistry(auto_describe=True)
        return cls(registry, ServerMetrics(registry))

    def timed(self, storage: LedgerStorage) -> TimedStorage:
        """`storage` with its write transactions timed into the metrics."""
        return TimedStorage(storage, self.metrics.ledger_write)

    def attach_heads(self, settings: Settings, ledger: Ledger) -> None:
        """Load (or create) the signing key and make the head publisher, if configured."""
        audit = settings.audit
        if audit.signing_key_file is None:
            return
        try:
            key = load_or_create_signing_key(audit.signing_key_file, settings.storage.data_dir)
        except SigningKeyError as exc:
            raise StartupError(str(exc)) from None
        folder = audit.signed_heads_dir or settings.storage.ledger_path.parent / "signed-heads"
        self.heads = HeadPublisher(ledger.head, key, folder, audit.sign_interval_seconds)

    def interceptor(self) -> ObservabilityInterceptor:
        """The outermost interceptor: request ids, RPC metrics, a signed head per publish."""
        hooks: dict[str, Callable[[], None]] = {}
        heads = self.heads
        if heads is not None:
            hooks.update(dict.fromkeys(PUBLISH_RPCS, lambda: _sign(heads)))
        return ObservabilityInterceptor(self.metrics, hooks)

    def start(
        self,
        settings: Settings,
        ledger: Ledger,
        pool: QueryWorkerPool,
        health_servicer: grpc_health.HealthServicer,
        service_names: Sequence[str],
    ) -> None:
        """Start health monitoring, the unauthenticated-count flusher, the metrics
        listener and the head publisher."""
        self.registry.register(StateCollector(_State(ledger, pool)))
        flusher = UnauthenticatedFlusher(
            ledger.flush_unauthenticated, ledger.unauthenticated_policy
        )
        flusher.start()
        self.closers.append(flusher.stop)
        operations = settings.operations
        self.health = HealthMonitor(
            health_servicer,
            service_names,
            [pool_check(lambda: pool.stats().alive), ledger_check(ledger.head)],
            operations.health_interval_seconds,
        )
        self.health.start()
        self.closers.append(self.health.stop)
        if operations.metrics_enabled:
            host, port = split_address(operations.metrics_address)
            try:
                self.metrics_listener = MetricsListener(host, port, self.registry)
            except OSError as exc:
                raise StartupError(
                    f"cannot serve metrics on {operations.metrics_address}: {exc.strerror};"
                    " choose another operations.metrics_address"
                ) from None
            self.closers.append(self.metrics_listener.close)
            _log.info("metrics on http://%s:%d/metrics", host, self.metrics_listener.port)
        if self.heads is not None:
            self.heads.start()
            self.closers.append(self.heads.close)
        if settings.web.enabled:
            self.web = start_web(settings, ledger, self.heads)
            self.closers.append(self.web.close)

    def describe(self) -> list[str]:
        """One line per listener or signer, for the start-up banner."""
        lines = []
        if self.metrics_listener is not None:
            lines.append(f"metrics: http://{self.metrics_listener.address}/metrics (loopback)")
        if self.web is not None:
            lines.append(f"web:     {self.web.url}/ (transparency page; admin pages at /admin)")
        if self.heads is not None:
            lines.append(f"signed heads: {self.heads.folder} (key {self.heads.key_id})")
        return lines

    def close(self) -> None:
        """Stop everything started, newest first."""
        while self.closers:
            closer = self.closers.pop()
            try:
                closer()
            except Exception:
                _log.exception("error while stopping a sidecar")


def _sign(heads: HeadPublisher) -> None:
    heads.publish_now()


class _State:
    """Scrape-time figures from the ledger and the pool."""

    def __init__(self, ledger: Ledger, pool: QueryWorkerPool) -> None:
        self._ledger = ledger
        self._pool = pool

    def datasets(self) -> list[DatasetFigures] | None:
        try:
            report = self._ledger.admin.spending_report()
        except LedgerUnavailable as exc:
            _log.warning("metrics scraped without the ledger: %s", exc)
            return None
        return [
            DatasetFigures(
                dataset_id=d.dataset_id,
                measure="epsilon" if d.accounting is Accounting.PURE_DP else "rho",
                releases=d.releases,
                spent=float(units_to_decimal(d.spent_units)),
            )
            for d in report.datasets
        ]

    def pool(self) -> PoolFigures:
        stats = self._pool.stats()
        return PoolFigures(
            workers=stats.workers,
            alive=stats.alive,
            busy=stats.busy,
            waiting=stats.waiting,
            deadline_kills=stats.killed,
            crashes=stats.crashed,
            rejected=stats.rejected,
        )


def split_address(address: str) -> tuple[str, int]:
    """ "127.0.0.1:9464" -> ("127.0.0.1", 9464); "[::1]:0" -> ("::1", 0)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address, or "localhost") is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_web(settings: Settings, ledger: Ledger, heads: HeadPublisher | None) -> WebListener:
    """The web pages on `web.address`: TLS with the server's certificate, or loopback only."""
    from dpgate_server.web.app import WebOptions, build_app  # noqa: PLC0415 (see the top)
    from dpgate_server.web.listener import WebListener  # noqa: PLC0415
    from dpgate_server.web.public_data import PublicData  # noqa: PLC0415

    host, port = split_address(settings.web.address)
    tls = settings.tls
    with_tls = tls.cert_file is not None and tls.key_file is not None
    if not with_tls and not is_loopback(host):
        raise StartupError(
            f"refusing to serve the web pages without TLS on {settings.web.address}: set"
            " tls.cert_file and tls.key_file, or bind a loopback address such as 127.0.0.1"
        )
    data = PublicData(
        ledger,
        settings.storage.data_dir,
        heads,
        show_organisations=settings.web.show_organisations,
    )
    options = WebOptions(
        page_size=settings.web.page_size,
        near_cap_fraction=settings.web.near_cap_fraction,
        session_minutes=settings.web.admin_session_minutes,
        secure_cookies=with_tls,
    )
    app = build_app(ledger, data, options)
    try:
        listener = WebListener(
            app, host, port, tls.cert_file if with_tls else None, tls.key_file if with_tls else None
        )
    except OSError as exc:
        raise StartupError(
            f"cannot serve the web pages on {settings.web.address}: {exc.strerror};"
            " choose another web.address"
        ) from None
    listener.wait_started()
    return listener
