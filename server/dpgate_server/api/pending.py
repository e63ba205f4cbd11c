"""Servicers for services in the contract whose implementation has not landed yet.

Every RPC of such a service answers `UNIMPLEMENTED` with a message naming what it is
waiting for, instead of grpc's bare "Method not implemented!", so a client (or grpcurl)
learns what is missing rather than guessing.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from dpgate_server.api.errors import NotYetAvailableError, abort, answer_for


def pending_servicer(base: type[Any], service: ServiceDescriptor, missing: str) -> Any:
    """An instance of `base` whose every RPC answers UNIMPLEMENTED naming `missing`."""

    def make(rpc: str) -> Any:
        def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            abort(context, answer_for(NotYetAvailableError(rpc, missing), request_id=""))

        handler.__name__ = rpc
        return handler

    methods = {m.name: make(m.name) for m in service.methods}
    return type(f"Pending{service.name}", (base,), methods)()
