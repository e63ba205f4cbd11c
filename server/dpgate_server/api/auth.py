"""Authentication, roles and rate limits, applied once to every RPC by an interceptor.

First the caller's address is rate-limited, before anything else is done for it: over
its rate, UNAVAILABLE/RATE_LIMITED with a retry hint. Then `authorization: Bearer
<token>` is looked up by hash in the ledger (constant-time compare there). No, bad,
expired or revoked token: UNAUTHENTICATED, counted in memory per source and chained as one
audit event per source and window (no ledger write per call, so a flood neither fills the
disk nor queues ahead of debits for the write lock). A role not in
`roles.ROLES_BY_METHOD` for the RPC: PERMISSION_DENIED, audited. Over the token's rate:
UNAVAILABLE/RATE_LIMITED with a retry hint. Rate refusals are not audited: refusing
costs nothing and must stay cheap under a flood. Tokens are never logged.
"""

from __future__ import annotations

import contextvars
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

import grpc

from dpgate_server.api.call_context import CallContext, bind_call, unbind_call
from dpgate_server.api.errors import (
    BadRequestError,
    ErrorAnswer,
    abort,
    ledger_unavailable_answer,
)
from dpgate_server.api.rate_limit import TokenBuckets
from dpgate_server.api.roles import PUBLIC_SERVICES, ROLES_BY_METHOD, rpc_name
from dpgate_server.ledger.errors import LedgerUnavailable
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import Outcome, Principal, RequestInfo
from dpgate_server.observability.logs import current_request_id, new_request_id
from dpgate_server.vocabulary.errors import ErrorReason

_BEARER = "bearer "
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Call: TypeAlias = "CallContext | None"
"""The admitted caller; None on the public services."""


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates each call, checks its role and rate, and binds a CallContext."""

    def __init__(
        self,
        ledger: Ledger,
        buckets: TokenBuckets,
        peer_buckets: TokenBuckets,
        max_message_bytes: int,
    ) -> None:
        self._ledger = ledger
        self._buckets = buckets
        self._peer_buckets = peer_buckets
        self._max_message_bytes = max_message_bytes

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None:
            return handler
        limit = self._max_message_bytes
        if method.startswith(PUBLIC_SERVICES):
            return _wrap(handler, limit, _public)
        return _wrap(handler, limit, lambda context: self._admit(method, context), self._refuse)

    def _admit(self, method: str, context: grpc.ServicerContext) -> CallContext:
        """The caller's context, or abort with the status that says why not.

        Tokens live in the ledger: with its database down, nobody can be authenticated,
        and the caller is told UNAVAILABLE/LEDGER_UNAVAILABLE (retry), not UNAUTHENTICATED.
        """
        try:
            return self._admit_or_abort(method, context)
        except LedgerUnavailable as exc:
            abort(context, ledger_unavailable_answer(exc))

    def _admit_or_abort(self, method: str, context: grpc.ServicerContext) -> CallContext:
        rpc = rpc_name(method)
        request_id = current_request_id() or new_request_id()
        source = _peer_address(context.peer())
        _check_rate(context, self._peer_buckets, source, "from your address")
        principal = self._authenticate(context)
        if principal is None:
            self._ledger.record_unauthenticated(
                RequestInfo(request_id=request_id, rpc=rpc, source=source)
            )
            abort(
                context,
                ErrorAnswer(
                    ErrorReason.BAD_TOKEN,
                    "missing, unknown, expired or revoked token: send the metadata "
                    "'authorization: Bearer <token>' with a token an administrator issued",
                ),
            )
        call = CallContext(request_id=request_id, rpc=rpc, principal=principal, source=source)
        allowed = ROLES_BY_METHOD.get(method, frozenset())
        if principal.role not in allowed:
            self._ledger.record_event(call.request_info(), Outcome.DENIED)
            roles = ", ".join(sorted(r.value for r in allowed)) or "no role"
            abort(
                context,
                ErrorAnswer(
                    ErrorReason.ROLE_FORBIDDEN,
                    f"a token with role {principal.role.value} may not call {rpc}; "
                    f"it needs: {roles}",
                    {"role": principal.role.value, "rpc": rpc},
                ),
            )
        _check_rate(context, self._buckets, principal.token_id, "with this token")
        return call

    def _refuse(self, call: _Call, context: grpc.ServicerContext, answer: ErrorAnswer) -> NoReturn:
        """End an authenticated call whose request bytes were not read; audited."""
        outcome = answer.outcome
        if call is not None and outcome is not None:
            try:
                self._ledger.record_event(call.request_info(), outcome, detail=answer.reason.value)
            except LedgerUnavailable as exc:
                abort(context, ledger_unavailable_answer(exc))
        abort(context, answer)

    def _authenticate(self, context: grpc.ServicerContext) -> Principal | None:
        values = [v for k, v in context.invocation_metadata() if k == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str):
            return None
        header = values[0]
        if not header.lower().startswith(_BEARER):
            return None
        return self._ledger.authenticate(header[len(_BEARER) :].strip())


def _check_rate(context: grpc.ServicerContext, buckets: TokenBuckets, key: str, whose: str) -> None:
    """Abort with RATE_LIMITED and a retry hint if `key`'s bucket is empty (not audited)."""
    decision = buckets.take(key)
    if not decision.allowed:
        wait = max(decision.retry_after_seconds, 0.001)
        abort(
            context,
            ErrorAnswer(
                ErrorReason.RATE_LIMITED,
                f"too many calls {whose}; retry after {wait:.3f} s",
                {"retry_after_seconds": f"{wait:.3f}"},
            ),
        )


