"""Canonical form and release key: same question, same key; different question, new key."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dpgate_server.queries import (
    Aggregate,
    Filter,
    Query,
    Release,
    ReleaseFormatError,
    Spend,
    prepare,
    run,
)
from tests.unit.queries.conftest import HUGE_LIMITS, TinyVersions

BASE = Query("tiny", Aggregate.count(), spend=Spend.epsilon(0.5))


def _key(tiny: TinyVersions, **changes: object) -> str:
    query = dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]
    return prepare(tiny.verified, query).key


def test_filter_order_does_not_change_the_key(tiny: TinyVersions) -> None:
    a = Filter("mode", "=", ("Telephone",))
    b = Filter("hour", ">=", (9,))
    assert _key(tiny, filters=(a, b)) == _key(tiny, filters=(b, a))


def test_in_list_order_and_duplicates_do_not_change_the_key(tiny: TinyVersions) -> None:
    first = Filter("mode", "in", ("Telephone", "Unknown"))
    second = Filter("mode", "in", ("Unknown", "Telephone", "Unknown"))
    assert _key(tiny, filters=(first,)) == _key(tiny, filters=(second,))


def test_equality_and_one_value_in_share_a_key(tiny: TinyVersions) -> None:
    assert _key(tiny, filters=(Filter("mode", "=", ("Telephone",)),)) == _key(
        tiny, filters=(Filter("mode", "in", ("Telephone",)),)
    )


def test_group_by_order_does_not_change_the_key(tiny: TinyVersions) -> None:
    assert _key(tiny, group_by=("mode", "hour")) == _key(tiny, group_by=("hour", "mode"))


def test_confidence_level_is_not_part_of_the_key(tiny: TinyVersions) -> None:
    assert _key(tiny, confidence_level=0.9) == _key(tiny, confidence_level=0.99)


def test_different_spend_gives_a_different_key(tiny: TinyVersions) -> None:
    assert _key(tiny) != _key(tiny, spend=Spend.epsilon(0.25))


def test_different_filter_value_gives_a_different_key(tiny: TinyVersions) -> None:
    assert _key(tiny, filters=(Filter("hour", ">=", (9,)),)) != _key(
        tiny, filters=(Filter("hour", ">=", (10,)),)
    )


def test_smaller_bound_gives_a_different_key(tiny: TinyVersions) -> None:
    assert _key(tiny) != _key(tiny, max_contributions=2)


def test_dataset_version_is_part_of_the_key(tiny: TinyVersions) -> None:
    prepared = prepare(tiny.verified, BASE)
    other = dataclasses.replace(prepared.query, dataset_version="v999999")
    assert prepared.query.dataset_version == tiny.verified.version
    assert other.key() != prepared.key


def test_target_accuracy_resolves_to_the_key_of_its_spend(tiny: TinyVersions) -> None:
    by_target = prepare(tiny.verified, dataclasses.replace(BASE, spend=None, target_half_width=30))
    spend = Spend.epsilon(by_target.query.spend_units / 10**9)
    assert prepare(tiny.verified, dataclasses.replace(BASE, spend=spend)).key == by_target.key


def test_key_is_sha256_of_sorted_compact_json(tiny: TinyVersions) -> None:
    query = prepare(tiny.verified, BASE).query
    text = query.to_json()
    assert json.loads(text)["dataset_version"] == tiny.verified.version
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert len(query.key()) == 64


def test_release_round_trips_through_bytes(tiny: TinyVersions) -> None:
    release = run(
        tiny.verified,
        dataclasses.replace(BASE, group_by=("appointment_date",), spend=Spend.epsilon(3.0)),
        HUGE_LIMITS,
    )
    assert Release.from_bytes(release.to_bytes()) == release


def test_release_with_a_tampered_key_is_refused(tiny: TinyVersions) -> None:
    release = run(tiny.verified, BASE)
    forged = dataclasses.replace(release, key="0" * 64)
    with pytest.raises(ReleaseFormatError, match="does not match"):
        Release.from_bytes(forged.to_bytes())


def test_garbage_release_bytes_are_refused() -> None:
    with pytest.raises(ReleaseFormatError):
        Release.from_bytes(b'{"query": 3}')


LEGACY_PAYLOAD = (
    b'{"bounding":"publish_time","cells":[[[{"date":"2025-01-01"},9,"Telephone"],12,-3,27],'
    b'[[{"date":"2025-01-02"},10,"Unknown"],-4,-19,11]],"confidence_level":0.95,'
    b'"cost_units":500000000,"half_width":15,'
    b'"key":"04a00847eee4db1a7e002f876fab67a8f340a9f7049b792b8514a274a507e50a",'
    b'"mechanism":"discrete_laplace","noise_scale":8.0,"query":{"accounting":"pure_dp",'
    b'"aggregate":"COUNT","column":null,"dataset_id":"tiny","dataset_version":"v000001",'
    b'"filters":[{"column":"status","op":"in","values":["DNA"]}],"format":1,'
    b'"group_by":["appointment_date","hour","mode"],"max_contributions":4,'
    b'"spend_units":500000000}}'
)
"""A release as the service stored it before the columnar format (written by that code)."""


def test_release_stored_before_the_columnar_format_reads_as_the_frame_it_was_shown_as() -> None:
    release = Release.from_bytes(LEGACY_PAYLOAD)
    expected = pl.DataFrame(
        {
            "appointment_date": [dt.date(2025, 1, 1), dt.date(2025, 1, 2)],
            "hour": [9, 10],
            "mode": ["Telephone", "Unknown"],
            "value": [12, -4],
            "ci_low": [-3.0, -19.0],
            "ci_high": [27.0, 11.0],
        }
    )
    assert_frame_equal(release.frame(), expected, check_exact=True)
    assert release.frame().schema == expected.schema
    assert (release.cell_count, release.half_width, release.noise_scale) == (2, 15, 8.0)
    assert release.group_by == ("appointment_date", "hour", "mode")
    assert Release.from_bytes(release.to_bytes()) == release


def test_cells_keep_the_key_dtypes_clients_have_always_seen(tiny: TinyVersions) -> None:
    query = dataclasses.replace(BASE, group_by=("appointment_date", "hour", "mode"))
    frame = run(tiny.verified, query, HUGE_LIMITS).frame()
    # hour is Int32 in the files and mode a label: the frame shows Int64 and String.
    assert frame.schema == pl.Schema(
        {
            "appointment_date": pl.Date,
            "hour": pl.Int64,
            "mode": pl.String,
            "value": pl.Int64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
        }
    )
    assert frame.height == 14 * 24 * 5
    assert frame.select("appointment_date", "hour", "mode").is_unique().all()
    assert frame.equals(frame.sort("appointment_date", "hour", "mode"))


def test_columnar_header_parses_without_reading_the_cells(tiny: TinyVersions) -> None:
    release = run(tiny.verified, dataclasses.replace(BASE, group_by=("mode",)), HUGE_LIMITS)
    payload = release.to_bytes()
    damaged = Release.from_bytes(payload[: len(payload) - 40])  # cells cut short
    assert damaged.query == release.query
    with pytest.raises(ReleaseFormatError, match="Arrow IPC"):
        damaged.frame()
