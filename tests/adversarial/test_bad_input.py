"""Bad input of every kind gets a clear status, costs nothing, and the server keeps serving.

Three generators (Hypothesis) and a hand-written list:

- broken queries: a valid query with one to three defects (bad spends, unknown enum
  numbers, odd unicode, private or unknown columns, enormous `in` lists and group-bys...)
  sent to RunQuery or PreviewQuery: INVALID_ARGUMENT or NOT_FOUND with a reason, always;
- random messages for every analyst, administrator and auditor RPC (any field value):
  never UNKNOWN, INTERNAL or a hang;
- random bytes as the request of every RPC: likewise (unparsable ones are INVALID_ARGUMENT);
- hand-written cases, oversized messages, and garbage bytes on the TCP port.

# One pytest-xdist unit: these modules share the session's two attacked servers.
pytestmark = pytest.mark.xdist_group("adversarial")


Budgets: the analysts used here hold budget, and must end with exactly what valid
answers charged (none, for the broken queries). DPGATE_FULL_RUN=1 tries over 10,000.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpgate import Client, InvalidQueryError, count
from dpgate_proto.v1 import query_pb2, types_pb2
from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import SERVING, Server, health_status, scale
from tests.adversarial.wire import (
    METHODS,
    NEVER_FOR_BAD_INPUT,
    PREVIEW_QUERY,
    RUN_QUERY,
    Answer,
    send,
)

DATASET = "gp_appointments"
MAX_MESSAGE_BYTES = 1024 * 1024  # server_a's limit (helpers.settings)
Q = query_pb2
COLUMNS = frozenset(
    (
        *("patient_key", "practice_code", "pcn_code", "sub_icb_code", "icb_code", "region_code"),
        *("appointment_date", "week", "month", "weekday", "hour", "duration_minutes"),
        *("lead_time_days", "duration_band", "lead_time_band", "mode", "status", "hcp_type"),
        *("national_category", "service_setting", "age_band", "sex"),
    )
)
MODES = ("Face-to-Face", "Telephone", "Video Conference/Online", "Home Visit", "Unknown")
PERIOD = (dt.date(2024, 12, 1), dt.date(2025, 11, 30))
ODD = [
    "",
    " ",
    "\x00",
    "\u202emode",
    "patient\u200dkey",
    "p\u0430tient_key",  # Cyrillic a
    "mode ",
    "MODE",
    "\U0001f916",
    "e\u0301",
    "\uffff",
    "\U0010ffff",
    "' OR 1=1 --",
    "${jndi:ldap://x/a}",
    "../../etc/passwd",
    "%s%n%x",
    "a" * 10_000,
]
TEXT = st.one_of(
    st.sampled_from(ODD), st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
)
NOT_A_COLUMN = TEXT.filter(lambda t: t not in COLUMNS)
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # examples depend on the server's state; replaying them helps nobody
)


def kv(value: str | int) -> types_pb2.KeyValue:
    if isinstance(value, str):
        return types_pb2.KeyValue(string_value=value)
    return types_pb2.KeyValue(int_value=value)


def flt(column: str, op: int, *values: types_pb2.KeyValue) -> query_pb2.Filter:
    return Q.Filter(column=column, operator=op, values=list(values))


GOOD_FILTERS = (
    flt("mode", Q.FILTER_OPERATOR_EQ, kv("Telephone")),
    flt("status", Q.FILTER_OPERATOR_IN, kv("DNA"), kv("Attended")),
    flt("hour", Q.FILTER_OPERATOR_GE, kv(8)),
    flt("appointment_date", Q.FILTER_OPERATOR_LT, types_pb2.KeyValue(date_value="2025-06-01")),
)
GOOD_GROUPS = ("mode", "sex", "status", "age_band", "hcp_type")


@st.composite
def valid_queries(draw: st.DrawFn) -> query_pb2.Query:
    query = Q.Query(dataset_id=DATASET)
    if draw(st.booleans()):
        query.aggregate.function = Q.AGGREGATE_FUNCTION_COUNT
    else:
        query.aggregate.function = Q.AGGREGATE_FUNCTION_SUM
        query.aggregate.column = draw(st.sampled_from(["duration_minutes", "lead_time_days"]))
    query.filters.extend(draw(st.lists(st.sampled_from(GOOD_FILTERS), max_size=3)))
    query.group_by.extend(draw(st.lists(st.sampled_from(GOOD_GROUPS), max_size=2, unique=True)))
    query.epsilon = draw(st.floats(0.01, 1.0))
    return query


Defect = Callable[[query_pb2.Query], None]


def _set(field: str, value: Any) -> Defect:
    return lambda query: setattr(query, field, value)


def _add_filter(item: query_pb2.Filter) -> Defect:
    return lambda query: query.filters.append(item)


def _add_groups(names: list[str]) -> Defect:
    return lambda query: query.group_by.extend(names)


def _valid_date(text: str) -> bool:
    try:
        return PERIOD[0] <= dt.date.fromisoformat(text) <= PERIOD[1]
    except ValueError:
        return False


def _no_spend(query: query_pb2.Query) -> None:
    query.ClearField("epsilon")


def _duplicate_group(query: query_pb2.Query) -> None:
    query.group_by.extend(["mode", "mode"])


def _sum_of(column: str) -> Defect:
    def defect(query: query_pb2.Query) -> None:
        query.aggregate.function = Q.AGGREGATE_FUNCTION_SUM
        query.aggregate.column = column

    return defect


BAD_FLOAT = st.floats().filter(lambda x: not 1e-9 <= x <= 10)
EXTREME_INTS = st.sampled_from([*INT64, 0, -1, 24, 2**31, 2**32, 2**53 + 1])
ORDERING = (
    Q.FILTER_OPERATOR_LT,
    Q.FILTER_OPERATOR_LE,
    Q.FILTER_OPERATOR_GT,
    Q.FILTER_OPERATOR_GE,
)
OPS = st.sampled_from([Q.FILTER_OPERATOR_EQ, Q.FILTER_OPERATOR_NE, Q.FILTER_OPERATOR_IN, *ORDERING])

DEFECTS: dict[str, st.SearchStrategy[Defect]] = {
    "spend": BAD_FLOAT.map(lambda x: _set("epsilon", x)),
    "rho on a pure-DP dataset": st.floats().map(lambda x: _set("rho", x)),
    "no spend": st.just(_no_spend),
    "unreachable or bad accuracy": st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]), st.floats(-1e300, 1.0)
    ).map(lambda x: _set("target_half_width", x)),
    "confidence level": st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.floats(max_value=-1e-300),
        st.floats(min_value=1.0),
    ).map(lambda x: _set("confidence_level", x)),
    "max_contributions": st.integers(25, 2**32 - 1).map(lambda x: _set("max_contributions", x)),
    "unknown aggregate enum": st.integers(*INT32)
    .filter(lambda x: x not in (1, 2))
    .map(lambda x: lambda q: setattr(q.aggregate, "function", x)),
    "sum of a bad column": st.one_of(
        NOT_A_COLUMN, st.sampled_from(["patient_key", "mode", "hour", "practice_code", ""])
    ).map(_sum_of),
    "group by unknown column": NOT_A_COLUMN.map(lambda t: _add_groups([t])),
    "group by private or ungroupable column": st.sampled_from(
        ["patient_key", "duration_minutes", "lead_time_days"]
    ).map(lambda t: _add_groups([t])),
    "group by a column twice": st.just(_duplicate_group),
    "enormous group-by": st.integers(1_001, 20_000).map(lambda n: _add_groups(["mode"] * n)),
    "too many cells": st.just(
        _add_groups(["practice_code", "appointment_date", "hour", "age_band", "national_category"])
    ),
    "filter on unknown column": NOT_A_COLUMN.map(
        lambda t: _add_filter(flt(t, Q.FILTER_OPERATOR_EQ, kv("Telephone")))
    ),
    "filter on the patient key": st.tuples(OPS, st.integers(*INT64)).map(
        lambda p: _add_filter(flt("patient_key", p[0], kv(p[1])))
    ),
    "unknown operator enum": st.integers(*INT32)
    .filter(lambda x: not 1 <= x <= 7)
    .map(lambda x: _add_filter(flt("mode", x, kv("Telephone")))),
    "ordering on categories": st.sampled_from(ORDERING).map(
        lambda op: _add_filter(flt("mode", op, kv("Telephone")))
    ),
    "value outside the public set": TEXT.filter(lambda t: t not in MODES).map(
        lambda t: _add_filter(flt("mode", Q.FILTER_OPERATOR_EQ, kv(t)))
    ),
    "value of the wrong kind": st.one_of(
        st.integers(*INT64).map(lambda i: flt("mode", Q.FILTER_OPERATOR_EQ, kv(i))),
        TEXT.map(lambda t: flt("hour", Q.FILTER_OPERATOR_EQ, kv(t))),
        st.integers(*INT64).map(lambda i: flt("appointment_date", Q.FILTER_OPERATOR_LT, kv(i))),
        st.just(flt("mode", Q.FILTER_OPERATOR_EQ, types_pb2.KeyValue())),
    ).map(_add_filter),
    "wrong number of values": st.one_of(
        st.just(flt("mode", Q.FILTER_OPERATOR_EQ)),
        st.just(flt("mode", Q.FILTER_OPERATOR_IN)),
        st.just(flt("mode", Q.FILTER_OPERATOR_EQ, kv("Telephone"), kv("Unknown"))),
    ).map(_add_filter),
    "enormous in-list": st.integers(1_001, 20_000).map(
        lambda n: _add_filter(flt("mode", Q.FILTER_OPERATOR_IN, *[kv("Telephone")] * n))
    ),
    "bad date": TEXT.filter(lambda t: not _valid_date(t)).map(
        lambda t: _add_filter(
            flt("appointment_date", Q.FILTER_OPERATOR_GE, types_pb2.KeyValue(date_value=t))
        )
    ),
    "hour out of range": st.one_of(st.integers(*INT64).filter(lambda h: not 0 <= h <= 23)).map(
        lambda h: _add_filter(flt("hour", Q.FILTER_OPERATOR_LT, kv(h)))
    ),
    "too many filters": st.integers(17, 60).map(
        lambda n: lambda q: q.filters.extend([GOOD_FILTERS[0]] * n)
    ),
    "unknown dataset": TEXT.filter(lambda t: t != DATASET).map(lambda t: _set("dataset_id", t)),
}


@st.composite
def broken_queries(draw: st.DrawFn) -> tuple[list[str], query_pb2.Query]:
    """A valid query with one to three defects (every defect alone makes it invalid)."""
    query = draw(valid_queries())
    names = draw(st.lists(st.sampled_from(sorted(DEFECTS)), min_size=1, max_size=3))
    for name in names:
        draw(DEFECTS[name])(query)
    return names, query


@pytest.fixture(scope="module")
def channel(server_a: Server) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(server_a.target, options=options) as chan:
        yield chan


@pytest.fixture(scope="module")
def fuzzer(server_a: Server) -> tuple[str, str]:
    """An analyst with budget to lose, if bad input were ever charged."""
    return server_a.new_analyst(5, "fuzzer")


def check_refused(answer: Answer, payload_size: int) -> None:
    """A broken query's answer: a clear refusal with a reason, or gRPC's size refusal."""
    if payload_size > MAX_MESSAGE_BYTES:
        assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in answer.details
        return
    assert answer.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), answer
    assert answer.reason
    assert answer.details


@pytest.mark.timeout(scale(300, 3_600))
def test_broken_queries_are_refused_with_a_reason_and_cost_nothing(
    server_a: Server, channel: grpc.Channel, figures: Figures
) -> None:
    """Self-contained: its own analyst (with budget to lose), checked after every example."""
    requester_id, token = server_a.new_analyst(5, "broken")

    @settings(SETTINGS, max_examples=scale(250, 6_000))
    @given(case=broken_queries(), run=st.booleans())
    def send_one(case: tuple[list[str], query_pb2.Query], run: bool) -> None:
        names, query = case
        for name in set(names):
            figures.add(f"bad input: defect: {name}")
        if run:
            path, payload = RUN_QUERY, Q.RunQueryRequest(query=query).SerializeToString()
        else:
            path, payload = PREVIEW_QUERY, Q.PreviewQueryRequest(query=query).SerializeToString()
        answer = send(channel, path, payload, token)
        figures.add("bad input: broken queries")
        figures.add(f"bad input: status {answer.code.name}")
        check_refused(answer, len(payload))
        assert answer.charged_units == 0

    send_one()
    assert server_a.spent_units(requester_id) == 0
    with server_a.ledger() as ledger:
        assert ledger.list_releases(requester_id) == []
    assert health_status(server_a.target) == SERVING


# -- random messages and random bytes for every RPC ------------------------------------

FUZZED = sorted(
    path
    for path in METHODS
    if path.startswith(("/dpgate.v1.QueryService/", "/dpgate.v1.AuditService/"))
    or (path.startswith("/dpgate.v1.AdminService/") and "/PublishDatasetVersion" not in path)
)
"""Every RPC but the provider's and publishing (issue 9 is building them; add them then);
both publish RPCs are left out (a fuzzed request naming the dataset would publish it)."""
ROLE_OF_SERVICE = {"QueryService": "analyst", "AdminService": "admin", "AuditService": "auditor"}
QUERY_TEXT = st.one_of(
    TEXT, st.sampled_from([DATASET, "practices", "calendar", "mode", "patient_key", "hour"])
)


def _scalar(field: FieldDescriptor, text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    kinds = FieldDescriptor
    ranges = {
        kinds.TYPE_INT32: INT32,
        kinds.TYPE_SINT32: INT32,
        kinds.TYPE_SFIXED32: INT32,
        kinds.TYPE_ENUM: INT32,
        kinds.TYPE_UINT32: (0, 2**32 - 1),
        kinds.TYPE_FIXED32: (0, 2**32 - 1),
        kinds.TYPE_INT64: INT64,
        kinds.TYPE_SINT64: INT64,
        kinds.TYPE_SFIXED64: INT64,
        kinds.TYPE_UINT64: (0, 2**64 - 1),
        kinds.TYPE_FIXED64: (0, 2**64 - 1),
    }
    if field.type in ranges:
        low, high = ranges[field.type]
        return st.one_of(
            st.sampled_from([low, high, 0, 1, -1 if low < 0 else 2]), st.integers(low, high)
        )
    if field.type == kinds.TYPE_STRING:
        return text
    if field.type == kinds.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == kinds.TYPE_BOOL:
        return st.booleans()
    if field.type == kinds.TYPE_FLOAT:
        return st.floats(width=32)
    return st.floats()


def messages(
    descriptor: Descriptor, text: st.SearchStrategy[str], depth: int = 0
) -> st.SearchStrategy[Message]:
    """Any message of `descriptor`'s type: each field unset or any value (depth-limited)."""
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            value: st.SearchStrategy[Any] = messages(field.message_type, text, depth + 1)
        else:
            value = _scalar(field, text)
        if field.is_repeated:
            value = st.lists(value, max_size=4)
        optional[field.name] = value
    cls = message_factory.GetMessageClass(descriptor)
    return st.fixed_dictionaries({}, optional=optional).map(lambda fields: _build(cls, fields))


