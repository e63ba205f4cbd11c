"""Every validation rule: its reason code, its field, and a message saying what to change."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpgate_server.queries import (
    Aggregate,
    Filter,
    InvalidQuery,
    Query,
    QueryLimits,
    Spend,
    prepare,
)
from dpgate_server.queries.validation import validate
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import DatasetNotFoundError, ErrorReason
from tests.unit.queries.conftest import DAYS, MODES, PRACTICES, TinyVersions, tiny_metadata

LIMITS = QueryLimits(max_cells=1_000, max_filters=3, max_in_values=5, max_epsilon=Decimal(2))
BASE = Query("tiny", Aggregate.count(), spend=Spend.epsilon(1.0))


def _q(**changes: object) -> Query:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


def _f(column: str, op: str, *values: object) -> tuple[Filter, ...]:
    return (Filter(column, op, values),)


CASES: list[tuple[str, Query, ErrorReason, str, tuple[str, ...]]] = [
    ("unknown group-by column", _q(group_by=("practise_code",)), ErrorReason.UNKNOWN_COLUMN,
     "group_by[0]", ("no column 'practise_code'", "columns are: patient_key, practice_code")),
    ("unknown filter column", _q(filters=_f("colour", "=", "red")), ErrorReason.UNKNOWN_COLUMN,
     "filters[0].column", ("no column 'colour'", "columns are:")),
    ("unknown sum column", _q(aggregate=Aggregate.sum("minutes")), ErrorReason.UNKNOWN_COLUMN,
     "aggregate.column", ("no column 'minutes'", "columns are:")),
    ("group by the privacy unit", _q(group_by=("patient_key",)), ErrorReason.PRIVATE_COLUMN,
     "group_by[0]", ("'patient_key' is private", "group by one of: practice_code")),
    ("filter on the privacy unit", _q(filters=_f("patient_key", "=", 11)),
     ErrorReason.PRIVATE_COLUMN, "filters[0].column",
     ("'patient_key' is private", "filter on one of: practice_code")),
    ("group by a measure", _q(group_by=("duration_minutes",)), ErrorReason.NOT_GROUPABLE,
     "group_by[0]", ("no public key set", "group by one of: practice_code", "filter on it")),
    ("filter on a non-filterable column", _q(filters=_f("lead_time_days", "<", 3)),
     ErrorReason.NOT_FILTERABLE, "filters[0].column",
     ("'lead_time_days' cannot be filtered on", "filter on one of: practice_code")),
    ("filter on a column without a public set", _q(filters=_f("notes_band", "=", "a")),
     ErrorReason.NOT_FILTERABLE, "filters[0].column", ("'notes_band' cannot be filtered on",)),
    ("same column twice", _q(group_by=("mode", "mode")), ErrorReason.DUPLICATE_COLUMN,
     "group_by[1]", ("'mode' appears twice", "list each column once")),
    ("unknown operator", _q(filters=_f("mode", "like", "Tele%")), ErrorReason.BAD_OPERATOR,
     "filters[0].op", ("unknown operator 'like'", "use one of: =, !=, <, <=, >, >=, in")),
    ("ordering a category", _q(filters=_f("mode", "<", "Telephone")), ErrorReason.BAD_OPERATOR,
     "filters[0].op", ("have no order", "use =, != or in")),
    ("text for a number", _q(filters=_f("hour", "=", "9")), ErrorReason.BAD_VALUE,
     "filters[0].values[0]", ("'9' is not a whole number", "'hour' needs a whole number")),
    ("boolean for a number", _q(filters=_f("hour", "=", True)), ErrorReason.BAD_VALUE,
     "filters[0].values[0]", ("True is not a whole number",)),
    ("number for a category", _q(filters=_f("mode", "=", 3)), ErrorReason.BAD_VALUE,
     "filters[0].values[0]", ("3 is not a text label",)),
    ("category outside the public set", _q(filters=_f("mode", "=", "Fax")),
     ErrorReason.BAD_VALUE, "filters[0].values[0]",
     ("'Fax' is not a public value of 'mode'", "use one of: 'Face-to-Face'")),
    ("practice outside the public set", _q(filters=_f("practice_code", "in", "P000", "X1")),
     ErrorReason.BAD_VALUE, "filters[0].values[1]",
     ("'X1' is not a public value", "... (60 in all)")),
    ("number outside the bounds", _q(filters=_f("duration_minutes", ">", 61)),
     ErrorReason.BAD_VALUE, "filters[0].values[0]",
     ("61 is outside the public range of 'duration_minutes', 0 to 60",
      "use a value in that range")),
    ("hour outside its values", _q(filters=_f("hour", "<", 24)), ErrorReason.BAD_VALUE,
     "filters[0].values[0]", ("24 is outside the public range of 'hour', 0 to 23",)),
    ("date outside the period", _q(filters=_f("appointment_date", ">=", "2024-12-31")),
     ErrorReason.BAD_VALUE, "filters[0].values[0]",
     ("outside the public range of 'appointment_date'", "'date': '2025-01-01'")),
    ("date in another format", _q(filters=_f("appointment_date", "=", "01/02/2025")),
     ErrorReason.BAD_VALUE, "filters[0].values[0]", ("is not a date written YYYY-MM-DD",)),
    ("datetime for a date", _q(filters=_f("appointment_date", "=", dt.datetime(2025, 1, 2))),
     ErrorReason.BAD_VALUE, "filters[0].values[0]", ("is not a date written YYYY-MM-DD",)),
    ("two values for =", _q(filters=_f("mode", "=", "Telephone", "Unknown")),
     ErrorReason.BAD_VALUE, "filters[0].values", ("takes exactly one value, got 2", "use `in`")),
    ("empty in", _q(filters=_f("mode", "in")), ErrorReason.BAD_VALUE, "filters[0].values",
     ("needs at least one value",)),
    ("values not a list", _q(filters=(Filter("mode", "=", "Telephone"),)),  # type: ignore[arg-type]
     ErrorReason.BAD_VALUE, "filters[0].values", ("must be a list",)),
    ("too many in values", _q(filters=_f("practice_code", "in", *PRACTICES[:6])),
     ErrorReason.TOO_MANY_VALUES, "filters[0].values",
     ("6 values in `in`, at most 5", "group by the column instead")),
    ("too many filters", _q(filters=_f("hour", ">", 1) * 4), ErrorReason.TOO_MANY_FILTERS,
     "filters", ("4 filters, at most 3", "combine equalities")),
    ("too many cells", _q(group_by=("practice_code", "hour")), ErrorReason.TOO_MANY_CELLS,
     "group_by", ("gives 1,440 cells, at most 1,000", "group by fewer or coarser columns")),
    ("filters exclude every key", _q(group_by=("mode",), filters=(
        Filter("mode", "=", ("Telephone",)), Filter("mode", "=", ("Unknown",)))),
     ErrorReason.BAD_VALUE, "filters", ("exclude every public key of mode", "loosen the filters")),
    ("unknown aggregate", _q(aggregate=Aggregate("AVG")), ErrorReason.BAD_AGGREGATE,
     "aggregate.function", ("unknown aggregate 'AVG'", "use COUNT or SUM")),
    ("count of a column", _q(aggregate=Aggregate("COUNT", "hour")), ErrorReason.BAD_AGGREGATE,
     "aggregate.column", ("takes no column", "or use SUM(column)")),
    ("sum of a category", _q(aggregate=Aggregate.sum("mode")), ErrorReason.NOT_SUMMABLE,
     "aggregate.column", ("'mode' cannot be summed",
                          "summable columns are: duration_minutes, lead_time_days")),
    ("sum without a column", _q(aggregate=Aggregate("SUM")), ErrorReason.NOT_SUMMABLE,
     "aggregate.column", ("SUM needs a column", "duration_minutes")),
    ("no spend", _q(spend=None), ErrorReason.BAD_SPEND, "epsilon",
     ("give either epsilon or a target accuracy",)),
    ("spend and target", _q(target_half_width=10.0), ErrorReason.BAD_SPEND, "epsilon",
     ("exactly one",)),
    ("unknown spend measure", _q(spend=Spend("delta", 1.0)), ErrorReason.BAD_SPEND,
     "spend.measure", ("unknown spend measure 'delta'", "takes epsilon")),
    ("rho on a pure-DP dataset", _q(spend=Spend.rho(0.5)), ErrorReason.WRONG_ACCOUNTING, "rho",
     ("accounted in epsilon (pure_dp)", "give epsilon instead of rho")),
    ("zero epsilon", _q(spend=Spend.epsilon(0.0)), ErrorReason.BAD_EPSILON, "epsilon",
     ("finite number above 0, got 0;", "such as 0.1")),
    ("negative epsilon", _q(spend=Spend.epsilon(-1.0)), ErrorReason.BAD_EPSILON, "epsilon",
     ("above 0, got -1;",)),
    ("NaN epsilon", _q(spend=Spend.epsilon(math.nan)), ErrorReason.BAD_EPSILON, "epsilon",
     ("above 0, got nan",)),
    ("infinite epsilon", _q(spend=Spend.epsilon(math.inf)), ErrorReason.BAD_EPSILON, "epsilon",
     ("above 0, got inf",)),
    ("boolean epsilon", _q(spend=Spend.epsilon(True)), ErrorReason.BAD_EPSILON, "epsilon",
     ("got True",)),
    ("epsilon above the maximum", _q(spend=Spend.epsilon(2.5)), ErrorReason.BAD_EPSILON,
     "epsilon", ("above the per-query maximum 2", "ask for at most 2")),
    ("epsilon below the smallest amount", _q(spend=Spend.epsilon(1e-10)), ErrorReason.BAD_EPSILON,
     "epsilon", ("below the smallest amount, 0.000000001",)),
    ("negative target", _q(spend=None, target_half_width=-3.0), ErrorReason.BAD_ACCURACY,
     "target_half_width", ("finite number above 0, got -3.0", "e.g. 50")),
    ("NaN target", _q(spend=None, target_half_width=math.nan), ErrorReason.BAD_ACCURACY,
     "target_half_width", ("got nan",)),
    ("unreachable target", _q(spend=None, target_half_width=0.5), ErrorReason.UNREACHABLE_ACCURACY,
     "target_half_width", ("needs more than the per-query maximum epsilon 2",
                           "the best reachable is +/-", "Accept a wider interval")),
    ("confidence of 1", _q(confidence_level=1.0), ErrorReason.BAD_CONFIDENCE, "confidence_level",
     ("strictly between 0 and 1, got 1.0", "e.g. 0.95")),
    ("confidence of 0", _q(confidence_level=0.0), ErrorReason.BAD_CONFIDENCE, "confidence_level",
     ("got 0.0",)),
    ("confidence as a percentage", _q(confidence_level=95), ErrorReason.BAD_CONFIDENCE,
     "confidence_level", ("got 95",)),
    ("NaN confidence", _q(confidence_level=math.nan), ErrorReason.BAD_CONFIDENCE,
     "confidence_level", ("got nan",)),
    ("zero contributions", _q(max_contributions=0), ErrorReason.BAD_CONTRIBUTIONS,
     "max_contributions", ("from 1 to the dataset's 4, got 0", "leave it unset")),
    ("contributions above the dataset's", _q(max_contributions=5), ErrorReason.BAD_CONTRIBUTIONS,
     "max_contributions", ("got 5",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "reason", "field", "phrases"),
    [pytest.param(q, r, f, p, id=name) for name, q, r, f, p in CASES],
)
def test_invalid_query_is_refused_with_reason_field_and_advice(
    tiny: TinyVersions, query: Query, reason: ErrorReason, field: str, phrases: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidQuery) as caught:
        prepare(tiny.verified, query, LIMITS)
    assert (caught.value.reason, caught.value.field) == (reason, field)
    for phrase in phrases:
        assert phrase in caught.value.message


def test_a_query_on_another_dataset_is_dataset_not_found(tiny: TinyVersions) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        prepare(tiny.verified, _q(dataset_id="nope"), LIMITS)
    assert caught.value.reason is ErrorReason.DATASET_NOT_FOUND
    assert caught.value.metadata == {"dataset_id": "nope"}
    assert "no dataset 'nope'" in caught.value.message


def test_rho_outside_range_on_a_zcdp_dataset_is_bad_rho() -> None:
    meta = tiny_metadata("z", Accounting.ZCDP)
    with pytest.raises(InvalidQuery) as caught:
        validate(meta, Query("z", Aggregate.count(), spend=Spend.rho(0.0)))
    assert caught.value.reason is ErrorReason.BAD_RHO
    assert "rho must be a finite number above 0" in caught.value.message


def test_epsilon_on_a_zcdp_dataset_is_wrong_accounting() -> None:
    meta = tiny_metadata("z", Accounting.ZCDP)
    with pytest.raises(InvalidQuery) as caught:
        validate(meta, Query("z", Aggregate.count(), spend=Spend.epsilon(1.0)))
    assert caught.value.reason is ErrorReason.WRONG_ACCOUNTING
    assert "give rho instead of epsilon" in caught.value.message


def test_valid_query_passes_with_spend_in_exact_units() -> None:
    checked = validate(tiny_metadata("tiny"), _q(spend=Spend.epsilon(0.1)))
    assert checked.spend_units == 100_000_000


def test_decimal_spend_is_floored_to_units_never_rounded_up() -> None:
    checked = validate(tiny_metadata("tiny"), _q(spend=Spend.epsilon(Decimal("0.1234567899"))))
    assert checked.spend_units == 123_456_789


def test_date_values_accept_iso_text_and_dates_alike() -> None:
    meta = tiny_metadata("tiny")
    as_text = validate(meta, _q(filters=_f("appointment_date", ">=", "2025-01-03")))
    as_date = validate(meta, _q(filters=_f("appointment_date", ">=", dt.date(2025, 1, 3))))
    assert as_text.filters == as_date.filters


# Hypothesis: random queries are either accepted or refused with InvalidQuery, nothing else.

_COLUMNS = st.sampled_from(
    ["practice_code", "icb_code", "appointment_date", "week", "hour", "duration_minutes",
     "lead_time_days", "mode", "status", "notes_band", "patient_key", "nope", ""]
)  # fmt: skip
_VALUES = st.one_of(
    st.sampled_from([*MODES, *PRACTICES[:3], "2025-W02", "2025-01-05", "x"]),
    st.sampled_from(DAYS),
    st.integers(-5, 100),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.datetimes(min_value=dt.datetime(2024, 12, 1), max_value=dt.datetime(2025, 2, 1)),
)
_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10, 10**12),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
_VALID_COLUMN_VALUES = st.one_of(
    st.tuples(st.just("mode"), st.lists(st.sampled_from(MODES), min_size=1, max_size=3)),
    st.tuples(st.just("hour"), st.lists(st.integers(0, 23), min_size=1, max_size=3)),
    st.tuples(st.just("practice_code"), st.lists(st.sampled_from(PRACTICES), min_size=1)),
    st.tuples(st.just("appointment_date"), st.lists(st.sampled_from(DAYS), min_size=1)),
)
_PLAUSIBLE_FILTER = _VALID_COLUMN_VALUES.flatmap(
    lambda cv: st.builds(
        Filter,
        column=st.just(cv[0]),
        op=st.sampled_from(["=", "!=", "<", ">=", "in"]),
        values=st.just(tuple(cv[1])),
    )
)
_JUNK_FILTER = st.builds(
    Filter,
    column=_COLUMNS,
    op=st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "in", "like", ""]),
    values=st.lists(_VALUES, max_size=4).map(tuple),
)


def _mostly(valid: st.SearchStrategy[object], junk: st.SearchStrategy[object]) -> object:
    """Usually valid, so accepted queries are common; junk about one time in four."""
    return st.integers(0, 3).flatmap(lambda i: junk if i == 3 else valid)


_QUERIES = st.builds(
    Query,
    dataset_id=_mostly(st.just("tiny"), st.sampled_from(["other", ""])),
    aggregate=_mostly(
        st.sampled_from([Aggregate.count(), Aggregate.sum("duration_minutes")]),
        st.builds(
            Aggregate,
            function=st.sampled_from(["COUNT", "SUM", "AVG", "count"]),
            column=st.one_of(st.none(), _COLUMNS),
        ),
    ),
    filters=st.lists(_mostly(_PLAUSIBLE_FILTER, _JUNK_FILTER), max_size=4).map(tuple),
    group_by=_mostly(
        st.lists(st.sampled_from(["mode", "status", "icb_code", "week", "hour"]), max_size=2,
                 unique=True),
        st.lists(_COLUMNS, max_size=3),
    ).map(tuple),
    spend=_mostly(
        st.builds(Spend, measure=st.just("epsilon"), value=st.floats(1e-6, 2.0)),
        st.one_of(st.none(), st.builds(Spend, measure=st.sampled_from(["epsilon", "rho", "x"]),
                                       value=_NUMBERS)),
    ),
    target_half_width=_mostly(st.none(), st.one_of(st.floats(0.5, 1e4), _NUMBERS)),
    confidence_level=_mostly(st.floats(0.01, 0.999), _NUMBERS),
    max_contributions=_mostly(st.one_of(st.none(), st.integers(1, 4)),
                              st.one_of(st.integers(-2, 8), st.booleans())),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=_QUERIES)
def test_random_queries_are_accepted_or_refused_with_invalid_query(
    tiny: TinyVersions, query: Query
) -> None:
    refusal: InvalidQuery | DatasetNotFoundError | None = None
    try:
        prepared = prepare(tiny.verified, query, LIMITS)
    except (InvalidQuery, DatasetNotFoundError) as caught:
        refusal = caught
    if refusal is not None:
        assert refusal.reason in ErrorReason
        assert refusal.message
        return
    assert prepared.cost_units <= LIMITS.max_spend_units(Accounting.PURE_DP)
    assert 1 <= prepared.cells <= LIMITS.max_cells
