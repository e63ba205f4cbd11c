"""First start of the embedded demo: requesters, one token per role, a cap and a grant.

Runs only when the demo is enabled and the ledger has no requester yet, so a real
deployment (demo disabled) never gets accounts it did not ask for. Tokens are returned
once, to be printed once; the ledger keeps only their hashes, as for any token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo, Role
from dpgate_server.spend import to_units_floor

DEMO_CAP = Decimal(50)
"""The demo dataset's global cap (epsilon or rho) across all requesters."""
DEMO_ALLOCATION = Decimal(10)
"""The demo analyst's allocation."""
DEMO_ALSO_CAP = Decimal(5)
"""The cap of each further demo dataset (the zCDP twin: rho)."""
DEMO_ALSO_ALLOCATION = Decimal(1)
"""The demo analyst's allocation on each further demo dataset (rho 1: twenty practice x week
counts at rho 0.05, each cell +/-59 at 95% with the twin's per-period bounds, where the
total bound alone would give +/-149)."""
_REQUEST = RequestInfo(request_id="demo-bootstrap", rpc="demo-bootstrap")


@dataclass(frozen=True, slots=True)
class DemoAccounts:
    """The demo's bearer tokens by role (shown once) and the analyst's allocation."""

    tokens: dict[str, str]
    dataset_id: str
    allocation: Decimal


def bootstrap_demo(
    ledger: Ledger, dataset_id: str, practice_code: str, also: Sequence[str] = ()
) -> DemoAccounts | None:
    """Create the demo accounts if the ledger has no requester; None if it already has.

    `also`: further demo datasets (the zCDP twin) given DEMO_ALSO_CAP and the analyst
    DEMO_ALSO_ALLOCATION on each."""
    admin = ledger.admin
    if admin.list_requesters():
        return None
    admin.set_dataset_cap(
        dataset_id, to_units_floor(DEMO_CAP), reason="demo: first start", request=_REQUEST
    )
    for other in also:
        admin.set_dataset_cap(
            other, to_units_floor(DEMO_ALSO_CAP), reason="demo: first start", request=_REQUEST
        )
    tokens = {}
    for role in Role:
        requester_id = f"demo-{role.value}"
        admin.create_requester(
            requester_id,
            name=f"Demo {role.value}",
            organisation="dpgate demo",
            agreement="demo only: synthetic data",
            request=_REQUEST,
        )
        codes = (practice_code,) if role is Role.PROVIDER else ()
        issued = admin.issue_token(requester_id, role, request=_REQUEST, practice_codes=codes)
        tokens[role.value] = issued.token
    admin.grant_allocation(
        "demo-analyst",
        dataset_id,
        to_units_floor(DEMO_ALLOCATION),
        request=_REQUEST,
        purpose="trying dpgate out on synthetic data",
        agreement="demo (no agreement needed: synthetic data)",
    )
    for other in also:
        admin.grant_allocation(
            "demo-analyst",
            other,
            to_units_floor(DEMO_ALSO_ALLOCATION),
            request=_REQUEST,
            purpose="trying per-period bounds under zCDP on synthetic data",
            agreement="demo (no agreement needed: synthetic data)",
        )
    return DemoAccounts(tokens=tokens, dataset_id=dataset_id, allocation=DEMO_ALLOCATION)
