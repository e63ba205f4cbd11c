"""Answering a query end to end: check, price, look up, run, debit (DESIGN.md guarantees 3-5).

The order is the guarantee. Everything that can refuse for free happens before any data
is read: validation and pricing (`engine.prepare`), then the ledger's pre-check
(`Ledger.precheck_debit`: a retry or a repeat is served free with no new noise, a request
the budget cannot pay is refused, by the same rule `debit` applies). Only then does a
worker compute the noisy answer, and only after the ledger has durably stored the release
and its debit does the answer leave. The ledger writes the audit event of every outcome
it decides; this module writes none.

The version a query reads is leased (store/leases.py) from before it is priced until its
answer is stored, so retention never deletes files a query is reading.

Repeated questions cost little (queries/caches.py): opened versions and prepared queries
are kept per dataset version (both immutable), and decoded releases per stored release
and confidence level (a stored release never changes). The caches are read only for work
already decided: every request still takes its lease, and the ledger still decides every
repeat (release sharing, idempotency, budgets) before a cached release is looked up by
the id the ledger returned. A retry with an
idempotency key already used is answered from the ledger before anything is computed,
even after the version it was computed on was replaced or deleted: the ledger asks
`_same_question` whether the stored answer is the question asked again.

Derived answers (queries/derivation.py): unless the requester asks for a fresh release, a
question that is not a repeat or a retry, and that cells of a release the requester may
receive on the same version add up to, is answered from those cells: free, no data read,
no worker, audited by the ledger as "derived from <release>, cost 0". It is not stored (it
is recomputed from its source the same way each time; the ledger keeps a record that lists
it with the requester's releases), so it charges nothing and holds no idempotency key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import DebitResult, Principal, RequestInfo, StoredRelease
from dpgate_server.queries import engine
from dpgate_server.queries.accuracy import with_confidence_level
from dpgate_server.queries.caches import LruCache
from dpgate_server.queries.derivation import (
    Derivation,
    DerivePreference,
    answer_keys,
    best_derivation,
)
from dpgate_server.queries.errors import ReleaseFormatError
from dpgate_server.queries.limits import QueryLimits
from dpgate_server.queries.model import CanonicalQuery, Query, Release
from dpgate_server.store.leases import FileReaderLeases, ReaderLeases, reading_current
from dpgate_server.store.store import MANIFEST_FILE, DatasetStore, DatasetVersion


class QueryExecutor(Protocol):
    """Runs a prepared query somewhere else (worker processes) and returns release bytes."""

    def execute(self, prepared: engine.PreparedQuery, timeout_s: float) -> bytes: ...


@dataclass(frozen=True, slots=True)
class CacheSizes:
    """How much the answerer may keep in memory for repeated questions (0 keeps nothing).

    Attributes:
        prepared_queries: prepared queries kept (with the opened versions they were
            prepared on, as many again), per dataset version and question.
        release_bytes: decoded releases kept, by the size of their cell tables.
    """

    prepared_queries: int = 1024
    release_bytes: int = 64 * 1024 * 1024


_RELEASE_OVERHEAD_BYTES = 2048
"""What a cached release weighs besides its cell table (header, query, key)."""


@dataclass(frozen=True, slots=True)
class EarlierRelease:
    """The identical question, answered for the requester on an older dataset version.

    Releases are per version: the question on the current version is a new one, charged
    again. Only a release the requester received is named (one they paid for, or another
    requester's shared with them), never one they did not get.

    Attributes:
        release_id: the earlier release.
        dataset_version: the older version it was computed on.
        cost_units: what it cost when it was made.
        shared: another requester paid for it; it was served to this requester free.
    """

    release_id: str
    dataset_version: str
    cost_units: int
    shared: bool


@dataclass(frozen=True, slots=True)
class RequesterPreview:
    """A preview, and what it means for the requester asking.

    Attributes:
        preview: cost and accuracy on the current version.
        earlier_release: set when the identical question was answered for the requester
            on an older version and running it now will be charged again (not set when
            it was also answered on the current version: that would be free).
    """

    preview: engine.Preview
    earlier_release: EarlierRelease | None
    derived: Derivation | None = None
    """The free option: the query answered from a release the requester may receive."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A released answer and what it cost the requester.

    Attributes:
        release: the noisy cells and their mechanism (intervals at the requested level).
        release_id: the ledger's id of the stored release.
        charged_units: what this request charged (0 for a repeat); for a retry with an
            idempotency key already used, what its first call charged.
        remaining_units: the requester's remaining budget on the dataset afterwards (for
            a retry, as its first call was told).
        repeat: whether the answer is an earlier release served again for free.
        derived_from: for a derived answer (cells of a release added up, free), the id of
            that release; None for an answer computed from data.
    """

    release: Release
    release_id: str
    charged_units: int
    remaining_units: int
    repeat: bool
    derived_from: str | None = None


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
        cache: CacheSizes | None = None,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._executor = executor
        self._limits = limits
        self._timeout_s = timeout_s
        self._leases = leases if leases is not None else FileReaderLeases(store.root)
        sizes = CacheSizes() if cache is None else cache
        self._versions: LruCache[tuple[str, str], DatasetVersion] = LruCache(sizes.prepared_queries)
        self._prepared: LruCache[tuple[str, str, Query], engine.PreparedQuery] = LruCache(
            sizes.prepared_queries
        )
        self._releases: LruCache[tuple[str, str, float], Release] = LruCache(
            sizes.release_bytes, lambda r: len(r.table) + _RELEASE_OVERHEAD_BYTES
        )

    @property
    def cached_release_bytes(self) -> int:
        """What the decoded releases kept for repeats weigh now (at most the setting)."""
        return self._releases.weight

    def preview(self, query: Query, requester_id: str) -> RequesterPreview:
        """Cost and accuracy on the current version, and whether `requester_id` received
        the identical question's answer on an older one; free, reads no private rows."""
        with self._reading(query.dataset_id) as version:
            prepared = self._prepare(version, query)
            preview = engine.summarize(prepared, version.version)
            derived = None
            if self._ledger.lookup_release(prepared.key, requester_id) is None:
                derived = self._derivation(version, prepared, requester_id)
        return RequesterPreview(preview, self._earlier_release(preview, requester_id), derived)

    def _earlier_release(self, preview: engine.Preview, requester_id: str) -> EarlierRelease | None:
        """The latest release of this question the requester received on an older version,
        if the question is not also answered for them on the current one (then it is free)."""
        asked, key = preview.question, preview.key
        if asked is None or key is None or self._ledger.lookup_release(key, requester_id):
            return None
        older = {
            dataclasses.replace(asked, dataset_version=name).key(): name
            for name in self._store.names_before(asked.dataset_version)
        }
        received = self._ledger.received_releases(requester_id, list(older))
        if not received:
            return None
        latest = received[-1]
        return EarlierRelease(
            release_id=latest.release_id,
            dataset_version=older[latest.release_key],
            cost_units=latest.cost_units,
            shared=latest.requester_id != requester_id,
        )

    def answer(
        self,
        principal: Principal,
        request: RequestInfo,
        query: Query,
        idempotency_key: str | None,
        caller_deadline_s: float | None = None,
        derive: DerivePreference = DerivePreference.FRESH,
    ) -> Answer:
        """Answer `query` for `principal`, charging its budget unless it is a repeat, or
        free from a release already made (`derive`; see the module's docstring).

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
        with self._reading(query.dataset_id) as version:
            prepared = self._prepare(version, query)
            request = dataclasses.replace(request, query_text=prepared.query.to_json())
            if derive is not DerivePreference.FRESH:
                derived = self._derived_answer(
                    principal.requester_id, request, version, prepared, idempotency_key, derive
                )
                if derived is not None:
                    return derived
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
        precheck = functools.partial(
            self._ledger.precheck_debit,
            requester_id,
            dataset_id,
            prepared.key,
            idempotency_key=idempotency_key,
            cost_units=prepared.cost_units,
            request=request,
            same_question=same_question,
        )
        # The ledger settles now what needs no answer (a retry, a repeat, a refusal), so
        # a request it will not charge never occupies a worker.
        settled = precheck()
        if settled is not None:
            return self._answer(settled, query)

        timeout_s = self._timeout_s
        if caller_deadline_s is not None:
            timeout_s = max(0.001, min(timeout_s, caller_deadline_s))
        started = time.monotonic()
        # One computation of a new question across replicas: whoever asks it second waits
        # for the first's release and is served it free (the ledger charges once anyway).
        # Settled again under the lock: the first may have released it since the pre-check.
        with self._ledger.single_flight(prepared.key, wait_s=timeout_s):
            settled = precheck()
            if settled is not None:
                return self._answer(settled, query)
            left_s = max(0.001, timeout_s - (time.monotonic() - started))
            payload = self._executor.execute(prepared, left_s)
            result = self._ledger.debit(
                requester_id,
                dataset_id,
                prepared.key,
                idempotency_key=idempotency_key,
                cost_units=prepared.cost_units,
                payload=payload,
                request=request,
                same_question=same_question,
                dataset_version=prepared.query.dataset_version,
            )
        return self._answer(result, query)

    def _derived_answer(
        self,
        requester_id: str,
        request: RequestInfo,
        version: DatasetVersion,
        prepared: engine.PreparedQuery,
        idempotency_key: str | None,
        derive: DerivePreference,
    ) -> Answer | None:
        """The query answered free from a release's cells, audited; None to answer it fresh.

        Not for a repeat (the identical release is served as it is) nor a retry of a key
        already used (its first answer is replayed), and only as accurate as `derive` asks.
        """
        if self._ledger.lookup_release(prepared.key, requester_id) is not None:
            return None
        if idempotency_key and self._ledger.idempotency_key_used(requester_id, idempotency_key):
            return None
        found = self._derivation(version, prepared, requester_id)
        if found is None or not derive.accepts(found, prepared.half_width):
            return None
        derived_id = _derived_release_id(found)
        remaining = self._ledger.record_derived(
            requester_id,
            prepared.query.dataset_id,
            request,
            derived_id=derived_id,
            source_release_id=found.source_release_id,
            dataset_version=version.version,
            canonical_query=prepared.query.to_json(),
        )
        return Answer(
            release=found.release,
            release_id=derived_id,
            charged_units=0,
            remaining_units=remaining,
            repeat=False,
            derived_from=found.source_release_id,
        )

    def _derivation(
        self, version: DatasetVersion, prepared: engine.PreparedQuery, requester_id: str
    ) -> Derivation | None:
        """The best derived answer from the releases on `version` the requester may receive
        (own, or anyone's if the dataset shares releases); None if none adds up to it."""
        sources = []
        found = self._ledger.derivation_sources(
            requester_id, prepared.query.dataset_id, version.version
        )
        for stored in found:
            try:
                release = Release.from_bytes(stored.payload)
            except ReleaseFormatError:
                continue
            if release.dataset_version == version.version:
                sources.append((stored.release_id, release))
        return best_derivation(prepared, sources, lambda: answer_keys(version, prepared))

    # What question sets (question_sets.py) build on: the same steps, one member at a time.

    def reading(self, dataset_id: str) -> AbstractContextManager[DatasetVersion]:
        """The current version of `dataset_id`, leased while the block runs."""
        return self._reading(dataset_id)

    def prepare(self, version: DatasetVersion, query: Query) -> engine.PreparedQuery:
        """`query` checked and priced on `version` (nothing read, nothing spent)."""
        return self._prepare(version, query)

    def summarize(self, version: DatasetVersion, query: Query) -> engine.Preview:
        """Cost and accuracy of `query` on `version`, as `preview` gives them."""
        return engine.summarize(self._prepare(version, query), version.version)

    def compute(self, prepared: engine.PreparedQuery, timeout_s: float) -> bytes:
        """The noisy answer, computed by a worker; nothing stored or charged."""
        return self._executor.execute(prepared, min(timeout_s, self._timeout_s))

    @property
    def timeout_s(self) -> float:
        """The configured time a query may take."""
        return self._timeout_s

    def served(self, result: DebitResult, query: Query) -> Answer:
        """The answer the ledger decided on, at `query`'s confidence level."""
        return self._answer(result, query)

    def _reading(self, dataset_id: str) -> AbstractContextManager[DatasetVersion]:
        return reading_current(self._store, self._leases, dataset_id, self._open_version)

    def _open_version(self, dataset_id: str, name: str) -> DatasetVersion:
        """The opened version, from the cache if it is still there (checked every time)."""
        version = self._versions.get((dataset_id, name))
        if version is not None and (version.path / MANIFEST_FILE).is_file():
            return version
        version = self._store.open_version(dataset_id, name)
        self._versions.put((dataset_id, name), version)
        return version

    def _prepare(self, version: DatasetVersion, query: Query) -> engine.PreparedQuery:
        """`engine.prepare`, kept per version and question (both immutable)."""
        try:
            key = (version.dataset_id, version.version, query)
            prepared = self._prepared.get(key)
        except TypeError:  # a value that does not hash (a list in a filter): not kept
            return engine.prepare(version, query, self._limits)
        if prepared is None:
            prepared = engine.prepare(version, query, self._limits)
            self._prepared.put(key, prepared)
        return prepared

    def _release(self, stored: StoredRelease, confidence_level: float) -> Release:
        """The stored release decoded at `confidence_level`, kept for the next repeat.

        Looked up by the id and key of the release the ledger has just decided to serve,
        so the cache never chooses what anyone sees.
        """
        key = (stored.release_id, stored.release_key, confidence_level)
        release = self._releases.get(key)
        if release is None:
            release = Release.from_bytes(stored.payload)
            if release.confidence_level != confidence_level:
                release = with_confidence_level(release, confidence_level)
            self._releases.put(key, release)
        return release

    def _answer(self, result: DebitResult, query: Query) -> Answer:
        release = self._release(result.release, query.confidence_level)
        return Answer(
            release,
            result.release.release_id,
            result.charged_units,
            result.remaining_units,
            result.repeat,
        )


def _derived_release_id(derivation: Derivation) -> str:
    """The id a derived answer is shown under: the same source and question, the same id."""
    digest = hashlib.sha256(
        f"{derivation.source_release_id}\n{derivation.release.key}".encode()
    ).hexdigest()
    return "drv_" + digest[:32]


def _same_question(earlier: StoredRelease, asked: CanonicalQuery) -> bool:
    """Whether `asked` is the question `earlier` answered, whatever version is now current
    (a retry after a publish asks the same question of the version it was answered on)."""
    if earlier.release_key == asked.key():
        return True
    answered = Release.from_bytes(earlier.payload).query
    return dataclasses.replace(answered, dataset_version=asked.dataset_version) == asked
