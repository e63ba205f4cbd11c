"""Why a request was refused: the catalogue of reasons, and the base of domain errors.

Every error that dpgate raises on purpose is a `DomainError` and carries exactly one
`ErrorReason`, the catalogue the client shares (`dpgate_shared.reasons`, the names of the
proto's `dpgate.v1.ErrorReason` without prefix). They travel as the `google.rpc.ErrorInfo`
reason string, and the API layer's table (`dpgate_server.api.errors`) gives every reason
its one gRPC status code.

This module sits in the lowest layer and imports no gRPC or protobuf: the ledger, the
store, governance, the query engine and the worker pool all raise these errors without
knowing how they reach the wire.
"""

from __future__ import annotations

from collections.abc import Mapping

from dpgate_shared.reasons import ErrorReason

__all__ = ["DatasetNotFoundError", "DomainError", "ErrorReason"]


class DomainError(Exception):
    """Base of every error dpgate raises on purpose; nothing was charged or changed.

    Subclasses set `reason` as a class attribute, or per instance when one class covers
    several reasons (`InvalidQuery`). A class that sets none is answered as INTERNAL,
    which leaks no detail (a test fails for any concrete error class without its own).

    Not a frozen dataclass: Python sets `__traceback__` on exceptions as they propagate.

    Attributes:
        reason: why, from the catalogue.
        message: what went wrong and what to change, safe to show the caller.
        metadata: facts for the caller (e.g. the field at fault), strings only.

    `str(error)` is the message, or a `detail` for the operator's log only when the
    message must hide it (a database error, say).
    """

    reason: ErrorReason = ErrorReason.INTERNAL
    audited: bool = False
    """True once this refusal's audit event is in the chain: the ledger writes it in the
    transaction that decided the refusal, and marks the error so that the API layer, which
    audits every other refusal, does not write a second event for the same request."""

    def __init__(
        self,
        message: str = "",
        metadata: Mapping[str, str] | None = None,
        *,
        detail: str | None = None,
    ) -> None:
        # str(error) is `detail` when given: more than the caller may see, for the log.
        super().__init__(message if detail is None else detail)
        self.message = message
        # A plain dict: query workers pickle these errors' attributes across processes.
        self.metadata: Mapping[str, str] = dict(metadata or {})


class DatasetNotFoundError(DomainError, LookupError):
    """No dataset (or no such version of it) has this id: in the store or in the ledger.

    One error for every place that looks a dataset up, so a caller is told the same thing
    whichever component noticed first.
    """

    reason = ErrorReason.DATASET_NOT_FOUND

    def __init__(self, dataset_id: str, version: str | None = None) -> None:
        name = dataset_id if version is None else f"{dataset_id}/{version}"
        super().__init__(
            f"no dataset {name!r}; ListDatasets shows the datasets available",
            {"dataset_id": dataset_id},
        )
        self.dataset_id = dataset_id
