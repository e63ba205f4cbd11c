"""Prometheus metrics of one server, in a registry of its own, on a listener of its own.

Two kinds of figures:

* measured as things happen (`ServerMetrics`): RPC latency by method and status, refusals
  by reason, ledger write latency, publish durations;
* read when scraped (`StateCollector`): releases and spend by dataset (from the ledger, so
  they are exact and survive restarts), the worker pool's occupancy, queue and restarts.

The listener is separate from the public ports and loopback by default: latencies depend on
the data, so they are for operators, never for the public (DESIGN.md amendments).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_wsgi_server
from prometheus_client.registry import Collector

RPC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Seconds: cheap RPCs take milliseconds, heavy queries up to the query timeout."""
LEDGER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30)
"""Seconds: a write is one fsynced transaction, about a millisecond on a local disk."""
PUBLISH_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
"""Seconds: publishing rewrites a whole dataset version."""


class ServerMetrics:
    """The event metrics of one server (thread-safe; prometheus_client locks internally)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rpc_duration = Histogram(
            "dpgate_rpc_duration_seconds",
            "Time to answer an RPC, by method and final status code.",
            ("method", "code"),
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self.refusals = Counter(
            "dpgate_refusals",
            "RPCs refused, by method and ErrorInfo reason (e.g. BUDGET_EXHAUSTED, BAD_TOKEN).",
            ("method", "reason"),
            registry=registry,
        )
        self.ledger_write = Histogram(
            "dpgate_ledger_write_duration_seconds",
            "Time a ledger write transaction took, lock wait and commit included.",
            buckets=LEDGER_BUCKETS,
            registry=registry,
        )
        self.publish_duration = Histogram(
            "dpgate_publish_duration_seconds",
            "Time to publish a dataset version (PublishDatasetVersion, or its streaming"
            " form), by status code.",
            ("code",),
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class DatasetFigures:
    """What the ledger says about one dataset when scraped."""

    dataset_id: str
    measure: str
    """"epsilon" or "rho"."""
    releases: int
    spent: float


@dataclass(frozen=True, slots=True)
class PoolFigures:
    """What the worker pool says about itself when scraped."""

    workers: int
    alive: int
    busy: int
    waiting: int
    deadline_kills: int
    crashes: int
    rejected: int


class StateSource(Protocol):
    """Where the scrape-time figures come from (the server wires the ledger and pool)."""

    def datasets(self) -> list[DatasetFigures] | None:
        """The figures of every dataset; None while the ledger cannot be read."""
        ...

    def pool(self) -> PoolFigures: ...


class StateCollector(Collector):
    """Reads the ledger and the pool at each scrape."""

    def __init__(self, source: StateSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        releases = CounterMetricFamily(
            "dpgate_releases", "Charged releases recorded in the ledger.", labels=("dataset",)
        )
        spend = CounterMetricFamily(
            "dpgate_spend",
            "Privacy budget spent on a dataset by all requesters (epsilon or rho).",
            labels=("dataset", "measure"),
        )
        datasets = self._source.datasets()
        # An outage of the ledger must not take the other metrics with it: they are what
        # an operator looks at during one.
        yield GaugeMetricFamily(
            "dpgate_ledger_up",
            "1 when the last scrape could read the ledger, 0 when it could not.",
            value=0 if datasets is None else 1,
        )
        if datasets is not None:
            for figures in datasets:
                releases.add_metric((figures.dataset_id,), figures.releases)
                spend.add_metric((figures.dataset_id, figures.measure), figures.spent)
            yield releases
            yield spend
        pool = self._source.pool()
        for name, text, value in (
            ("dpgate_workers", "Configured query worker processes.", pool.workers),
            ("dpgate_workers_alive", "Worker processes running.", pool.alive),
            ("dpgate_workers_busy", "Workers running a query (occupancy).", pool.busy),
            ("dpgate_query_queue_length", "Queries waiting for a free worker.", pool.waiting),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        restarts = CounterMetricFamily(
            "dpgate_worker_restarts",
            "Workers ended and replaced: at a query's deadline, or after a crash or memory cap.",
            labels=("cause",),
        )
        restarts.add_metric(("deadline",), pool.deadline_kills)
        restarts.add_metric(("crash",), pool.crashes)
        yield restarts
        yield CounterMetricFamily(
            "dpgate_queries_rejected_overloaded",
            "Queries refused because the worker queue was full.",
            value=pool.rejected,
        )


def new_registry(source: StateSource) -> tuple[CollectorRegistry, ServerMetrics]:
    """A registry with the event metrics, the scrape-time state and process figures."""
    registry = CollectorRegistry(auto_describe=True)
    metrics = ServerMetrics(registry)
    registry.register(StateCollector(source))
    ProcessCollector(registry=registry)
    return registry, metrics


class MetricsListener:
    """The /metrics HTTP listener (prometheus_client's WSGI server in a daemon thread)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self._host = host
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_wsgi_server(port, host, registry)

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        return int(self._server.server_port)

    @property
    def address(self) -> str:
        """host:port as bound."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
