"""Answering a query end to end: check, price, look up, run, debit (DESIGN.md guarantees 3-5).

The order is the guarantee. Everything that can refuse for free happens before any data
is read: validation and pricing (`engine.prepare`), then the ledger's pre-check
(`Ledger.precheck_debit`: a retry or a repeat is served free with no new noise, a request
the budget cannot pay is refused, by the same rule `debit` applies). Only then does a
worker compute the noisy answer, and only after the ledger has durably stored the release
and its debit does the answer leave. The ledger writes the audit event of every outcome
it decides; this module writes none.

The version a query reads is leased (store/leases.py) from before it is priced until its
answer is stored, so retention never deletes files a query is reading. A retry with an
idempotency key already used is answered from the ledger before anything is computed,
even after the version it was computed on was replaced or deleted: the ledger asks
`_same_question` whether the stored answer is the question asked again.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Protocol

from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import DebitResult, Principal, RequestInfo, StoredRelease
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
            return self._answer_fresh(
                principal, request, query, prepared, idempotency_key or None, caller_deadline_s
            )

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
        same_question = functools.partial(_same_question, asked=prepared.query)
        # The ledger settles now what needs no answer (a retry, a repeat, a refusal), so
        # a request it will not charge never occupies a worker.
        settled = self._ledger.precheck_debit(
            requester_id,
            dataset_id,
            prepared.key,
            idempotency_key=idempotency_key,
            cost_units=prepared.cost_units,
            request=request,
            same_question=same_question,
        )
        if settled is not None:
            return self._answer(settled, query)

        timeout_s = self._timeout_s
        if caller_deadline_s is not None:
            timeout_s = max(0.001, min(timeout_s, caller_deadline_s))
        payload = self._executor.execute(prepared, timeout_s)
        result = self._ledger.debit(
            requester_id,
            dataset_id,
            prepared.key,
            idempotency_key=idempotency_key,
            cost_units=prepared.cost_units,
            payload=payload,
            request=request,
            same_question=same_question,
        )
        return self._answer(result, query)

    def _answer(self, result: DebitResult, query: Query) -> Answer:
        release = Release.from_bytes(result.release.payload)
        if release.confidence_level != query.confidence_level:
            release = with_confidence_level(release, query.confidence_level)
        return Answer(
            release,
            result.release.release_id,
            result.charged_units,
            result.remaining_units,
            result.repeat,
        )


def _same_question(earlier: StoredRelease, asked: CanonicalQuery) -> bool:
    """Whether `asked` is the question `earlier` answered, whatever version is now current
    (a retry after a publish asks the same question of the version it was answered on)."""
    if earlier.release_key == asked.key():
        return True
    answered = Release.from_bytes(earlier.payload).query
    return dataclasses.replace(answered, dataset_version=asked.dataset_version) == asked
