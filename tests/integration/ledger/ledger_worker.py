"""A separate process that spends from a ledger (run as a script by the tests).

LOCATION is an SQLite file's path or a postgresql:// URL.

Modes:
  race LOCATION START_AT SEED   debit random costs until refused with nothing left; print one
                            JSON line per success and per refusal, exit 0 (1 on any
                            other error).
  crash LOCATION SEED       print "ready", then debit (and audit, and top up) forever,
                            printing each release id after its debit returned; the test
                            SIGKILLs it.

Every spend goes to requester "spender" on dataset "d".
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid

from dpgate_server.ledger import BudgetExhausted, Ledger, Outcome, RequestInfo

REQUESTER = "spender"
DATASET = "d"


def _debit(ledger: Ledger, cost: int) -> str:
    key = uuid.uuid4().hex
    result = ledger.debit(
        REQUESTER,
        DATASET,
        key,
        idempotency_key=key,
        cost_units=cost,
        payload=key.encode(),
        request=RequestInfo(request_id=key, rpc="RunQuery", query_text=f"q {key}"),
    )
    return result.release.release_id


def race(location: str, start_at: float, seed: int) -> int:
    rng = random.Random(seed)
    with Ledger.open(location) as ledger:
        time.sleep(max(0.0, start_at - time.time()))
        while True:
            cost = rng.randint(1, 40)
            try:
                release_id = _debit(ledger, cost)
            except BudgetExhausted as refused:
                print(json.dumps({"refused": [refused.requested_units, refused.remaining_units]}))
                if refused.remaining_units == 0:
                    return 0
                continue
            except Exception as error:
                print(json.dumps({"error": repr(error)}), flush=True)
                return 1
            print(json.dumps({"release_id": release_id, "cost": cost}))


def crash(location: str, seed: int) -> int:
    rng = random.Random(seed)
    with Ledger.open(location) as ledger:
        print("ready", flush=True)
        while True:
            roll = rng.random()
            if roll < 0.8:
                release_id = _debit(ledger, rng.randint(1, 1_000))
                print(release_id, flush=True)
            elif roll < 0.9:
                ledger.record_event(
                    RequestInfo(request_id="x", rpc="RunQuery", query_text="bad"), Outcome.INVALID
                )
            elif roll < 0.95:
                ledger.record_unauthenticated(RequestInfo("u", "RunQuery", source="192.0.2.1"))
            else:
                ledger.admin.top_up_allocation(
                    REQUESTER, DATASET, 1_000, request=RequestInfo("t", "TopUpAllocation")
                )


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "race":
        sys.exit(race(sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
    sys.exit(crash(sys.argv[2], int(sys.argv[3])))