def _peer_address(peer: str) -> str:
    """ "ipv4:127.0.0.1:5000" -> "127.0.0.1"; "ipv6:[::1]:5000" -> "::1" (for aggregation)."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind == "ipv6" and rest.startswith("[") and "]" in rest:
        return rest[1 : rest.index("]")]
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return rest or peer


@dataclass(frozen=True, slots=True)
class _Malformed:
    """Stands for request bytes that do not parse as the RPC's request message."""

    error: str


@dataclass(frozen=True, slots=True)
class _TooLarge:
    """Stands for a request message larger than `server.max_message_bytes` (not parsed)."""

    size: int
    limit: int


_Unread: TypeAlias = "_Malformed | _TooLarge"


def grpc_receive_limit(max_message_bytes: int) -> int:
    """The message size gRPC itself cuts a call off at: twice the configured maximum.

    When gRPC cuts a call off, the servicer's request stream just breaks (a bare
    `grpc.RpcError`, or an early end), exactly as when the client cancels, and gRPC answers
    the client itself: the server cannot tell the two apart, audit the right reason, or say
    what to change. Messages up to twice the maximum are read, and refused here instead
    (`_TooLarge`): RESOURCE_EXHAUSTED/MESSAGE_TOO_LARGE with a message saying what to
    change, audited as refused. The price is a bounded one: one message of up to twice the
    maximum may be held in memory per call.
    """
    return 2 * max_message_bytes


def _malformed_answer() -> ErrorAnswer:
    return ErrorAnswer(
        ErrorReason.MALFORMED_REQUEST,
        "the request bytes are not a valid message of this RPC's request type; send a "
        "message built from the dpgate.v1 protos",
    )


def _too_large_answer(request: _TooLarge) -> ErrorAnswer:
    return ErrorAnswer(
        ErrorReason.MESSAGE_TOO_LARGE,
        f"a request message of {request.size:,} bytes is larger than the {request.limit:,} "
        "bytes this server accepts (server.max_message_bytes): send smaller messages; an "
        "upload sends its file in chunks (the dpgate client sends chunks of 1 MiB), each "
        "chunk and the header must fit in that size",
        {"size_bytes": str(request.size), "max_message_bytes": str(request.limit)},
    )


def _unread_answer(request: _Unread) -> ErrorAnswer:
    if isinstance(request, _TooLarge):
        return _too_large_answer(request)
    return ErrorAnswer(
        ErrorReason.MALFORMED_REQUEST,
        _malformed_answer().message + f" ({request.error})",
    )