def _build(cls: type[Message], fields: dict[str, Any]) -> Message:
    message = cls()
    for name, value in fields.items():
        target = getattr(message, name, None)
        if isinstance(value, list):
            if value and isinstance(value[0], Message):
                for item in value:
                    target.add().CopyFrom(item)  # type: ignore[union-attr]
            else:
                target.extend(value)  # type: ignore[union-attr]
        elif isinstance(value, Message):
            target.CopyFrom(value)  # type: ignore[union-attr]
        else:
            setattr(message, name, value)
    return message


@st.composite
def random_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(FUZZED))
    text = QUERY_TEXT if "/QueryService/" in path else TEXT
    return path, draw(messages(METHODS[path].input_type, text)).SerializeToString()


@st.composite
def random_bytes(draw: st.DrawFn) -> tuple[str, bytes]:
    return draw(st.sampled_from(FUZZED)), draw(st.binary(max_size=512))


def _tokens_with_a_fresh_analyst(server: Server) -> dict[str, tuple[str, str]]:
    """Tokens per role for the random calls; the analyst is new and holds a little budget,
    so what it spent is exactly what this test's valid random queries were charged."""
    return {
        "analyst": server.new_analyst(0.5, "random"),
        "admin": ("setup-admin", server.tokens["admin"]),
        "auditor": ("setup-auditor", server.tokens["auditor"]),
    }


