"""The connection every client shares: channel, credentials, bearer token, error mapping.

`Client`, `AdminClient` and `AuditClient` differ only in the stubs they call; opening the
channel (TLS or loopback plaintext), sending the token on every call, applying the timeout
and turning every `grpc.RpcError` into a `DpgateError` live here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from dpgate._targets import channel_target
from dpgate.errors import from_rpc_error

_T = TypeVar("_T")
_Self = TypeVar("_Self", bound="Connection")


class Connection:
    """A channel to a dpgate server (or its replicas) carrying one bearer token.

    Args:
        target: host:port of the server; or its replicas, as a list of host:port or one
            comma-separated string, over which calls are spread (gRPC's round_robin), so
            that calls go on when one replica stops answering (see `dpgate._targets`).
        token: the bearer token an administrator issued (sent on every call).
        root_certificates: PEM of the CA to trust; with it the connection uses TLS.
        private_key: PEM client key, for servers that require mutual TLS.
        certificate_chain: PEM client certificate, likewise.
        timeout: seconds each call may take.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        token: str | None = None,
        *,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        timeout: float = 60.0,
    ) -> None:
        where = channel_target(target, tls=root_certificates is not None)
        if root_certificates is None:
            self._channel = grpc.insecure_channel(where.uri, options=where.options())
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
            self._channel = grpc.secure_channel(where.uri, credentials, options=where.options())
        self._target = where.describe()
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        # Never the token: a repr ends up in notebooks and logs.
        return f"{type(self).__name__}({self._target!r})"

    def _call(self, method: Callable[..., _T], request: Any, *, query: bool = False) -> _T:
        """One unary call; a failure raises the matching DpgateError.

        `query` marks a query call (its refusals are `InvalidQueryError`).
        """
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, query=query) from None

    def _stream(
        self, method: Callable[..., Iterator[_T]], request: Any, *, query: bool = False
    ) -> Iterator[_T]:
        """A server-streaming call's messages; a failure raises the matching DpgateError."""
        try:
            yield from method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, query=query) from None
