"""The outermost gRPC interceptor: a request id, latency and status metrics, after-call hooks.

It runs before authentication, so every call (refused ones included) is timed and counted,
and the request id it binds is the one the auth interceptor puts in the audit chain and
every log line of the call carries. The final status and the `ErrorInfo` reason are read
from what the call left in its context (`abort` puts a `google.rpc.Status` in the trailing
metadata), so this module needs nothing from the error table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from dpgate_server.observability.logs import bind_request_id, new_request_id, unbind_request_id
from dpgate_server.observability.metrics import ServerMetrics

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
PUBLISH_RPCS = frozenset({"PublishDatasetVersion", "PublishDatasetVersionWithProgress"})
"""The RPCs that publish a dataset version (timed in `publish_duration`)."""
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
"""Health probes and reflection are logged at DEBUG: load balancers call them constantly."""
_log = logging.getLogger(__name__)


class ObservabilityInterceptor(grpc.ServerInterceptor):
    """Binds a request id, measures every call, and runs hooks after successful ones.

    Args:
        metrics: where latencies and refusals are counted.
        after_success: RPC name (e.g. "PublishDatasetVersion") -> a function called after
            that RPC succeeded; a failing hook is logged, never turned into an error.
    """

    def __init__(
        self, metrics: ServerMetrics, after_success: Mapping[str, Callable[[], None]]
    ) -> None:
        self._metrics = metrics
        self._after_success = dict(after_success)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        return _wrap(handler, lambda context, started: self._finish(method, context, started))

    def _finish(self, method: str, context: grpc.ServicerContext, started: float) -> None:
        elapsed = time.perf_counter() - started
        rpc = method.rpartition("/")[2]
        code = _final_code(context)
        self._metrics.rpc_duration.labels(rpc, code).observe(elapsed)
        reason = None if code == "OK" else (_error_reason(context) or code)
        if reason is not None:
            self._metrics.refusals.labels(rpc, reason).inc()
        level = logging.DEBUG if method.startswith(_QUIET_PREFIXES) else logging.INFO
        _log.log(
            level, "%s %s%s in %.1f ms", rpc, code, f" {reason}" if reason else "", elapsed * 1e3
        )
        if rpc in PUBLISH_RPCS:
            self._metrics.publish_duration.labels(code).observe(elapsed)
        hook = self._after_success.get(rpc)
        if hook is not None and code == "OK":
            try:
                hook()
            except Exception:
                _log.exception("after-call hook of %s failed", rpc)


_Finish = Callable[[grpc.ServicerContext, float], None]


def _wrap(handler: Handler, finish: _Finish) -> Handler:
    """The same handler, run with a request id bound, and `finish` called at its end."""

    def unary_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            token = bind_request_id(new_request_id())
            started = time.perf_counter()
            try:
                return behavior(request, context)
            except BaseException:
                _mark_unknown(context)
                raise
            finally:
                finish(context, started)
                unbind_request_id(token)

        return observed

    def stream_response(behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def observed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            token = bind_request_id(new_request_id())
            started = time.perf_counter()
            try:
                yield from behavior(request, context)
            except BaseException:
                _mark_unknown(context)
                raise
            finally:
                finish(context, started)
                unbind_request_id(token)

        return observed

    codec = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), *codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), *codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), *codec)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), *codec)


def _mark_unknown(context: grpc.ServicerContext) -> None:
    """An exception that is not an abort ends the call as UNKNOWN (gRPC's own rule)."""
    if context.code() is None:  # type: ignore[attr-defined]  # missing from the stubs
        context.set_code(grpc.StatusCode.UNKNOWN)


def _final_code(context: grpc.ServicerContext) -> str:
    code = context.code()  # type: ignore[attr-defined]  # missing from the stubs
    if code is None:
        return "OK"
    return str(code.name)


def _error_reason(context: grpc.ServicerContext) -> str | None:
    """The `ErrorInfo.reason` of an aborted call, from its rich status, if it has one."""
    for key, value in context.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return str(info.reason)
    return None
