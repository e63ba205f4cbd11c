"""Releases stored before the columnar format are still answered, on both ledger backends.

A release is kept in the ledger as opaque bytes; these tests put one in the form the
service wrote before Arrow IPC (JSON with one list per cell) and ask the same question
again through the answerer: it is a free repeat whose frame, over either wire format, is
exactly the frame the release was first shown as.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from dpgate._convert import query_result
from dpgate_proto.v1 import query_pb2
from dpgate_server.answers import Answer
from dpgate_server.api.convert import answer_to_proto
from dpgate_server.canonical import canonical_json
from dpgate_server.queries import Aggregate, Query, Release, Spend, engine
from dpgate_server.queries.model import value_to_json
from dpgate_server.store.store import DatasetStore, DatasetVersion
from tests.unit.ledger.answering import DATASET, answerer_on, tiny_store
from tests.unit.queries.conftest import HUGE_LIMITS

SPEND = Spend.epsilon(Decimal("0.0000004"))
"""400 units: the ledger fixture grants each analyst 1,000."""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DatasetStore:
    return tiny_store(Path(tmp_path_factory.mktemp("columnar_store")))


@pytest.fixture
def version(store: DatasetStore) -> DatasetVersion:
    return store.current(DATASET)


def legacy_payload(release: Release) -> bytes:
    """`release` as `Release.to_bytes` wrote it before the columnar format (that code)."""
    body = {
        "query": release.query.to_dict(),
        "key": release.key,
        "cells": [
            [[value_to_json(k) for k in c.key], c.value, c.ci_low, c.ci_high] for c in release.cells
        ],
        "mechanism": release.mechanism.value,
        "noise_scale": release.noise_scale,
        "cost_units": release.cost_units,
        "bounding": release.bounding.value,
        "confidence_level": release.confidence_level,
        "half_width": release.half_width,
    }
    return canonical_json(body, ascii_only=True).encode("utf-8")


def _wire_frames(answer: Answer) -> tuple[object, object]:
    columnar = query_result(answer_to_proto(answer, query_pb2.CELL_FORMAT_ARROW_IPC))
    per_cell = query_result(answer_to_proto(answer, query_pb2.CELL_FORMAT_UNSPECIFIED))
    return columnar.frame, per_cell.frame


@pytest.mark.parametrize("group_by", [(), ("mode",), ("appointment_date", "hour", "practice_code")])
def test_a_release_stored_as_json_is_answered_as_a_free_repeat_with_its_frame(
    setup, store: DatasetStore, version: DatasetVersion, group_by: tuple[str, ...]
) -> None:
    answerer, executor = answerer_on(setup.ledger, store)
    query = Query(DATASET, Aggregate.count(), group_by=group_by, spend=SPEND)
    prepared = engine.prepare(version, query, HUGE_LIMITS)
    shown = engine.execute(version, prepared)
    stored = setup.charge(
        setup.alice, prepared.key, prepared.cost_units, payload=legacy_payload(shown)
    )
    assert not stored.release.payload.startswith(b"dpgate-release/")

    answer = answerer.answer(setup.bob, setup.request(setup.bob), query, None)

    assert (answer.repeat, answer.charged_units, executor.runs) == (True, 0, 0)
    assert answer.release_id == stored.release.release_id
    assert_frame_equal(answer.release.frame(), shown.frame(), check_exact=True)
    columnar, per_cell = _wire_frames(answer)
    assert_frame_equal(columnar, shown.frame(), check_exact=True)
    assert_frame_equal(per_cell, shown.frame(), check_exact=True)


def test_a_release_stored_as_json_gives_intervals_at_another_level(
    setup, store: DatasetStore, version: DatasetVersion
) -> None:
    answerer, _ = answerer_on(setup.ledger, store)
    query = Query(DATASET, Aggregate.count(), group_by=("mode",), spend=SPEND)
    prepared = engine.prepare(version, query, HUGE_LIMITS)
    shown = engine.execute(version, prepared)
    setup.charge(setup.alice, prepared.key, prepared.cost_units, payload=legacy_payload(shown))

    wider = answerer.answer(
        setup.alice,
        setup.request(setup.alice),
        dataclasses.replace(query, confidence_level=0.99),
        None,
    )

    frame = wider.release.frame()
    assert frame["value"].equals(shown.frame()["value"])
    assert wider.release.half_width > shown.half_width
    assert (frame["ci_high"] - frame["value"] == wider.release.half_width).all()
    columnar, per_cell = _wire_frames(wider)
    assert_frame_equal(columnar, per_cell, check_exact=True)


def test_a_fresh_release_is_stored_columnar_and_reads_back_identically(
    setup, store: DatasetStore, version: DatasetVersion
) -> None:
    answerer, _ = answerer_on(setup.ledger, store)
    query = Query(DATASET, Aggregate.sum("duration_minutes"), group_by=("practice_code",),
                  spend=SPEND)  # fmt: skip
    fresh = answerer.answer(setup.alice, setup.request(setup.alice), query, None)
    stored = setup.ledger.get_release(fresh.release_id)
    assert stored.payload.startswith(b"dpgate-release/")
    repeat = answerer.answer(setup.bob, setup.request(setup.bob), query, None)
    assert repeat.repeat
    assert_frame_equal(repeat.release.frame(), fresh.release.frame(), check_exact=True)
    assert repeat.release.frame().height == 60
