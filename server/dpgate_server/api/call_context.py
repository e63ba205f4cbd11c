"""Who is calling, for the duration of one RPC (set by the auth interceptor).

The interceptor authenticates once and stores a `CallContext` in a context variable
around the servicer's call, so servicers never parse metadata or tokens themselves.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from dpgate_server.ledger.model import Principal, RequestInfo


@dataclass(frozen=True, slots=True)
class CallContext:
    """The authenticated caller and the request's identity."""

    request_id: str
    rpc: str
    principal: Principal
    source: str

    def request_info(self, query_text: str = "") -> RequestInfo:
        """What the audit chain records about this request."""
        return RequestInfo(
            request_id=self.request_id,
            rpc=self.rpc,
            query_text=query_text,
            principal=self.principal,
            source=self.source,
        )


_CURRENT: contextvars.ContextVar[CallContext] = contextvars.ContextVar("dpgate_call")


def current_call() -> CallContext:
    """The context of the RPC being served; raises LookupError outside an authenticated RPC."""
    return _CURRENT.get()


def bind_call(call: CallContext) -> contextvars.Token[CallContext]:
    return _CURRENT.set(call)


def unbind_call(token: contextvars.Token[CallContext]) -> None:
    _CURRENT.reset(token)
