"""SIGKILL one replica of three while several clients query and an administrator tops up.

The clients are the real `Client` given all three replicas (its default retries), the
servers real processes on one PostgreSQL ledger. Afterwards the ledger must hold every
acknowledged release, debit, top-up and audit event, and nothing else charged: the
releases are exactly the acknowledged ones, spent is exactly what they cost (no phantom
debit: a call in flight on the killed replica is retried with its idempotency key and
charged once), and the audit chain verifies.

Sized for the suite (4 analysts, a few queries each before and after the kill);
DPGATE_FULL_RUN=1 runs more of them.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from dpgate import AdminClient, Client, DpgateError, QueryResult, count
from dpgate_server.ledger import Ledger
from dpgate_server.ledger.model import Outcome, Role
from dpgate_server.store.store import DatasetVersion
from dpgate_shared.units import to_units_exact
from tests.support.replicas import start_replicas

from .conftest import served, token_for

FULL_RUN = os.environ.get("DPGATE_FULL_RUN") == "1"
ANALYSTS = 8 if FULL_RUN else 4
BEFORE_KILL = 3 if FULL_RUN else 2
"""Answers each analyst gets before the kill."""
AFTER_KILL = 10 if FULL_RUN else 3
"""Answers each analyst gets after the kill, from the two survivors."""
ANALYST_EPSILON = 5
TOP_UP = Decimal("0.1")
HANG_GUARD_S = 240.0
"""Only to end a hung run with a message; no assertion depends on time."""


@dataclass
class Load:
    """What the clients got, shared by their threads (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    killed: threading.Event = field(default_factory=threading.Event)
    answers: dict[str, QueryResult] = field(default_factory=dict)
    """Idempotency key -> the acknowledged answer."""
    after_kill: Counter[int] = field(default_factory=Counter)
    """Analyst -> answers it got after the kill."""
    before_kill: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    top_ups_acknowledged: int = 0
    top_ups_unknown: int = 0
    """Top-ups whose call failed: applied or not, the client cannot know (no retry)."""
    queries_made: int = 0

    def next_epsilon(self) -> Decimal:
        """A new epsilon per query, so that every query is a new release."""
        with self.lock:
            self.queries_made += 1
            return Decimal("0.01") + Decimal(self.queries_made) / 1_000_000


def _analyst(number: int, targets: list[str], token: str, dataset_id: str, load: Load) -> None:
    with Client(targets, token=token) as client:
        for sequence in itertools.count():
            if load.stop.is_set():
                return
            key = f"analyst-{number}-{sequence}"
            query = count(dataset_id).where(status="DNA").by("month")
            try:
                answer = client.query(query.epsilon(load.next_epsilon()), idempotency_key=key)
            except DpgateError as error:
                with load.lock:
                    load.failures.append(f"analyst {number}: {type(error).__name__}: {error}")
                return
            with load.lock:
                load.answers[key] = answer
                (load.after_kill if load.killed.is_set() else load.before_kill)[number] += 1


def _administrator(
    targets: list[str], token: str, analyst_id: str, dataset_id: str, load: Load
) -> None:
    with AdminClient(targets, token=token) as admin:
        while not load.stop.is_set():
            try:
                admin.grant(analyst_id, dataset_id, epsilon=TOP_UP)
            except DpgateError:
                with load.lock:
                    load.top_ups_unknown += 1
            else:
                with load.lock:
                    load.top_ups_acknowledged += 1
            time.sleep(0.2)


def _wait_until(condition, what: str, load: Load) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        with load.lock:
            if condition() or load.failures:
                return
        assert time.monotonic() < deadline, f"hung waiting for {what}"
        time.sleep(0.05)


def test_sigkill_of_one_replica_under_load_loses_nothing_and_charges_nothing_extra(
    small_dataset: DatasetVersion, ledger_url: str, tmp_path: Path
) -> None:
    dataset_id = small_dataset.dataset_id
    store_root = small_dataset.path.parents[2]
    load = Load()
    with start_replicas(3, ledger_url, store_root, tmp_path, dataset_id) as replicas:
        analyst_id, analyst_token = replicas.new_analyst(ANALYST_EPSILON)
        _, admin_token = token_for(replicas, Role.ADMIN)
        victim = replicas.members[0]
        targets = replicas.targets
        workers = [
            threading.Thread(target=_analyst, args=(n, targets, analyst_token, dataset_id, load))
            for n in range(ANALYSTS)
        ]
        workers.append(
            threading.Thread(
                target=_administrator,
                args=(targets, admin_token, analyst_id, dataset_id, load),
            )
        )
        for worker in workers:
            worker.start()
        try:
            _wait_until(  # the victim takes its share of the load, then dies
                lambda: (
                    min(load.before_kill[n] for n in range(ANALYSTS)) >= BEFORE_KILL
                    and served(victim, "RunQuery") > 0
                ),
                "answers before the kill",
                load,
            )
            load.killed.set()
            replicas.kill(0)
            _wait_until(
                lambda: min(load.after_kill[n] for n in range(ANALYSTS)) >= AFTER_KILL,
                "answers after the kill",
                load,
            )
        finally:
            load.stop.set()
            for worker in workers:
                worker.join(timeout=120)
        assert load.failures == []  # every query was answered, across the kill
        assert load.top_ups_acknowledged > 0

    with Ledger.open(ledger_url) as ledger:
        releases = {r.release_id: r for r in ledger.list_releases(analyst_id, dataset_id)}
        budget = ledger.get_budget(analyst_id, dataset_id)
        events = ledger.list_events(limit=100_000)
        verification = ledger.verify()
        reconciliation = ledger.reconcile()

    # Releases: exactly the acknowledged ones, each charged what its answer said.
    acknowledged = {a.release_id: a for a in load.answers.values()}
    assert len(acknowledged) == len(load.answers)  # no two keys share a release
    assert set(releases) == set(acknowledged)
    for release_id, answer in acknowledged.items():
        assert releases[release_id].cost_units == to_units_exact(answer.release_cost, "cost")
    # Debits: spent is the sum of the releases, no more (no phantom debit), no less.
    assert budget.spent_units == sum(r.cost_units for r in releases.values())
    assert reconciliation.ok, reconciliation.problems

    # Top-ups: every acknowledged one applied; an unacknowledged one at most once.
    top_ups = round((budget.granted_units - to_units_exact(ANALYST_EPSILON, "grant")) / 10**8)
    assert budget.granted_units == to_units_exact(ANALYST_EPSILON + top_ups * TOP_UP, "grant")
    assert load.top_ups_acknowledged <= top_ups
    assert top_ups <= load.top_ups_acknowledged + load.top_ups_unknown

    # Audit: one answered event per top-up applied, the releases' charges in the chain.
    answered = [e for e in events if e.outcome == Outcome.ANSWERED]
    assert sum(1 for e in answered if e.rpc == "GrantAllocation") == top_ups
    charged_in_chain = Counter[str]()
    for event in answered:
        if event.rpc == "RunQuery" and event.release_id is not None:
            charged_in_chain[event.release_id] += event.cost_units
    assert set(charged_in_chain) == set(releases)
    assert all(charged_in_chain[r] == releases[r].cost_units for r in releases)
    assert verification.ok
