"""What the pool and its workers send each other over a pipe (pickled values).

The parent sends a `QueryJob` (or a `Probe`, the test and benchmark job) or `STOP`; the
worker answers `Ready` once at start, then one reply per job: `Done`, `Refused` (a domain
error to re-raise in the caller) or `Failed` (anything else; its detail is only logged).

Domain exceptions do not pickle (their `__init__` takes other arguments than `args`), so
`Refused` carries the type's name, `args` and attributes, and `rebuild_error` restores an
equal exception of one of the whitelisted types without calling its `__init__`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from dpgate_server.queries.engine import PreparedQuery
from dpgate_server.queries.errors import CostMismatchError, EngineError, InvalidQuery
from dpgate_server.vocabulary.errors import DatasetNotFoundError

DOMAIN_ERRORS: Final[Mapping[str, type[Exception]]] = MappingProxyType(
    {
        cls.__name__: cls
        for cls in (InvalidQuery, CostMismatchError, EngineError, DatasetNotFoundError)
    }
)
"""Errors re-raised in the caller as themselves; anything else becomes WorkerFailed."""

STOP: Final = None
"""Sent instead of a job: the worker exits cleanly."""


@dataclass(frozen=True, slots=True)
class QueryJob:
    """Run `prepared` on exactly the dataset version it was prepared (and priced) for.

    The caller prepared the query once (checks, bounding, cost, release key); the worker
    runs it as it is, so what is computed is what was priced and looked up in the ledger.
    """

    prepared: PreparedQuery


class ProbeReport(StrEnum):
    """What a `Probe` answers."""

    PID = "pid"
    """The worker's pid, as ASCII digits."""
    MODULES = "modules"
    """The names of the modules the worker has imported, one per line (what its start
    costs depends on them)."""
    SETTINGS = "settings"
    """The process-wide engine settings in force, as JSON: `opendp_features` (sorted) and
    `streaming` (the Polars streaming variable, or null)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """A job that reads no data, for tests and benchmarks of the pool itself.

    Reachable only through `QueryWorkerPool.run_probe`, never from a Query. The worker
    allocates (and touches) `allocate_bytes`, holds them for `sleep_s` (or until a file
    exists at `until_path`, if set, whichever comes first), raises a RuntimeError carrying
    `fail_with` if it is set, and answers what `report` asks for. `until_path` lets a test
    keep workers busy until it has checked what happens meanwhile, with no clock involved.
    """

    sleep_s: float = 0.0
    until_path: str | None = None
    allocate_bytes: int = 0
    fail_with: str | None = None
    report: ProbeReport = ProbeReport.PID


Job = QueryJob | Probe


@dataclass(frozen=True, slots=True)
class Ready:
    """First message of a worker: imports done, waiting for jobs."""

    pid: int


@dataclass(frozen=True, slots=True)
class Done:
    """The job's answer: the release payload (or a probe's pid)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """A domain error, to be rebuilt in the caller by `rebuild_error`."""

    type_name: str
    args: tuple[Any, ...]
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Failed:
    """An unexpected error: `detail` (with traceback) is for the server log only.

    `fatal` says the worker is exiting after this reply (it ran out of memory), so the
    pool replaces it.
    """

    type_name: str
    detail: str
    fatal: bool


Reply = Done | Refused | Failed


def refusal_of(exc: BaseException) -> Refused | None:
    """The `Refused` reply for a whitelisted domain error, None for anything else."""
    if DOMAIN_ERRORS.get(type(exc).__name__) is not type(exc):
        return None
    return Refused(type(exc).__name__, tuple(exc.args), dict(vars(exc)))


def rebuild_error(refused: Refused) -> Exception:
    """The exception `refused` describes, of the same type with the same args and fields."""
    cls = DOMAIN_ERRORS[refused.type_name]
    exc = cls.__new__(cls)
    Exception.__init__(exc, *refused.args)
    vars(exc).update(refused.attributes)
    return exc
