"""PoolSettings refuses sizes that cannot make a working pool."""

from __future__ import annotations

import pytest

from dpgate_server.execution import PoolSettings


def test_defaults_need_only_workers_and_queue() -> None:
    settings = PoolSettings(workers=2, max_queue=8)
    assert settings.memory_limit_bytes is None
    assert settings.start_timeout_s > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"workers": 0, "max_queue": 1},
        {"workers": 1, "max_queue": -1},
        {"workers": 1, "max_queue": 1, "memory_limit_bytes": 0},
        {"workers": 1, "max_queue": 1, "start_timeout_s": 0.0},
        {"workers": 1, "max_queue": 1, "watch_interval_s": float("nan")},
    ],
)
def test_impossible_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        PoolSettings(**kwargs)  # type: ignore[arg-type]
