"""Each serving process's share: the configured limits hold for all processes together."""

from __future__ import annotations

import os

import pytest

from dpgate_server.config import ConfigError, Settings, load_settings
from dpgate_server.serving.shares import for_process, per_process, process_count


def settings(**server: object) -> Settings:
    return Settings.model_validate(
        {
            "server": server,
            "limits": {"requests_per_second": 20, "burst": 40, "max_queued_queries": 8},
            "operations": {"metrics_enabled": True, "metrics_address": "127.0.0.1:9464"},
            "web": {"enabled": True},
        }
    )


def test_one_process_keeps_the_settings_as_configured() -> None:
    configured = settings(workers=2, processes=1)
    assert per_process(configured, 1) == configured
    assert for_process(configured, 1, 0) == configured


def test_processes_divide_rates_queue_cache_and_workers() -> None:
    shared = per_process(settings(workers=4, processes=2), 2)
    assert shared.server.workers == 2
    assert shared.limits.requests_per_second == 10
    assert shared.limits.burst == 20
    assert shared.limits.max_queued_queries == 4
    assert shared.limits.worker_memory_mb == 3072  # 2 x 2 workers of 3072 MB: as configured
    assert shared.cache.releases_mb == 32
    assert shared.ledger.max_connections == 8


def test_more_processes_than_workers_shrinks_each_workers_memory_cap() -> None:
    shared = per_process(settings(workers=2, processes=4), 4)
    assert shared.server.workers == 1  # every process needs one
    assert shared.limits.worker_memory_mb * 4 == 3072 * 2  # the same memory in all


def test_metrics_get_a_port_per_process_and_the_web_pages_one_process() -> None:
    configured = settings(workers=2, processes=2)
    first, second = (for_process(configured, 2, i) for i in range(2))
    assert (first.operations.metrics_address, second.operations.metrics_address) == (
        "127.0.0.1:9464",
        "127.0.0.1:9465",
    )
    assert (first.web.enabled, second.web.enabled) == (True, False)


def test_auto_is_one_process_per_usable_core() -> None:
    assert process_count("auto") == len(os.sched_getaffinity(0))
    assert process_count(3) == 3


@pytest.mark.parametrize("value", ["0", "257", "many"])
def test_a_bad_process_count_is_refused_naming_the_key(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPGATE_SERVER__PROCESSES", value)
    with pytest.raises(ConfigError, match=r"server\.processes"):
        load_settings(None)