def _send_random(
    channel: grpc.Channel,
    request: tuple[str, bytes],
    tokens: dict[str, tuple[str, str]],
    charged: Counter[str],
    figures: Figures,
    kind: str,
) -> None:
    path, payload = request
    service = path.split("/")[1].split(".")[-1]
    answer = send(channel, path, payload, tokens[ROLE_OF_SERVICE[service]][1])
    charged["units"] += answer.charged_units
    figures.add(f"bad input: {kind}")
    figures.add(f"bad input: status {answer.code.name}")
    assert answer.code not in NEVER_FOR_BAD_INPUT, (path, answer)
    if answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert answer.reason in ("BUDGET_EXHAUSTED", "MESSAGE_TOO_LARGE")
    elif answer.code != grpc.StatusCode.OK:
        assert answer.reason
        assert answer.details


def _assert_charged_only_what_answers_said(
    server: Server, tokens: dict[str, tuple[str, str]], charged: Counter[str]
) -> None:
    requester_id, _ = tokens["analyst"]
    assert server.spent_units(requester_id) == charged["units"]
    with server.ledger() as ledger:
        assert ledger.reconcile().ok
        assert ledger.verify().ok
    assert health_status(server.target) == SERVING


@pytest.mark.timeout(scale(300, 3_600))
def test_random_messages_to_every_rpc_get_a_clear_status_and_charge_what_they_say(
    server_a: Server, channel: grpc.Channel, figures: Figures
) -> None:
    """Self-contained: its own analyst and tally, checked once every example has run."""
    tokens, charged = _tokens_with_a_fresh_analyst(server_a), Counter[str]()

    @settings(SETTINGS, max_examples=scale(120, 2_600))
    @given(request=random_requests())
    def send_one(request: tuple[str, bytes]) -> None:
        _send_random(channel, request, tokens, charged, figures, "random messages")

    send_one()
    _assert_charged_only_what_answers_said(server_a, tokens, charged)


