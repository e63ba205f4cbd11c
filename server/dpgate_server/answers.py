"""Answering a query end to end: check, price, look up, run, debit (DESIGN.md guarantees 3-5).

The order is the guarantee. Everything that can refuse for free happens before any data
is read: validation and pricing (`engine.prepare`), the release lookup (a repeat is free
and gets no new noise), and a budget pre-check (so a request the budget cannot pay never
occupies a worker). Only then does a worker compute the noisy answer, and only after the
ledger has durably stored the release and its debit does the answer leave.

The version a query reads is leased (store/leases.py) from before it is priced until its
answer is stored, so retention never deletes files a query is reading. A retry with an
idempotency key already used is answered from the ledger before anything is computed,
even after the version it was computed on was replaced or deleted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

from dpgate_server.ledger import model as ledger_model
from dpgate_server.ledger.errors import BudgetExhausted, IdempotencyConflict
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import Outcome, Principal, RequestInfo
from dpgate_server.queries import engine
from dpgate_server.queries.accuracy import with_confidence_level
from dpgate_server.queries.limits import QueryLimits
from dpgate_server.queries.model import CanonicalQuery, Query, Release
from dpgate_server.store.leases import FileReaderLeases, ReaderLeases, reading_current
from dpgate_server.store.store import DatasetStore


class QueryExecutor(Protocol):
    """Runs a prepared query somewhere else (worker processes) and returns release bytes."""

    def execute(self, prepared: engine.PreparedQuery, timeout_s: float) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """A released answer and what it cost the requester.

    Attributes:
        release: the noisy cells and their mechanism (intervals at the requested level).
        release_id: the ledger's id of the stored release.
        charged_units: what this request charged (0 for a repeat).
        remaining_units: the requester's remaining budget on the dataset afterwards.
        repeat: whether the answer is an earlier release served again for free.
    """

    release: Release
    release_id: str
    charged_units: int
    remaining_units: int
    repeat: bool


class QueryAnswerer:
    """The one place where a query turns into a charged release."""

    def __init__(
        self,
        store: DatasetStore,
        ledger: Ledger,
        executor: QueryExecutor,
        limits: QueryLimits,
        timeout_s: float,
        leases: ReaderLeases | None = None,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._executor = executor
        self._limits = limits
        self._timeout_s = timeout_s
        self._leases = leases if leases is not None else FileReaderLeases(store.root)

    def preview(self, query: Query) -> engine.Preview:
        """Cost and accuracy on the current version; free, reads no private rows."""
        with reading_current(self._store, self._leases, query.dataset_id) as version:
            return engine.preview(version, query, self._limits)

    def answer(
        self,
        principal: Principal,
        request: RequestInfo,
        query: Query,
        idempotency_key: str | None,
        caller_deadline_s: float | None = None,
    ) -> Answer:
        """Answer `query` for `principal`, charging its budget unless it is a repeat.

        `caller_deadline_s` is the time the caller still waits; the query is cancelled at
        the earlier of it and the configured timeout, so no one is charged for an answer
        computed after they stopped waiting.

        Raises:
            InvalidQuery: the query is malformed or not allowed (nothing spent).
            DatasetNotFoundError: no such dataset.
            BudgetExhausted: the cost exceeds what remains (recorded as refused).
            IdempotencyConflict: the idempotency key was used for another query.
            Whatever the executor raises for overload, deadline or a crashed worker.
        """
        with reading_current(self._store, self._leases, query.dataset_id) as version:
            prepared = engine.prepare(version, query, self._limits)
            request = dataclasses.replace(request, query_text=prepared.query.to_json())
            if idempotency_key:
                retried = self._retry(principal, request, prepared, idempotency_key, query)
                if retried is not None:
                    return retried
            return self._answer_fresh(
                principal, request, query, prepared, idempotency_key, caller_deadline_s
            )

    def _retry(
        self,
        principal: Principal,
        request: RequestInfo,
        prepared: engine.PreparedQuery,
        idempotency_key: str,
        query: Query,
    ) -> Answer | None:
        """The earlier answer to a retried request (same idempotency key), free; None if
        the key is new. A key reused for another question is refused before any work."""
        requester_id = principal.requester_id
        dataset_id = prepared.query.dataset_id
        earlier = self._ledger.lookup_idempotent(requester_id, idempotency_key)
        if earlier is None:
            return None
        if not _same_question(earlier, prepared.query):
            self._ledger.record_event(
                request,
                Outcome.INVALID,
                dataset_id=dataset_id,
                detail="idempotency key reused for a different query",
            )
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} was used for another query"
            )
        self._ledger.record_event(
            request,
            Outcome.ANSWERED,
            dataset_id=dataset_id,
            release_id=earlier.release_id,
            detail="idempotent retry",
        )
        remaining = self._ledger.get_budget(requester_id, dataset_id).remaining_units
        return self._answer(earlier.payload, earlier.release_id, 0, remaining, True, query)

    def _answer_fresh(
        self,
        principal: Principal,
        request: RequestInfo,
        query: Query,
        prepared: engine.PreparedQuery,
        idempotency_key: str | None,
        caller_deadline_s: float | None,
    ) -> Answer:
        requester_id = principal.requester_id
        dataset_id = prepared.query.dataset_id
        stored = self._ledger.lookup_release(prepared.key, requester_id)
        if stored is not None:
            self._ledger.record_event(
                request, Outcome.ANSWERED, dataset_id=dataset_id, release_id=stored.release_id
            )
            remaining = self._ledger.get_budget(requester_id, dataset_id).remaining_units
            return self._answer(stored.payload, stored.release_id, 0, remaining, True, query)

        budget = self._ledger.get_budget(requester_id, dataset_id)
        if prepared.cost_units > budget.remaining_units:
            self._ledger.record_event(
                request, Outcome.REFUSED, dataset_id=dataset_id, cost_units=0, detail="budget"
            )
            raise BudgetExhausted(
                prepared.cost_units, budget.remaining_units, accounting=prepared.query.accounting
            )

        timeout_s = self._timeout_s
        if caller_deadline_s is not None:
            timeout_s = max(0.001, min(timeout_s, caller_deadline_s))
        payload = self._executor.execute(prepared, timeout_s)
        result = self._ledger.debit(
            requester_id,
            dataset_id,
            prepared.key,
            idempotency_key=idempotency_key or None,
            cost_units=prepared.cost_units,
            payload=payload,
            request=request,
        )
        return self._answer(
            result.release.payload,
            result.release.release_id,
            result.charged_units,
            result.remaining_units,
            result.repeat,
            query,
        )

    def _answer(
        self,
        payload: bytes,
        release_id: str,
        charged: int,
        remaining: int,
        repeat: bool,
        query: Query,
    ) -> Answer:
        release = Release.from_bytes(payload)
        if release.confidence_level != query.confidence_level:
            release = with_confidence_level(release, query.confidence_level)
        return Answer(release, release_id, charged, remaining, repeat)


def _same_question(earlier: ledger_model.StoredRelease, asked: CanonicalQuery) -> bool:
    """Whether `asked` is the question `earlier` answered, whatever version is now current
    (a retry after a publish asks the same question of the version it was answered on)."""
    if earlier.release_key == asked.key():
        return True
    answered = Release.from_bytes(earlier.payload).query
    return dataclasses.replace(answered, dataset_version=asked.dataset_version) == asked
