"""How many serving processes, and each one's share of what is configured for the server.

Every limit and memory figure in the settings is for the whole server, however many
processes serve it. Each process therefore gets 1/N of the rates, bursts, queue, release
cache and ledger connections, and a share of the query workers; when N does not divide
the workers (two workers, four processes), each process still needs one, and the worker
memory cap shrinks so that processes x workers x cap stays within what was configured.

A client's channel is one connection and the kernel gives each connection to one process,
so a single token on a single channel gets 1/N of its rate limit: the configured rate is
an upper bound for all its connections together, never exceeded, sometimes not reached.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from dpgate_server.config import Settings

MIN_WORKER_MEMORY_MB = 512
"""The smallest worker memory cap the settings accept (an idle worker uses ~160 MB)."""


def process_count(configured: int | str) -> int:
    """`server.processes` as a number: "auto" is one process per core this process may use."""
    if configured == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    return int(configured)


@dataclass(frozen=True, slots=True)
class ProcessShare:
    """What one of `processes` serving processes may use."""

    processes: int
    workers: int
    worker_memory_mb: int

    @classmethod
    def of(cls, settings: Settings, processes: int) -> ProcessShare:
        workers = max(1, settings.server.workers // processes)
        total_mb = settings.limits.worker_memory_mb * settings.server.workers
        memory = min(settings.limits.worker_memory_mb, total_mb // (processes * workers))
        return cls(processes, workers, max(MIN_WORKER_MEMORY_MB, memory))


def per_process(settings: Settings, processes: int) -> Settings:
    """`settings` as one of `processes` serving processes applies them (1: unchanged)."""
    if processes <= 1:
        return settings
    share = ProcessShare.of(settings, processes)
    limits = settings.limits
    return settings.model_copy(
        update={
            "server": settings.server.model_copy(update={"workers": share.workers}),
            "limits": limits.model_copy(
                update={
                    "requests_per_second": limits.requests_per_second / processes,
                    "burst": _share(limits.burst, processes),
                    "peer_requests_per_second": limits.peer_requests_per_second / processes,
                    "peer_burst": _share(limits.peer_burst, processes),
                    "max_queued_queries": limits.max_queued_queries // processes,
                    "worker_memory_mb": share.worker_memory_mb,
                }
            ),
            "cache": settings.cache.model_copy(
                update={"releases_mb": settings.cache.releases_mb // processes}
            ),
            "ledger": settings.ledger.model_copy(
                update={"max_connections": _share(settings.ledger.max_connections, processes)}
            ),
        }
    )


def for_process(settings: Settings, processes: int, index: int) -> Settings:
    """The settings serving process `index` of `processes` runs with.

    Its share of the limits (`per_process`); metrics on the configured port + index (each
    process has its own registry: scrape every one and add them up; port 0 stays 0); the
    web pages in process 0 only (they need one listener, not N).
    """
    shared = per_process(settings, processes)
    if processes <= 1:
        return shared
    operations = shared.operations
    host, _, port = operations.metrics_address.rpartition(":")
    metrics_port = int(port) + index if int(port) else 0
    return shared.model_copy(
        update={
            "operations": operations.model_copy(
                update={"metrics_address": f"{host}:{metrics_port}"}
            ),
            "web": shared.web.model_copy(update={"enabled": shared.web.enabled and index == 0}),
        }
    )


def _share(value: int, processes: int) -> int:
    """At least one each: a process that may do nothing at all would refuse every call."""
    return max(1, math.floor(value / processes))