@pytest.mark.timeout(scale(300, 3_600))
def test_random_bytes_to_every_rpc_get_a_clear_status_and_charge_what_they_say(
    server_a: Server, channel: grpc.Channel, figures: Figures
) -> None:
    tokens, charged = _tokens_with_a_fresh_analyst(server_a), Counter[str]()

    @settings(SETTINGS, max_examples=scale(80, 1_500))
    @given(request=random_bytes())
    def send_one(request: tuple[str, bytes]) -> None:
        _send_random(channel, request, tokens, charged, figures, "random bytes")

    send_one()
    _assert_charged_only_what_answers_said(server_a, tokens, charged)


# -- hand-written cases ---------------------------------------------------------------


def _query(**fields: Any) -> query_pb2.Query:
    base: dict[str, Any] = {
        "dataset_id": DATASET,
        "aggregate": Q.Aggregate(function=Q.AGGREGATE_FUNCTION_COUNT),
        "epsilon": 0.1,
    }
    base.update(fields)
    if "rho" in fields or "target_half_width" in fields:
        base.pop("epsilon")
    return Q.Query(**base)


HAND_WRITTEN: dict[str, query_pb2.Query] = {
    "epsilon NaN": _query(epsilon=math.nan),
    "epsilon +inf": _query(epsilon=math.inf),
    "epsilon -inf": _query(epsilon=-math.inf),
    "epsilon negative": _query(epsilon=-0.5),
    "epsilon zero": _query(epsilon=0.0),
    "epsilon negative zero": _query(epsilon=-0.0),
    "epsilon huge": _query(epsilon=1e308),
    "epsilon just above the per-query maximum": _query(epsilon=10.000000001),
    "epsilon below one unit": _query(epsilon=9e-10),
    "epsilon subnormal": _query(epsilon=5e-324),
    "rho on pure DP": _query(rho=0.1),
    "target NaN": _query(target_half_width=math.nan),
    "target unreachable": _query(target_half_width=1e-9),
    "confidence 1": _query(confidence_level=1.0),
    "confidence NaN": _query(confidence_level=math.nan),
    "max_contributions above the dataset's": _query(max_contributions=25),
    "group by the patient key": _query(group_by=["patient_key"]),
    "group by an NHS number": _query(group_by=["nhs_number"]),
    "group by a date of birth": _query(group_by=["date_of_birth"]),
    "group by a postcode": _query(group_by=["postcode"]),
    "group by a homoglyph of the patient key": _query(group_by=["p\u0430tient_key"]),
    "group by a right-to-left override": _query(group_by=["\u202eedom"]),
    "group by 50,000 columns": _query(group_by=["mode"] * 50_000),
    "in-list of 50,000 values": _query(
        filters=[flt("mode", Q.FILTER_OPERATOR_IN, *[kv("Telephone")] * 50_000)]
    ),
    "value with a zero-width space": _query(
        filters=[flt("mode", Q.FILTER_OPERATOR_EQ, kv("Telephone\u200b"))]
    ),
    "value with a NUL": _query(filters=[flt("mode", Q.FILTER_OPERATOR_EQ, kv("Telephone\x00"))]),
    "SQL in a value": _query(filters=[flt("mode", Q.FILTER_OPERATOR_EQ, kv("' OR 1=1 --"))]),
    "Polars expression in a column": _query(
        filters=[flt("pl.col('patient_key')", Q.FILTER_OPERATOR_EQ, kv(1))]
    ),
    "date 2025-02-30": _query(
        filters=[
            flt(
                "appointment_date",
                Q.FILTER_OPERATOR_EQ,
                types_pb2.KeyValue(date_value="2025-02-30"),
            )
        ]
    ),
    "date before the period": _query(
        filters=[
            flt(
                "appointment_date",
                Q.FILTER_OPERATOR_GE,
                types_pb2.KeyValue(date_value="1900-01-01"),
            )
        ]
    ),
    "dataset path traversal": _query(dataset_id="../gp_appointments"),
    "dataset with a NUL": _query(dataset_id="gp_appointments\x00"),
    "dataset in capitals": _query(dataset_id="GP_APPOINTMENTS"),
    "dataset in fullwidth letters": _query(dataset_id="\uff47\uff50_appointments"),
}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_hand_written_bad_queries_are_refused_with_a_reason(
    name: str, channel: grpc.Channel, fuzzer: tuple[str, str], figures: Figures
) -> None:
    request = Q.RunQueryRequest(query=HAND_WRITTEN[name], idempotency_key=name[:100])
    payload = request.SerializeToString()
    answer = send(channel, RUN_QUERY, payload, fuzzer[1])
    figures.add("bad input: hand-written")
    figures.add(f"bad input: status {answer.code.name}")
    check_refused(answer, len(payload))


