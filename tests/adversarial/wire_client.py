"""One racing analyst over the wire: spend fresh queries until nothing more fits.

Used by test_wire_race.py from threads (`race`) and, run as a script, from separate
processes. Self-contained (imports only the client library) so a process starts fast.

    python wire_client.py TARGET TOKEN DATASET_ID START_AT INDEX SEED

prints one JSON line per answer: {"outcome": "OK", "release_id": ..., "charged": units},
{"outcome": "RESOURCE_EXHAUSTED", "remaining": units}, {"outcome": "OVERLOADED"} or
{"outcome": "OTHER", "code": ..., "reason": ...}.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from dpgate import (
    BudgetExhaustedError,
    Client,
    DpgateError,
    OverloadedError,
    QuerySpec,
    count,
    total,
)

NANO = Decimal(10**9)
SMALLEST_COST = Decimal("0.01")
"""The cheapest query a racer asks (costs are 0.01 to 0.05 epsilon, plus nano offsets)."""
MAX_ATTEMPTS = 2_000
MAX_RETRY_WAIT_S = 1.0


def fresh_query(
    dataset_id: str, index: int, attempt: int, rng: random.Random, *, cheapest: bool = False
) -> QuerySpec:
    """A query no other racer asks: the nano-epsilon offset is unique per (index, attempt).

    Offsets stay below 0.01 (the step between base costs), so no two (index, attempt)
    pairs can land on the same epsilon. `cheapest` fixes the base cost at 0.01.
    """
    offset = index * MAX_ATTEMPTS + attempt
    if not 0 <= attempt < MAX_ATTEMPTS or offset >= 10**7:
        raise ValueError(f"index {index} or attempt {attempt} out of range")
    base = 1 if cheapest else rng.randint(1, 5)
    epsilon = Decimal(base) / 100 + Decimal(offset) / NANO
    shape = rng.randrange(3)
    if shape == 0:
        return count(dataset_id).epsilon(epsilon)
    if shape == 1:
        return count(dataset_id).where(status="DNA").by("mode").epsilon(epsilon)
    return total(dataset_id, "duration_minutes").by("sex").epsilon(epsilon)


def race(
    target: str,
    token: str,
    dataset_id: str,
    index: int,
    seed: int,
    emit: Callable[[dict[str, Any]], None],
    *,
    after_first: Callable[[], None] | None = None,
) -> None:
    """Ask fresh queries until a refusal says less than the smallest cost remains.

    With `after_first` (e.g. a barrier all racers wait on), the first query is the cheapest
    (0.01 epsilon) and `after_first` is called once it is answered, before the race goes on:
    when the racers' first queries together fit the allocation, every racer (and so every
    server they are spread over) is answered at least once, whatever the scheduling.
    """
    rng = random.Random(seed)
    with Client(target, token=token, retries=0, timeout=120) as client:
        for attempt in range(MAX_ATTEMPTS):
            warming = attempt == 0 and after_first is not None
            if not _ask(
                client, fresh_query(dataset_id, index, attempt, rng, cheapest=warming), emit
            ):
                return
            if attempt == 0 and after_first is not None:
                after_first()
        emit({"outcome": "OTHER", "code": "GAVE_UP", "reason": f"{MAX_ATTEMPTS} attempts"})


def _ask(client: Client, query: QuerySpec, emit: Callable[[dict[str, Any]], None]) -> bool:
    """Ask until not overloaded (nothing was charged then); False when the racer is done."""
    while True:
        try:
            result = client.query(query)
        except BudgetExhaustedError as refused:
            remaining = refused.remaining if refused.remaining is not None else Decimal(-1)
            emit({"outcome": "RESOURCE_EXHAUSTED", "remaining": int(remaining * NANO)})
            return remaining >= SMALLEST_COST
        except OverloadedError as busy:
            emit({"outcome": "OVERLOADED", "reason": busy.reason})
            time.sleep(min(busy.retry_after or MAX_RETRY_WAIT_S, MAX_RETRY_WAIT_S))
            continue
        except DpgateError as other:
            emit({"outcome": "OTHER", "code": other.code, "reason": other.reason})
            return False
        emit(
            {
                "outcome": "OK",
                "release_id": result.release_id,
                "charged": int(result.charged * NANO),
                "repeat": result.repeat,
            }
        )
        return True


def main(argv: list[str]) -> int:
    target, token, dataset_id, start_at, index, seed = argv
    time.sleep(max(0.0, float(start_at) - time.time()))
    race(
        target,
        token,
        dataset_id,
        int(index),
        int(seed),
        lambda record: print(json.dumps(record), flush=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
