"""Every log line of a request carries its request id, the same one as its audit event."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from dpgate._audit import AuditClient
from dpgate._client import Client
from dpgate_server.observability.logs import JsonFormatter, RequestIdFilter

from .conftest import ObservedService


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_log_line_of_a_call_has_the_audit_events_request_id(
    observed: ObservedService, json_log: io.StringIO
) -> None:
    with Client(observed.target, token=observed.tokens["analyst"]) as client:
        client.datasets()
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    calls = [line for line in lines if line["message"].startswith("ListDatasets OK")]
    assert len(calls) == 1
    request_id = calls[0]["request_id"]
    assert request_id
    assert len(request_id) == 16
    with AuditClient(observed.target, token=observed.tokens["auditor"]) as audit:
        events = audit.events(1)
    listed = [e for e in events if e.rpc == "ListDatasets" and e.request_id == request_id]
    assert len(listed) == 1


def test_lines_outside_a_request_have_no_request_id(json_log: io.StringIO) -> None:
    logging.getLogger("dpgate_server.test").warning("outside")
    (line,) = [json.loads(x) for x in json_log.getvalue().splitlines() if "outside" in x]
    assert line["request_id"] is None
    assert line["level"] == "warning"
