"""Structured logs: one JSON object per line, with the request id on every line of a request.

The request id lives in a context variable bound around each RPC (and each web request);
a logging filter copies it into every record, so any logger (ours, grpc's, uvicorn's)
logging while serving a request carries it, without passing it around. The same id is the
one written in the audit chain and quoted in INTERNAL errors, so an operator can go from a
complaint to the log lines and the audit event.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
import uuid
from typing import Literal

_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dpgate_request_id", default=None
)

LogFormat = Literal["json", "text"]


def new_request_id() -> str:
    """A fresh request id: 16 hex characters (random, not secret)."""
    return uuid.uuid4().hex[:16]


def current_request_id() -> str | None:
    """The id of the request being served on this thread, or None outside a request."""
    return _REQUEST_ID.get()


def bind_request_id(request_id: str) -> contextvars.Token[str | None]:
    """Make `request_id` current until `unbind_request_id` is called with the token."""
    return _REQUEST_ID.set(request_id)


def unbind_request_id(token: contextvars.Token[str | None]) -> None:
    """Restore the request id that was current before `bind_request_id`."""
    _REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (or None) to every record passing through a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the request id in brackets when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_tag)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request_tag = f" [{request_id}]" if request_id else ""
        return super().format(record)


def configure_logging(log_format: LogFormat = "json", level: str = "INFO") -> None:
    """Send every log record to stderr in `log_format`, each tagged with its request id.

    Replaces the root logger's handlers, so calling it twice does not duplicate lines.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
