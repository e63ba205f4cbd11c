"""The administrator page counts each refusal under the reason it was audited with."""

from __future__ import annotations

from dpgate_server.ledger.model import Outcome
from dpgate_server.web.admin_data import _reason


def test_a_refused_message_size_is_not_counted_as_a_budget_refusal() -> None:
    assert _reason(Outcome.REFUSED, "MESSAGE_TOO_LARGE") == ("MESSAGE_TOO_LARGE", 1)


def test_the_ledgers_budget_refusals_are_counted_as_budget_refusals() -> None:
    detail = "requested epsilon 1; epsilon 0.5 remains"
    assert _reason(Outcome.REFUSED, detail) == ("BUDGET_EXHAUSTED", 1)
