"""Raw gRPC calls for the adversarial tests: any bytes to any method, outcome as data.

The dpgate client refuses to build most bad requests, so bad input is sent as bytes over
a plain channel (identity serializers) and only the answer is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from dpgate.errors import from_rpc_error
from dpgate_proto.v1 import admin_pb2, audit_pb2, provider_pb2, query_pb2

METHODS: dict[str, MethodDescriptor] = {
    f"/{service.full_name}/{method.name}": method
    for module in (query_pb2, admin_pb2, audit_pb2, provider_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}
RUN_QUERY = "/dpgate.v1.QueryService/RunQuery"
PREVIEW_QUERY = "/dpgate.v1.QueryService/PreviewQuery"

NEVER_FOR_BAD_INPUT = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
"""Statuses that would mean the server failed on bad input rather than refusing it."""


@dataclass(frozen=True, slots=True)
class Answer:
    """How one call ended."""

    code: grpc.StatusCode
    reason: str
    details: str
    charged_units: int
    """Nano-epsilon charged (RunQuery answers only)."""
    release_id: str = ""


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def send(
    channel: grpc.Channel, path: str, payload: bytes, token: str, timeout: float = 60.0
) -> Answer:
    """Send `payload` as the request of `path` (unary or server-streaming) and classify."""
    method = METHODS[path]
    response = message_factory.GetMessageClass(method.output_type)
    metadata = bearer(token)
    try:
        if method.server_streaming:
            parts = list(
                channel.unary_stream(path, response_deserializer=response.FromString)(
                    payload, metadata=metadata, timeout=timeout
                )
            )
        else:
            parts = [
                channel.unary_unary(path, response_deserializer=response.FromString)(
                    payload, metadata=metadata, timeout=timeout
                )
            ]
    except grpc.RpcError as error:
        converted = from_rpc_error(error)
        return Answer(error.code(), converted.reason, error.details() or "", 0)
    charged, release_id = 0, ""
    if path == RUN_QUERY:
        for part in parts:
            if part.HasField("header"):
                charged += part.header.charged.nano_units
                release_id = part.header.release_id
    return Answer(grpc.StatusCode.OK, "", "", charged, release_id)
