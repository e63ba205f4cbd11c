"""Idempotency keys keep what the first answer said (ledger schema 3), on both backends.

A ledger an older dpgate left at schema 2 migrates with its keys: those recorded then
kept no answer, so a retry of one is told what it was told before (a free repeat), while
keys recorded after the migration replay their first answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from dpgate_server.ledger import RequestInfo, postgres, sqlite
from dpgate_server.vocabulary.accounting import Accounting

STORAGE_MODULES = {"sqlite": sqlite, "postgresql": postgres}
OPERATOR = RequestInfo("setup", "Setup")
AT = "2025-01-06T09:00:00.000000Z"


def _debit(ledger: Any, key: str, idempotency_key: str, cost: int) -> Any:
    return ledger.debit(
        "r1",
        "d",
        key,
        idempotency_key=idempotency_key,
        cost_units=cost,
        payload=key.encode(),
        request=RequestInfo(f"req-{idempotency_key}", "RunQuery", key),
    )


def test_a_ledger_at_schema_2_with_keys_migrates_and_keeps_replaying_them(
    ledger_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = STORAGE_MODULES[ledger_store.backend]
    if ledger_store.backend == "postgresql":  # the test databases come migrated: start blank
        ledger_store.execute("DROP SCHEMA public CASCADE")
        ledger_store.execute("CREATE SCHEMA public")
    monkeypatch.setattr(module, "MIGRATIONS", module.MIGRATIONS[:2])
    with ledger_store.open() as ledger:  # schema 2, as the release before this one left it
        ledger.admin.create_dataset(
            "d", accounting=Accounting.PURE_DP, cap_units=1_000, reason="t", request=OPERATOR
        )
        ledger.admin.create_requester(
            "r1", name="R", organisation="Org", agreement="DSA-1", request=OPERATOR
        )
        ledger.admin.grant_allocation(
            "r1", "d", 100, request=OPERATOR, purpose="testing", agreement="DSA-TEST"
        )
    monkeypatch.undo()
    # A charged release and its key, written as schema 2 wrote them (no answer kept).
    ledger_store.execute(
        "INSERT INTO releases (release_id, release_key, dataset_id, requester_id, cost_units,"
        " payload, created_at, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        "rel_1", "key-1", "d", "r1", 30, b"key-1", AT, "req-1",
    )  # fmt: skip
    ledger_store.execute("UPDATE allocations SET spent_units = 30")
    ledger_store.execute("UPDATE datasets SET spent_units = 30")
    ledger_store.execute(
        "INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?)", "r1", "old", "key-1", "rel_1", AT
    )

    with ledger_store.open() as ledger:
        versions = ledger_store.fetch("SELECT version FROM schema_version ORDER BY 1")
        assert [v for (v,) in versions] == list(range(1, len(module.MIGRATIONS) + 1))
        old = _debit(ledger, "key-1", "old", 30)
        assert (old.release.release_id, old.release.payload) == ("rel_1", b"key-1")
        assert (old.charged_units, old.remaining_units, old.repeat) == (0, 70, True)

        first = _debit(ledger, "key-2", "new", 20)
        again = _debit(ledger, "key-2", "new", 20)
        assert again == first
        assert (again.charged_units, again.remaining_units, again.repeat) == (20, 50, False)
        assert ledger.get_budget("r1", "d").spent_units == 50
        assert ledger.reconcile().ok
        assert ledger.verify().ok