def test_an_idempotency_key_over_128_characters_is_refused(
    channel: grpc.Channel, fuzzer: tuple[str, str], figures: Figures
) -> None:
    request = Q.RunQueryRequest(query=_query(), idempotency_key="k" * 129)
    answer = send(channel, RUN_QUERY, request.SerializeToString(), fuzzer[1])
    figures.add("bad input: hand-written")
    assert (answer.code, answer.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_IDEMPOTENCY_KEY")


def test_a_reused_idempotency_key_is_refused_and_not_charged_again(
    server_a: Server, figures: Figures
) -> None:
    requester_id, token = server_a.new_analyst(1, "reuser")
    with Client(server_a.target, token=token, timeout=120) as client:
        first = client.query(count(DATASET).by("sex").epsilon(0.2), idempotency_key="one key")
        with pytest.raises(InvalidQueryError) as caught:
            client.query(count(DATASET).by("mode").epsilon(0.2), idempotency_key="one key")
    figures.add("bad input: hand-written")
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert server_a.spent_units(requester_id) == 200_000_000
    assert first.charged == first.release_cost


def test_an_oversized_message_is_refused_by_size_and_costs_nothing(
    server_a: Server, channel: grpc.Channel, fuzzer: tuple[str, str], figures: Figures
) -> None:
    query = _query(group_by=["x" * 1_000] * 1_500)
    payload = Q.RunQueryRequest(query=query).SerializeToString()
    assert len(payload) > MAX_MESSAGE_BYTES
    answer = send(channel, RUN_QUERY, payload, fuzzer[1])
    figures.add("bad input: oversized")
    assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert answer.reason == "MESSAGE_TOO_LARGE"  # the client never calls it a budget refusal
    assert server_a.spent_units(fuzzer[0]) == 0
    assert health_status(server_a.target) == SERVING


# -- garbage on the TCP port ------------------------------------------------------------

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GARBAGE = {
    "HTTP/1.1 request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "TLS client hello": bytes.fromhex("160301020001000100fc0303") + bytes(64),
    "preface and a garbage frame": HTTP2_PREFACE + b"\x00\x00\x05\xff\x00\x00\x00\x00\x01abcde",
    "preface and a frame claiming 16 MB": HTTP2_PREFACE + b"\xff\xff\xff\x04\x00\x00\x00\x00\x00",
    "preface and a bad HEADERS block": HTTP2_PREFACE
    + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # empty SETTINGS
    + b"\x00\x00\x08\x01\x05\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\xff\xff",
    "one megabyte of zeros": bytes(1024 * 1024),
    "nothing, then close": b"",
}


def _throw(port: int, payload: bytes) -> str:
    """Send `payload` on a fresh connection; "closed" if the server hung up within 5 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # all sent: a server waiting for more sees the end
            while sock.recv(65536):
                pass
        except TimeoutError:
            return "left open"
        except OSError:  # reset, broken pipe, not connected: the server hung up first
            return "closed"
    return "closed"


def test_garbage_on_the_port_is_dropped_and_the_server_keeps_serving(
    server_a: Server, figures: Figures
) -> None:
    port = int(server_a.target.rsplit(":", 1)[1])
    rng = random.Random(11)
    payloads = dict(GARBAGE)
    for i in range(scale(20, 300)):
        payloads[f"random {i}"] = rng.randbytes(rng.randint(1, 4096))
    outcomes = Counter()
    for payload in payloads.values():
        outcomes[_throw(port, payload)] += 1
        figures.add("bad input: garbage on the port")
    figures.set("bad input: garbage connections", dict(outcomes))
    assert health_status(server_a.target) == SERVING
    assert outcomes["closed"] == len(payloads)  # every one was hung up on, none hangs
