"""The current version of each dataset, kept in the ledger (schema 4), on both backends.

Replicas share the ledger, so a version published from one is current for all at once.
A ledger an older dpgate left at schema 3 migrates with its data and starts with no
pointer; the store's CURRENT files are adopted into it when first read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from dpgate_server.ledger import RequestInfo, postgres, sqlite
from dpgate_server.store.store import DatasetStore
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import DatasetNotFoundError
from tests.unit.queries.conftest import tiny_metadata

STORAGE_MODULES = {"sqlite": sqlite, "postgresql": postgres}
OPERATOR = RequestInfo("setup", "Setup")
DATASET = "tiny"


def _publish(store: DatasetStore) -> str:
    builder = store.begin_version(tiny_metadata(DATASET))
    pl.DataFrame({"patient_key": [1, 2]}).write_parquet(builder.appointments_path("2025-01"))
    return store.publish(builder, None, {}).version


def test_a_ledger_at_schema_3_with_data_migrates_and_adopts_the_store_pointer(
    ledger_store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = STORAGE_MODULES[ledger_store.backend]
    if ledger_store.backend == "postgresql":  # the test databases come migrated: start blank
        ledger_store.execute("DROP SCHEMA public CASCADE")
        ledger_store.execute("CREATE SCHEMA public")
    monkeypatch.setattr(module, "MIGRATIONS", module.MIGRATIONS[:3])
    with ledger_store.open() as ledger:  # schema 3, as the release before this one left it
        ledger.admin.create_dataset(
            DATASET, accounting=Accounting.PURE_DP, cap_units=1_000, reason="t", request=OPERATOR
        )
        ledger.admin.create_requester(
            "r1", name="R", organisation="Org", agreement="DSA-1", request=OPERATOR
        )
        ledger.admin.grant_allocation(
            "r1", DATASET, 100, request=OPERATOR, purpose="testing", agreement="DSA-TEST"
        )
        head = ledger.head()
    monkeypatch.undo()
    file_only = DatasetStore(tmp_path / "store")  # published as the older dpgate did
    assert _publish(file_only) == "v000001"

    with ledger_store.open() as ledger:
        versions = ledger_store.fetch("SELECT version FROM schema_version ORDER BY 1")
        assert [v for (v,) in versions] == list(range(1, len(module.MIGRATIONS) + 1))
        assert ledger.get_budget("r1", DATASET).granted_units == 100  # the data is kept
        assert ledger.verify(expected_head=head).ok
        assert ledger.current_versions() == {}

        shared = DatasetStore(tmp_path / "store", pointer=ledger)
        assert shared.current_name(DATASET) == "v000001"  # adopted from CURRENT
        assert ledger.current_versions() == {DATASET: "v000001"}
        assert shared.dataset_ids() == [DATASET]


def test_publishing_moves_the_ledger_pointer_which_never_moves_back(
    ledger_store: Any, tmp_path: Path
) -> None:
    with ledger_store.open() as ledger, ledger_store.open() as replica:
        store = DatasetStore(tmp_path / "store", pointer=ledger)
        with pytest.raises(DatasetNotFoundError):
            store.current_name(DATASET)
        assert _publish(store) == "v000001"
        assert _publish(store) == "v000002"
        other = DatasetStore(tmp_path / "store", pointer=replica)  # another server
        assert other.current_name(DATASET) == "v000002"
        assert (tmp_path / "store" / DATASET / "CURRENT").read_text() == "v000002"  # the copy

        assert ledger.advance_current_version(DATASET, "v000001") == "v000002"  # a late racer
        assert replica.current_version(DATASET) == "v000002"
        # The ledger is what is current: a stale CURRENT copy does not move it back.
        (tmp_path / "store" / DATASET / "CURRENT").write_text("v000001")
        assert other.current_name(DATASET) == "v000002"
        assert other.current(DATASET).version == "v000002"


def test_a_failed_pointer_move_leaves_the_previous_version_current(
    ledger_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ledger_store.open() as ledger:
        store = DatasetStore(tmp_path / "store", pointer=ledger)
        _publish(store)

        def lost(dataset_id: str, version: str) -> str:
            raise ConnectionError("the ledger went away")

        monkeypatch.setattr(ledger, "advance_current_version", lost)
        with pytest.raises(ConnectionError):
            _publish(store)
        monkeypatch.undo()
        assert store.current_name(DATASET) == "v000001"
        assert store.versions(DATASET) == ["v000001"]  # the unpublished one taken away
