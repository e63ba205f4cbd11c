"""dpgate: the client library for the dpgate differential-privacy statistics service.

The client installs without the server's dependencies (no OpenDP): `pip install dpgate`.
Generated gRPC stubs live in `dpgate._proto` and never appear in the public API.
"""

from dpgate._client import Client
from dpgate._types import ColumnInfo, DatasetDescription, DatasetInfo, KeyValue
from dpgate.errors import (
    AuthenticationError,
    BudgetExhaustedError,
    DpgateError,
    InvalidQueryError,
    NotFoundError,
    NotImplementedYetError,
    OverloadedError,
    PermissionDeniedError,
    ServerError,
)

__version__ = "0.1.0"
__all__ = [
    "AuthenticationError",
    "BudgetExhaustedError",
    "Client",
    "ColumnInfo",
    "DatasetDescription",
    "DatasetInfo",
    "DpgateError",
    "InvalidQueryError",
    "KeyValue",
    "NotFoundError",
    "NotImplementedYetError",
    "OverloadedError",
    "PermissionDeniedError",
    "ServerError",
    "__version__",
]
