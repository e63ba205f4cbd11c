"""Canonical form and release key: same question, same key; different question, new key."""

from __future__ import annotations

import dataclasses
import json

import pytest

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