def _public(context: grpc.ServicerContext) -> None:
    """Public services (health, reflection) admit everyone."""


def _refuse_public(call: _Call, context: grpc.ServicerContext, answer: ErrorAnswer) -> NoReturn:
    abort(context, answer)


def _tolerant(
    deserializer: Callable[[bytes], Any] | None, max_message_bytes: int
) -> Callable[[bytes], Any] | None:
    """`deserializer`, returning `_TooLarge` or `_Malformed` instead of raising.

    gRPC answers INTERNAL ("Exception deserializing request!") when a deserializer raises,
    before any handler or interceptor code runs; bad bytes are bad input, so the handler
    refuses them itself with INVALID_ARGUMENT (after authentication, so an anonymous caller
    still gets UNAUTHENTICATED). A message over `max_message_bytes` is not parsed at all
    (see `grpc_receive_limit`).
    """
    if deserializer is None:
        return None
    parse = deserializer

    def tolerant(data: bytes) -> Any:
        if len(data) > max_message_bytes:
            return _TooLarge(len(data), max_message_bytes)
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, or invalid UTF-8 in a string field
            return _Malformed(type(exc).__name__)

    return tolerant


def _wrap(
    handler: Handler,
    max_message_bytes: int,
    admit: Callable[[grpc.ServicerContext], _Call],
    refuse: Callable[[_Call, grpc.ServicerContext, ErrorAnswer], NoReturn] = _refuse_public,
) -> Handler:
    """The same handler, with `admit` run first and its context bound around the call.

    A request that was too large or did not parse is refused by `refuse` once admitted; in
    a request stream, such a message raises BadRequestError where the servicer reads it.
    """

    def bind(call: _Call) -> contextvars.Token[CallContext] | None:
        return None if call is None else bind_call(call)

    def unbind(token: contextvars.Token[CallContext] | None) -> None:
        if token is not None:
            unbind_call(token)

    def checked(request: Any, call: _Call, context: grpc.ServicerContext) -> Any:
        if isinstance(request, (_Malformed, _TooLarge)):
            refuse(call, context, _unread_answer(request))
        if isinstance(request, Iterator):
            return _checked_stream(request)
        return request

    def unary_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            call = admit(context)
            token = bind(call)
            try:
                return behavior(checked(request, call, context), context)
            finally:
                unbind(token)

        return guarded

    def stream_response(behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = admit(context)
            token = bind(call)
            try:
                yield from behavior(checked(request, call, context), context)
            finally:
                unbind(token)

        return guarded

    codec = (
        _tolerant(handler.request_deserializer, max_message_bytes),
        handler.response_serializer,
    )
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), *codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), *codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), *codec)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), *codec)


def _checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    """The stream's requests; a message too large or not parsing, or a broken stream, is
    bad input.

    A message over `server.max_message_bytes` (up to `grpc_receive_limit`) arrives as
    `_TooLarge` and is refused as MESSAGE_TOO_LARGE (audited as refused). Past that limit
    gRPC ends the call itself (RESOURCE_EXHAUSTED to the client) and the request iterator
    raises a bare `grpc.RpcError`, with no status: a client that cancels mid-stream looks
    exactly the same from here. Either way the caller sent an incomplete request: it is
    refused (audited as invalid, nothing is staged), not a server failure.
    """
    try:
        for request in requests:
            if isinstance(request, (_Malformed, _TooLarge)):
                answer = _unread_answer(request)
                refused = BadRequestError(answer.reason, answer.message, "request")
                refused.metadata = {**refused.metadata, **answer.metadata}
                raise refused
            yield request
    except grpc.RpcError:
        raise BadRequestError(
            ErrorReason.REQUEST_STREAM_ENDED,
            "the request stream ended before it was complete: a message was far larger than"
            " the server accepts (server.max_message_bytes), or the client cancelled; send"
            " smaller messages (uploads: chunks of at most 1 MiB)",
            "request",
        ) from None
