"""How the suite is shared between pytest-xdist processes (scripts/test.sh runs two).

A work unit is a whole test module, so a module's fixtures are built once, or every
module of one `xdist_group` mark (the adversarial suite: its two servers are session
fixtures, started once). Each worker process builds its own session fixtures (dataset,
servers, PostgreSQL cluster) in its own temporary folder, on free ports.

Units are handed out in collection order, and modules holding a `slow` test are collected
first, so no long module is left to run alone at the end.
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling


class ModuleOrGroupScheduling(LoadScopeScheduling):
    """`--dist loadfile`, except that tests with an `xdist_group` mark form one unit."""

    def _split_scope(self, nodeid: str) -> str:
        # With --dist loadgroup, xdist appends "@<group>" to the ids of marked tests.
        if nodeid.rfind("@") > nodeid.rfind("]"):
            return nodeid.rsplit("@", 1)[1]
        return nodeid.split("::", 1)[0]


def make_scheduler(config: pytest.Config, log: Any) -> ModuleOrGroupScheduling:
    config.option.loadscopereorder = False  # keep the order below, not largest unit first
    return ModuleOrGroupScheduling(config, log)


def slow_modules_first(items: list[pytest.Item]) -> None:
    """Move every module holding a `slow` or grouped test to the front, keeping order."""
    early = {
        item.nodeid.split("::", 1)[0]
        for item in items
        if item.get_closest_marker("slow") or item.get_closest_marker("xdist_group")
    }
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] not in early)
