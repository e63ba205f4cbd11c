"""Process-wide switches the engine needs, set once when a process starts to run queries.

OpenDP's feature flags and Polars' engine switch belong to the whole process: OpenDP keeps
its features in one global set, and Polars reads an environment variable at every
`collect`. Setting them per query would write the environment while other threads read
it, so a query worker sets them once at start, before it says it is ready (and a test or
benchmark running the engine in its own process calls `configure_process` once too).
"""

from __future__ import annotations

import os

from opendp.mod import GLOBAL_FEATURES, enable_features

from dpgate_server.queries.errors import EngineError

OPENDP_FEATURES = ("contrib",)
"""OpenDP features the plans use (Polars measurements are "contrib" in OpenDP 0.16)."""

STREAMING_VARIABLE = "POLARS_AUTO_NEW_STREAMING"
"""Polars switch (internal, read at every collect) letting `engine="auto"` use the streaming
engine. Measured with bench/engine.py on 12M rows (polars 1.36.1, opendp 0.16.0): count
by practice 0.90 -> 0.45 s, sum by practice 1.12 -> 0.51 s, practice x week 2.08 -> 0.61 s,
peak RSS 1.7 GB -> 0.5 GB. `configure_process` sets it to "1" unless the operator set it;
re-measure after upgrading Polars."""


def configure_process() -> None:
    """Enable the OpenDP features the plans use and let Polars stream (idempotent).

    Call once at process start, before threads run queries. An operator's own
    POLARS_AUTO_NEW_STREAMING (for instance "0") is kept.
    """
    enable_features(*OPENDP_FEATURES)
    os.environ.setdefault(STREAMING_VARIABLE, "1")


def check_configured() -> None:
    """Raise EngineError if `configure_process` has not run in this process.

    Without it OpenDP would refuse every plan with a message about features, far from
    the cause; this names the cause.
    """
    missing = [feature for feature in OPENDP_FEATURES if feature not in GLOBAL_FEATURES]
    if missing:
        raise EngineError(
            f"OpenDP feature(s) {', '.join(missing)} not enabled in this process: call "
            "process_settings.configure_process() once when the process starts"
        )
