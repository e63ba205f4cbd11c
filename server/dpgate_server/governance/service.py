"""Data governance in one place: uploads, opt-out lists, consent and publishing.

Both the ProviderService/AdminService servicers and the local command line call this
facade; it decides who may act for which practice, serialises changes per dataset, and
writes every change into the audit chain *before* it takes effect (an upload or a consent
change that cannot be audited changes nothing). Publishing is audited once it is live.

Folder layout (`GovernancePolicy.root`; default `<data_dir>/.governance`)::

    optouts/<kind>.parquet          keyed hashes of the opt-out lists (optouts.py)
    <dataset_id>/LOCK               flock: one change at a time, across processes
    <dataset_id>/practices.parquet  the declared practice table (public policy)
    <dataset_id>/consent.json       consent decisions (consent.py)
    <dataset_id>/staged/*.parquet   each practice's minimised rows (staging.py)

The declared practice table is captured from the dataset's current version the first time
governance touches the dataset, before any withdrawal can remove a practice from a
version; a withdrawn practice that re-grants consent is therefore still known, and comes
back (as a key at once, with rows from its next upload).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from dpgate_server.durable import exclusive_lock, replace_with
from dpgate_server.governance.bias_figure import BiasFigurePolicy
from dpgate_server.governance.bound_choice import BoundChoicePolicy
from dpgate_server.governance.compression import inflated
from dpgate_server.governance.consent import ConsentRecord, ConsentState, ConsentStore
from dpgate_server.governance.errors import GovernanceError
from dpgate_server.governance.ingest import IngestPolicy, minimise_extract
from dpgate_server.governance.optouts import OptOutKind, OptOutLists
from dpgate_server.governance.publish_progress import ProgressCallback
from dpgate_server.governance.publish_spends import PublishSpendLedger
from dpgate_server.governance.publishing import (
    DEFAULT_MEMORY_BYTES,
    PRACTICES_TABLE,
    PublishBuild,
    PublishInputs,
    PublishResult,
)
from dpgate_server.governance.staging import StagingArea, UploadRecord
from dpgate_server.ledger.model import Outcome, Principal, RequestInfo, Role
from dpgate_server.store.leases import FileReaderLeases, ReaderLeases
from dpgate_server.store.period_bounds import PeriodBounds
from dpgate_server.store.pseudonym import key_id
from dpgate_server.store.retention import retire_old_versions
from dpgate_server.store.store import BuildInProgressError, DatasetStore, DatasetVersion
from dpgate_server.vocabulary.errors import ErrorReason

OPERATOR = "operator"
"""Who a change is attributed to when it comes from the local command line."""
DECLARED_PRACTICES_FILE = "practices.parquet"
DEFAULT_KEEP_VERSIONS = 2
"""Versions of a dataset kept on disk (the current one and the one before)."""

_log = logging.getLogger(__name__)


class AuditSink(Protocol):
    """Where governance changes are recorded (the ledger's audit chain)."""

    def record_event(
        self,
        request: RequestInfo,
        outcome: Outcome,
        *,
        dataset_id: str | None = None,
        cost_units: int = 0,
        release_id: str | None = None,
        detail: str = "",
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class GovernancePolicy:
    """Settings of governance (config.GovernanceSettings, resolved).

    Attributes:
        root: the governance folder.
        max_upload_bytes: largest raw extract accepted.
        opt_out_drops: where each opt-out list file is dropped to be consumed (None: only
            by an explicit load).
        granted_by_default: datasets whose practices consent unless they withdraw; every
            other dataset's practices must grant first.
        publish_memory_bytes: memory a publish may use for rows (publish_plan.py).
        keep_versions: versions of a dataset kept after a publish (older ones are deleted
            once no query reads them).
        period_bounds: per dataset, the per-period bounds a publish enforces (a dataset
            not named keeps its current version's policy caps; values chosen privately
            last one version).
        chosen_bounds: per dataset, the bounds every publish chooses privately
            (governance/bound_choice.py); a dataset not named keeps its policy bounds.
        bias_figure: the bias figure every publish releases (governance/bias_figure.py);
            None: none, and nothing recorded about one.
    """

    root: Path
    max_upload_bytes: int
    opt_out_drops: Mapping[OptOutKind, Path | None]
    granted_by_default: frozenset[str]
    publish_memory_bytes: int = DEFAULT_MEMORY_BYTES
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    period_bounds: Mapping[str, PeriodBounds] = field(default_factory=dict)
    chosen_bounds: Mapping[str, BoundChoicePolicy] = field(default_factory=dict)
    bias_figure: BiasFigurePolicy | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    """An accepted extract."""

    practice_code: str
    rows_staged: int
    rows_opted_out: int


@dataclass(frozen=True, slots=True)
class PracticeStatus:
    """A practice's consent and its last staged upload."""

    practice_code: str
    consent: ConsentState
    last_upload: UploadRecord | None


class Governance:
    """Uploads, opt-outs, consent and publishing over one dataset store."""

    def __init__(
        self,
        store: DatasetStore,
        policy: GovernancePolicy,
        key_source: Callable[[], bytes],
        audit: AuditSink,
        leases: ReaderLeases | None = None,
        spends: PublishSpendLedger | None = None,
    ) -> None:
        """`spends` charges publish-time releases (bounds chosen privately, the bias figure)
        to dataset caps: the server's ledger; None releases none."""
        self._store = store
        self.policy = policy
        self._key_source = key_source
        self._audit = audit
        self._spends = spends
        self._opt_outs = OptOutLists(policy.root)
        self._leases = leases if leases is not None else FileReaderLeases(store.root)

    @functools.cached_property
    def _key(self) -> bytes:
        """The pseudonymisation key, read on first use (servers that never ingest never
        touch it)."""
        return self._key_source()

    # uploads

    def ingest(
        self, dataset_id: str, practice_code: str, data: bytes, request: RequestInfo
    ) -> IngestResult:
        """Validate, minimise and stage one practice's raw extract (held in memory only;
        plain CSV or gzip-compressed, compression.py).

        Raises:
            GovernanceError: refused (bad extract, practice not the caller's, consent
                withdrawn, ...); nothing changed.
            DatasetNotFoundError: no such dataset.
        """
        current = self._store.current(dataset_id)
        authorise(request.principal, practice_code, uploading=True)
        if len(data) > self.policy.max_upload_bytes:
            raise extract_too_large(len(data), self.policy.max_upload_bytes)
        self.refresh_opt_outs()
        with self._locked(dataset_id):
            self._require_known(dataset_id, current, practice_code)
            self._require_granted(dataset_id, practice_code)
        self._require_same_key(current)
        minimised = minimise_extract(
            inflated(data, self.policy.max_upload_bytes),
            IngestPolicy.of(current.metadata, practice_code),
            self._key,
        )
        digest = hashlib.sha256(data).hexdigest()
        with self._locked(dataset_id):
            self._require_granted(dataset_id, practice_code)  # a withdrawal may have come
            staging = StagingArea(self._folder(dataset_id))
            staging.clean()
            kept = self._opt_outs.remove_opted_out(minimised.rows)
            record = UploadRecord(
                practice_code=practice_code,
                uploaded_at=_now(),
                uploaded_by=_who(request.principal),
                rows_staged=kept.height,
                rows_opted_out=minimised.rows.height - kept.height,
                key_id=key_id(self._key),
                extract_sha256=digest,
            )
            staging.stage(
                kept,
                record,
                before_swap=lambda: self._record(
                    request,
                    dataset_id,
                    f"staged the extract of practice {practice_code} (sha256 {digest[:16]}),"
                    " replacing its previous staged rows",
                ),
            )
        return IngestResult(practice_code, record.rows_staged, record.rows_opted_out)

    def status(
        self, dataset_id: str, practice_code: str, principal: Principal | None
    ) -> PracticeStatus:
        """The practice's consent state and last staged upload."""
        current = self._store.current(dataset_id)
        authorise(principal, practice_code, uploading=False)
        with self._locked(dataset_id):
            self._require_known(dataset_id, current, practice_code)
            consent = self._consent(dataset_id).state(practice_code)
            record = StagingArea(self._folder(dataset_id)).record(practice_code)
        return PracticeStatus(practice_code, consent, record)

    # consent

    def set_consent(
        self,
        dataset_id: str,
        practice_code: str,
        state: ConsentState,
        request: RequestInfo,
        instruction_reference: str = "",
    ) -> ConsentState:
        """Record a practice's decision; a withdrawal also deletes its staged rows.

        The practice's rows and key leave the dataset at the next publish; versions
        already published (and answers already released from them) are not changed.
        An administrator must give the reference of the practice's written instruction.
        """
        current = self._store.current(dataset_id)
        principal = request.principal
        authorise(principal, practice_code, uploading=False)
        reference = instruction_reference.strip()
        if principal is not None and principal.role is Role.ADMIN and not reference:
            raise GovernanceError(
                ErrorReason.INSTRUCTION_REFERENCE_REQUIRED,
                "an administrator records a practice's consent only on its written "
                "instruction: give the instruction's reference",
                {"field": "instruction_reference"},
            )
        with self._locked(dataset_id):
            self._require_known(dataset_id, current, practice_code)
            detail = f"consent of practice {practice_code}: {state.value}"
            self._record(
                request, dataset_id, detail + (f" (instruction {reference})" if reference else "")
            )
            self._consent(dataset_id).record(
                ConsentRecord(practice_code, state, _now(), _who(principal), reference)
            )
            if state is ConsentState.WITHDRAWN:
                StagingArea(self._folder(dataset_id)).remove(practice_code)
        return state

    # opt-outs

    def load_opt_out_list(self, kind: OptOutKind, path: Path, request: RequestInfo) -> int:
        """Consume an opt-out list file (it is deleted once its keys are stored) and
        remove the listed patients' staged rows from every dataset; returns the list size."""
        count = self._opt_outs.consume(kind, path, self._key)
        self._record(request, None, f"{kind.value} opt-out list replaced ({count} patients)")
        self._purge_all()
        return count

    def refresh_opt_outs(self) -> None:
        """Consume any list file waiting at the configured drop paths."""
        for kind, drop in self.policy.opt_out_drops.items():
            if drop is not None and drop.is_file():
                request = RequestInfo(request_id=f"opt-out-{kind.value}", rpc="LoadOptOutList")
                self.load_opt_out_list(kind, drop, request)

    # publishing

    def publish(
        self,
        dataset_id: str,
        request: RequestInfo,
        progress: ProgressCallback | None = None,
        seed: int | None = None,
        choose_bounds: tuple[str, ...] | None = None,
    ) -> PublishResult:
        """Build and publish the next version from the staged practices (publishing.py),
        then delete versions past `keep_versions` that no query reads.

        `seed` fixes the rank hash that chooses each patient's rows (None: a fresh random
        one); either way it is recorded in the manifest, so a version can be rebuilt.

        `choose_bounds` names the bounds this publish chooses privately, in place of the
        dataset's `chosen_bounds` setting (an empty tuple: none; None: the setting's), with
        the setting's level and spend (bound_choice.BoundChoicePolicy's defaults for a
        dataset without one).

        The governance lock is held only while the inputs are captured (the staged files
        are snapshotted) and while the version is sealed, so uploads and consent changes
        go on during a long publish; `progress` hears of every step.

        Raises:
            GovernanceError: PUBLISH_IN_PROGRESS (another publish of the dataset is
                running), STORAGE_FULL, CONSENT_CHANGED, KEY_MISMATCH; nothing published.
        """
        current = self._store.current(dataset_id)
        self.refresh_opt_outs()
        self._require_same_key(current)
        try:
            with self._store.building(dataset_id):
                result = self._build_and_seal(dataset_id, request, progress, seed, choose_bounds)
        except BuildInProgressError:
            raise publish_in_progress(dataset_id) from None
        figure = result.bias_figure
        said = ""
        if figure is not None:
            said = (
                "; bias figure released" if figure.released else f"; no bias figure: {figure.note}"
            )
        self._record(
            request,
            dataset_id,
            f"published {result.version.version} from {current.version}: {result.practices} "
            f"practices ({len(result.staged_practices)} from uploads), "
            f"{len(result.withdrawn_practices)} withdrawn{_bound_choice_said(result)}{said}",
        )
        self.retire_old_versions(dataset_id)
        return result

    def retire_old_versions(self, dataset_id: str) -> None:
        """Delete versions past `keep_versions` that no query reads (logged; never raises
        for a version it cannot delete: the next sweep tries again)."""
        try:
            swept = retire_old_versions(
                self._store, self._leases, dataset_id, self.policy.keep_versions
            )
        except OSError as exc:
            _log.warning("could not delete old versions of %s: %s", dataset_id, exc)
            return
        if swept.deleted:
            _log.info("deleted old versions of %s: %s", dataset_id, ", ".join(swept.deleted))
        if swept.in_use:
            _log.info(
                "kept old versions of %s that queries are reading: %s",
                dataset_id,
                ", ".join(swept.in_use),
            )

    def _build_and_seal(
        self,
        dataset_id: str,
        request: RequestInfo,
        progress: ProgressCallback | None,
        seed: int | None,
        choose_bounds: tuple[str, ...] | None = None,
    ) -> PublishResult:
        """Capture the inputs and start the build under the governance lock, run it without
        the lock, seal it under the lock (hold the dataset's build lock)."""
        with self._locked(dataset_id):
            current = self._store.current(dataset_id)
            staging = StagingArea(self._folder(dataset_id))
            staging.clean()
            # No purge of the staged files here: loading a list purges them already, and
            # the publish drops opted-out patients' rows itself.
            opted_out = self._opt_outs.keys()
            self._require_staged_key(staging)
            declared = self._declared(dataset_id, current)
            inputs = PublishInputs(
                current,
                declared,
                self._withdrawn(dataset_id, declared),
                staging,
                opted_out,
                key_id(self._key),
                seed=seed,
                memory_bytes=self.policy.publish_memory_bytes,
                period_bounds=self.policy.period_bounds.get(dataset_id),
                bound_choice=self._bound_choice(dataset_id, choose_bounds),
                bias_figure=self.policy.bias_figure,
                ledger=self._spends,
                request=request,
            )
            build = PublishBuild.start(self._store, inputs)
        try:
            build.run(progress)
            with self._locked(dataset_id):
                self._require_no_new_withdrawal(dataset_id, declared, build)
                return build.seal()
        except BaseException:
            build.discard()
            raise

    def _bound_choice(
        self, dataset_id: str, choose_bounds: tuple[str, ...] | None
    ) -> BoundChoicePolicy | None:
        """The choice this publish makes: the setting's, or `choose_bounds` with the
        setting's (or the default) level and spend; None when no bound is chosen."""
        policy = self.policy.chosen_bounds.get(dataset_id)
        if choose_bounds is not None:
            try:
                policy = dataclasses.replace(policy or BoundChoicePolicy(), bounds=choose_bounds)
            except ValueError as exc:
                raise GovernanceError(ErrorReason.BAD_VALUE, str(exc)) from None
        return policy if policy is not None and policy.bounds else None

    def _withdrawn(self, dataset_id: str, declared: pl.DataFrame) -> frozenset[str]:
        """Practices left out: withdrawn, or (opt-in datasets) never granted."""
        records = self._consent(dataset_id).records()
        withdrawn = frozenset(
            code for code, record in records.items() if record.state is ConsentState.WITHDRAWN
        )
        if dataset_id not in self.policy.granted_by_default:
            granted = {c for c, r in records.items() if r.state is ConsentState.GRANTED}
            withdrawn |= frozenset(declared.get_column("practice_code").to_list()) - granted
        return withdrawn

    def _require_no_new_withdrawal(
        self, dataset_id: str, declared: pl.DataFrame, build: PublishBuild
    ) -> None:
        """Refuse to seal a version holding a practice that withdrew while it was built
        (hold the lock): a withdrawal excludes the practice from every later version."""
        withdrawn = self._withdrawn(dataset_id, declared) & set(build.included_practices)
        if withdrawn:
            raise GovernanceError(
                ErrorReason.CONSENT_CHANGED,
                f"practice(s) {', '.join(sorted(withdrawn))} withdrew consent while the "
                "version was being built; nothing was published: publish again",
            )

    # helpers

    def _folder(self, dataset_id: str) -> Path:
        return self.policy.root / dataset_id

    def _consent(self, dataset_id: str) -> ConsentStore:
        default = (
            ConsentState.GRANTED
            if dataset_id in self.policy.granted_by_default
            else ConsentState.WITHDRAWN
        )
        return ConsentStore(self._folder(dataset_id), default)

    def _locked(self, dataset_id: str) -> contextlib.AbstractContextManager[None]:
        return exclusive_lock(self._folder(dataset_id) / "LOCK")

    def _declared(self, dataset_id: str, current: DatasetVersion) -> pl.DataFrame:
        """The declared practice table, captured from `current` on first use (hold the lock)."""
        return pl.read_parquet(self._declared_path(dataset_id, current))

    def _declared_path(self, dataset_id: str, current: DatasetVersion) -> Path:
        path = self._folder(dataset_id) / DECLARED_PRACTICES_FILE
        if not path.is_file():
            source = current.public_table_path(PRACTICES_TABLE)
            replace_with(path, lambda temporary: shutil.copyfile(source, temporary))
        return path

    def _require_known(self, dataset_id: str, current: DatasetVersion, practice_code: str) -> None:
        declared = pl.scan_parquet(self._declared_path(dataset_id, current))
        # one column, filtered as it is read: a national table is read for every upload
        found = declared.filter(pl.col("practice_code") == practice_code).select(pl.len())
        if not found.collect().item():
            raise GovernanceError(
                ErrorReason.UNKNOWN_PRACTICE,
                f"practice {practice_code!r} is not in the practice table of {dataset_id}",
                {"field": "practice_code"},
            )

    def _require_granted(self, dataset_id: str, practice_code: str) -> None:
        if self._consent(dataset_id).state(practice_code) is not ConsentState.GRANTED:
            raise GovernanceError(
                ErrorReason.CONSENT_WITHDRAWN,
                f"practice {practice_code} has not granted consent for {dataset_id}: its "
                "extracts are refused until it grants consent (SetConsent)",
            )

    def _require_same_key(self, current: DatasetVersion) -> None:
        recorded = current.manifest.source.get("key_id")
        if recorded is not None and recorded != key_id(self._key):
            raise GovernanceError(
                ErrorReason.KEY_MISMATCH,
                f"the server's pseudonymisation key is not the one {current.dataset_id} was "
                "built with: its rows would not match; restore the key file, or re-ingest "
                "every practice into a new dataset",
            )

    def _require_staged_key(self, staging: StagingArea) -> None:
        expected = key_id(self._key)
        for code in staging.practices():
            record = staging.record(code)
            if record is not None and record.key_id != expected:
                raise GovernanceError(
                    ErrorReason.KEY_MISMATCH,
                    f"practice {code}'s staged rows were keyed with another pseudonymisation "
                    "key; it must upload again",
                )

    def _purge_all(self) -> None:
        """Remove newly opted-out patients' rows from every dataset's staging."""
        keys = self._opt_outs.keys()
        root = self.policy.root
        for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            staging = StagingArea(folder)
            if not staging.practices():
                continue
            with self._locked(folder.name):
                staging.purge(keys)

    def _record(self, request: RequestInfo, dataset_id: str | None, detail: str) -> None:
        self._audit.record_event(request, Outcome.ANSWERED, dataset_id=dataset_id, detail=detail)


def publish_in_progress(dataset_id: str) -> GovernanceError:
    """The refusal of a publish while another publish of the dataset is running."""
    return GovernanceError(
        ErrorReason.PUBLISH_IN_PROGRESS,
        f"a version of {dataset_id} is being published right now; wait for it to finish "
        "(its new version becomes current), then publish again if more uploads arrived",
    )


def extract_too_large(size: int, limit: int) -> GovernanceError:
    """The refusal of an extract over the size limit (raised as soon as it is known)."""
    return GovernanceError(
        ErrorReason.EXTRACT_TOO_LARGE,
        f"the extract is {'at least ' if size > limit else ''}{size:,} bytes, over the limit of "
        f"{limit:,} bytes; nothing was staged (the operator sets the limit: "
        "governance.max_upload_bytes)",
        {"limit_bytes": str(limit)},
    )


def authorise(principal: Principal | None, practice_code: str, *, uploading: bool) -> None:
    """Refuse unless the caller may act for `practice_code`.

    Providers act only for the practices their token is bound to; administrators may
    record consent and read status for any practice but never upload; None is the local
    operator (the command line on the server). A refusal names the token's practices and
    the one asked for, so the caller knows which token to use instead.
    """
    if principal is None:
        return
    if principal.role is Role.PROVIDER and practice_code in principal.practice_codes:
        return
    if principal.role is Role.ADMIN and not uploading:
        return
    raise GovernanceError(
        ErrorReason.PRACTICE_FORBIDDEN,
        practice_refusal(principal, practice_code, uploading=uploading),
        {"practice_code": practice_code},
    )


def practice_refusal(principal: Principal, practice_code: str, *, uploading: bool) -> str:
    """Why `principal` may not act for `practice_code`, and which token to use instead."""
    subject = "the extract" if uploading else "the request"
    role = principal.role.value
    if principal.role is not Role.PROVIDER:
        article = "an" if role[0] in "aeiou" else "a"
        action = "upload extracts" if uploading else "act for a practice"
        return (
            f"{article} {role} token may not {action}; {subject} is for {practice_code}: "
            "use a provider token bound to that practice"
        )
    codes = sorted(principal.practice_codes)
    if not codes:
        return (
            f"this provider token is bound to no practice; {subject} is for {practice_code}: "
            "use a token bound to that practice"
        )
    bound = f"practice{'s' if len(codes) > 1 else ''} {', '.join(codes)}"
    action = "upload only for" if uploading else "act only for"
    return (
        f"this token may {action} {bound}; {subject} is for {practice_code}: use a token "
        "bound to that practice"
    )


def _who(principal: Principal | None) -> str:
    return OPERATOR if principal is None else principal.requester_id


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _bound_choice_said(result: PublishResult) -> str:
    """The audit detail's words on bounds chosen privately ("" when none were asked for)."""
    record = result.bound_choice
    if record is None:
        return ""
    if record.choice is None:
        return f"; bounds not chosen privately ({record.note}), the policy's stand"
    values = ", ".join(f"{b.name} {b.value}" for b in record.choice.bounds)
    return f"; bounds chosen privately: {values}"
