"""Building the next dataset version from the staged practices, out of core (DESIGN.md
"Dataset versions", "Growing into a national service").

Which practices a version covers is public policy, never a consequence of which uploads
arrived: it is the dataset's declared practice table minus the practices whose consent is
withdrawn. Those practices are the version's public keys (its `practices` table and the
practice, PCN, sub-ICB, ICB and region value sets of its metadata), whether or not they
have rows, so the key set reveals nothing about the data. A withdrawn practice disappears
from both the rows and the keys; the other public tables are copied unchanged.

Rows of an included practice come from its staged extract if it has one, else they are
carried forward from the current version (the practice's last published rows), so one
practice's upload never empties the others. Memory is bounded by a setting, never by the
data (publish_plan.py), in three passes over the rows:

1. *reading*: practice group by practice group, rows of patients on an opt-out list are
   removed (again: a list may have changed since the rows were staged or published), each
   row gets its keyed rank hash under this version's seed (bounding.row_rank_hashes), and
   the (patient, hash) pairs are filed by patient into buckets (patient_buckets.py);
   If the administrator has bounds chosen privately (bound_choice.py), the declared spend is
   charged to the dataset's cap and the buckets are read once more into per-patient
   histograms, from which OpenDP's quantile chooses the bounds the next passes enforce and
   verify (if the cap cannot pay, the policy's bounds stand);
2. *bounding*: bucket by bucket, every patient over `max_contributions` gets a cut point,
   so a patient registered at two practices is cut across both, keeping the rows of
   lowest hash (uniform, reproducible from the seed, never "first rows"); the patients
   each bound cut are tallied in memory and, as soon as the pass ends, noised into the
   version's bias figure (bias_figure.py), which is charged to the dataset's cap and
   recorded in the manifest when the version is sealed (or withheld, saying why);
3. *writing*: group by group again, the rows beyond each patient's cut are dropped, the
   practice hierarchy is joined from the public practice table, and rows are sorted and
   appended to one file per month, in practice order;

then the files are *verified* (schema, months, practice order, rows per practice as
written, and the bound counted over every file), and sealed: the manifest records the
bound, its verification, its seed and every file's digest, and DatasetStore.publish swaps
the current pointer in one atomic step. Everything is built inside the store's staging
folder: a failure, a full disk or a kill at any point leaves the previous version current
and nothing else visible (DatasetStore.recover clears a killed build's folder at start).

The manifest's `source` deliberately holds no row counts: the engine shows provenance
counts to analysts, and exact counts of the private table are not DP releases.
"""

from __future__ import annotations

import dataclasses
import errno
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dpgate_server.governance.bias_figure import (
    BiasFigurePolicy,
    DroppedTally,
    NoisedFigure,
    noise_tally,
    settle_figure,
)
from dpgate_server.governance.bound_choice import (
    BoundChoicePolicy,
    bucket_frames,
    check_choosable,
    choose_bounds,
    patient_histograms,
)
from dpgate_server.governance.errors import GovernanceError
from dpgate_server.governance.patient_buckets import PERIOD_FIELDS, BucketFiles
from dpgate_server.governance.publish_plan import (
    BYTES_PER_BUCKET_ROW,
    BYTES_PER_PERIOD_BUCKET_ROW,
    PublishPlan,
    plan_publish,
)
from dpgate_server.governance.publish_progress import (
    ProgressCallback,
    ProgressReporter,
    PublishStage,
)
from dpgate_server.governance.publish_sources import (
    STAGED_NAMES,
    PublishSources,
    count_carried_rows,
    snapshot_staged,
    staged_rows,
)
from dpgate_server.governance.publish_spends import (
    DeclaredSpend,
    PublishSpendLedger,
    charge_declared_spend,
)
from dpgate_server.governance.staging import StagingArea
from dpgate_server.ledger.model import RequestInfo
from dpgate_server.store.appointment_files import APPOINTMENTS_SCHEMA, write_table
from dpgate_server.store.bounding import (
    KEYED_HASH_BOUND_METHOD,
    KEYED_HASH_PERIOD_BOUND_METHOD,
    LabelCodes,
    cut_points,
    keep_mask,
    verify_bound,
)
from dpgate_server.store.chosen_bounds import ChosenBoundsRecord, policy_values
from dpgate_server.store.coded_rows import CodedRows, Labels
from dpgate_server.store.metadata import DatasetMetadata
from dpgate_server.store.month_table_files import MonthTableFiles
from dpgate_server.store.period_bounding import PATIENT, PRIORITY, cut_steps, period_cut
from dpgate_server.store.period_bounds import PeriodBounds
from dpgate_server.store.publish_records import BiasFigure, PublishSpendRecord
from dpgate_server.store.store import (
    ContributionBound,
    DatasetStore,
    DatasetVersion,
    PublishRecords,
    VersionBuilder,
)
from dpgate_server.store.verification import (
    check_months_and_order,
    check_rows_per_practice,
    check_schema,
)
from dpgate_server.vocabulary.errors import DatasetNotFoundError, ErrorReason

PUBLISHER = "dpgate governance"
PRACTICES_TABLE = "practices"
HIERARCHY_COLUMNS: tuple[str, ...] = ("pcn_code", "sub_icb_code", "icb_code", "region_code")
"""Columns of the practice table copied into every row (groupable public keys)."""
LINEAGE_KEYS: tuple[str, ...] = ("generator", "model_version", "seed", "practices")
"""Source fields carried over from the base version, so the demo's start-up check
(generator.ensure_demo_dataset) recognises a version derived from the demo and does not
generate a fresh one over the published practices' data."""
DEFAULT_MEMORY_BYTES = 4 * 1024**3
"""The memory setting's default: fits beside the server and its query workers on a
2-core, 24 GiB machine."""
OPERATOR_PUBLISH = RequestInfo(request_id="publish", rpc="PublishDatasetVersion")
"""The request a publish is audited under when its caller names none (an offline tool)."""
BOUND_CHOICE = "bound_choice"
"""The purpose a choice of bounds is charged under."""
_MAX_ROWS_CEILING = 4_294_967_295
_STORAGE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(frozen=True, slots=True)
class PublishInputs:
    """Everything a new version is built from.

    Attributes:
        base: the current version (metadata, public tables, rows carried forward).
        declared_practices: the dataset's declared practice table (public policy).
        withdrawn: practices whose consent is withdrawn.
        staging: the staged practices' rows.
        opted_out: opted-out patient keys (column patient_key).
        key_id: fingerprint of the pseudonymisation key of every row.
        seed: the rank-hash seed (None: a fresh random one); recorded in the manifest.
        memory_bytes: the memory the build may use for rows (publish_plan.py).
        period_bounds: the dataset's per-period bounds policy (config
            publishing.period_bounds); None keeps the base version's policy (its chosen
            values never carry over: policy_metadata).
        bound_choice: the bounds to choose privately, in place of the policy's
            (governance/bound_choice.py); None keeps the policy's (the total K is the
            dataset's declared one, policy_metadata).
        bias_figure: the bias figure's settings (config publishing.bias_figure); None
            releases none and records nothing about one.
        ledger: what charges publish-time spends (a choice of bounds, the bias figure) to
            the dataset's cap (None: nothing can be charged, so nothing is chosen or
            released).
        request: the publish's request, for the charge's audit event.
    """

    base: DatasetVersion
    declared_practices: pl.DataFrame
    withdrawn: frozenset[str]
    staging: StagingArea
    opted_out: pl.DataFrame
    key_id: str
    seed: int | None = None
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    period_bounds: PeriodBounds | None = None
    bound_choice: BoundChoicePolicy | None = None
    bias_figure: BiasFigurePolicy | None = None
    ledger: PublishSpendLedger | None = None
    request: RequestInfo = field(default_factory=lambda: OPERATOR_PUBLISH)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The new version and what went into it (counts are for the operator, never analysts)."""

    version: DatasetVersion
    practices: int
    staged_practices: tuple[str, ...]
    carried_forward: int
    withdrawn_practices: tuple[str, ...]
    rows: int
    rows_opted_out: int
    rows_cut_by_bound: int
    bound_choice: ChosenBoundsRecord | None = None
    """What the publish did about choosing bounds privately (None: it was not asked to)."""
    bias_figure: BiasFigure | None = None
    """The version's bias figure as its manifest records it (released, or why not)."""


@dataclass(frozen=True, slots=True)
class _Built:
    """What `PublishBuild.run` produced, ready to seal."""

    bound: ContributionBound
    rows_read: int
    rows_opted_out: int
    rows_written: int
    figure: NoisedFigure | str | None = None
    """The bias figure noised (not yet paid for), why it could not be, or None when no
    figure is wanted."""


def publish_version(
    store: DatasetStore, inputs: PublishInputs, progress: ProgressCallback | None = None
) -> PublishResult:
    """Build, verify and publish the next version in one call (the caller holds whatever
    locks keep the inputs still); see the module docstring for the steps."""
    build = PublishBuild.start(store, inputs)
    try:
        build.run(progress)
        return build.seal()
    except BaseException:
        build.discard()
        raise


class PublishBuild:
    """One version being built: `start` under the governance lock (it snapshots the staged
    files), `run` without it (uploads go on meanwhile), `seal` under it again."""

    def __init__(
        self,
        store: DatasetStore,
        inputs: PublishInputs,
        builder: VersionBuilder,
        included: pl.DataFrame,
        staged: tuple[str, ...],
        carried: tuple[str, ...],
        snapshots: dict[str, Path],
    ) -> None:
        self._store = store
        self._inputs = inputs
        self._builder = builder
        self._included = included
        self.staged = staged
        self.carried = carried
        self._snapshots = snapshots
        self.seed = inputs.seed if inputs.seed is not None else secrets.randbits(63)
        self._built: _Built | None = None
        self.bound_choice: ChosenBoundsRecord | None = None
        """What `run` did about choosing bounds privately (None: not asked to)."""
        self._spends: list[PublishSpendRecord] = []
        self._charged_as: str | None = None
        """The version name the spends were charged under (the one sealed)."""

    @classmethod
    def start(cls, store: DatasetStore, inputs: PublishInputs) -> PublishBuild:
        """Decide the practices and snapshot the staged files into a new staging folder."""
        included = inputs.declared_practices.filter(
            ~pl.col("practice_code").is_in(sorted(inputs.withdrawn))
        )
        codes = set(included.get_column("practice_code").to_list())
        staged = tuple(c for c in inputs.staging.practices() if c in codes)
        carried = tuple(sorted(codes - set(staged)))
        metadata = metadata_for(policy_metadata(inputs.base), included, inputs.period_bounds)
        if inputs.bound_choice is not None:
            try:
                check_choosable(inputs.bound_choice.bounds, metadata.period_bounds)
            except ValueError as exc:
                raise GovernanceError(ErrorReason.BAD_VALUE, str(exc)) from None
        builder = store.begin_version(metadata)
        try:
            paths = {code: inputs.staging.path(code) for code in staged}
            snapshots = snapshot_staged(paths, builder.work_dir / "staged")
        except BaseException:
            builder.discard()
            raise
        return cls(store, inputs, builder, included, staged, carried, snapshots)

    @property
    def included_practices(self) -> tuple[str, ...]:
        return tuple(self._included.get_column("practice_code").to_list())

    def run(self, progress: ProgressCallback | None = None) -> None:
        """Passes 1-3 and the checks; raises GovernanceError STORAGE_FULL on a full disk."""
        try:
            self._built = self._run(ProgressReporter(progress))
        except OSError as exc:
            if _is_storage_full(exc):
                raise storage_full(self._store.root) from exc
            raise

    def seal(self) -> PublishResult:
        """Make the built version current (hold the governance lock)."""
        if self._built is None:
            raise RuntimeError("run the build before sealing it")
        name = self._charged_as or self._store.next_version_name(self._builder.dataset_id)
        figure = self._publish_records(name)
        records = PublishRecords(
            spends=(*self._spends, *figure.spends),
            chosen_bounds=self.bound_choice,
            bias_figure=figure.bias_figure,
        )
        try:
            version = self._store.publish(
                self._builder, self._built.bound, self._source(), records, expected_version=name
            )
        except OSError as exc:
            if _is_storage_full(exc):
                raise storage_full(self._store.root) from exc
            raise
        inputs = self._inputs
        declared = set(inputs.declared_practices.get_column("practice_code").to_list())
        built = self._built
        return PublishResult(
            version=version,
            practices=self._included.height,
            staged_practices=self.staged,
            carried_forward=len(self.carried),
            withdrawn_practices=tuple(sorted(inputs.withdrawn & declared)),
            rows=built.rows_written,
            rows_opted_out=built.rows_opted_out,
            rows_cut_by_bound=built.rows_read - built.rows_opted_out - built.rows_written,
            bound_choice=self.bound_choice,
            bias_figure=records.bias_figure,
        )

    def _publish_records(self, version: str) -> PublishRecords:
        """The bias figure, paid for by the dataset's cap under `version`'s name, or why
        there is none (hold the locks: the name is the one `publish` gives)."""
        built, inputs = self._built, self._inputs
        policy = inputs.bias_figure
        if built is None or policy is None:
            return PublishRecords()
        if not policy.enabled:
            note = "turned off by the administrator (publishing.bias_figure.enabled)"
            return PublishRecords(bias_figure=BiasFigure.withheld(note))
        if not isinstance(built.figure, NoisedFigure):
            return PublishRecords(bias_figure=BiasFigure.withheld(str(built.figure)))
        metadata = self._builder.metadata
        record = charge_declared_spend(
            inputs.ledger,
            metadata.dataset_id,
            version,
            policy.declared(metadata.accounting),
            inputs.request,
        )
        return PublishRecords(spends=(record,), bias_figure=settle_figure(built.figure, record))

    def discard(self) -> None:
        self._builder.discard()

    # the passes

    def _run(self, reporter: ProgressReporter) -> _Built:
        inputs = self._inputs
        metadata = self._builder.metadata
        base_paths = inputs.base.appointment_paths()
        practice_rows = {code: staged_rows(path) for code, path in self._snapshots.items()}
        practice_rows |= count_carried_rows(base_paths, frozenset(self.carried))
        periods = metadata.period_bounds
        plan = plan_publish(
            practice_rows,
            inputs.memory_bytes,
            bucket_row_bytes=BYTES_PER_PERIOD_BUCKET_ROW if periods else BYTES_PER_BUCKET_ROW,
        )
        sources = PublishSources(self._snapshots, frozenset(self.carried), base_paths)
        opted_out = np.unique(inputs.opted_out.get_column("patient_key").to_numpy())
        labels = Labels()
        codes = LabelCodes(self.seed)
        work = self._builder.work_dir
        read, removed = _file_ranks(
            sources, plan, opted_out, labels, codes, work, reporter, with_periods=bool(periods)
        )
        if inputs.bound_choice is not None:
            self.bound_choice = self._choose_bounds(inputs.bound_choice, plan)
            metadata = self._builder.metadata  # the chosen bounds, if any, from here on
            periods = metadata.period_bounds
        policy = inputs.bias_figure
        wanted = policy is not None and policy.enabled
        tally = DroppedTally(cut_steps(metadata.max_contributions, periods)) if wanted else None
        if periods:
            _cut_period_buckets(plan, metadata.max_contributions, periods, work, reporter, tally)
        else:
            _cut_buckets(plan, metadata.max_contributions, work, reporter, tally)
        # The exact counts are noised at once and dropped: only the noisy figure is kept.
        figure: NoisedFigure | str | None = None
        if tally is not None and policy is not None:
            figure = noise_tally(tally, metadata.accounting, policy)
        del tally
        months = [str(m) for m in (_column_values(metadata, "month"))]
        paths = [self._builder.appointments_path(month) for month in months]
        written = _write_months(
            sources, plan, opted_out, labels, codes, work, self._included, months, paths, reporter
        )
        shutil.rmtree(work, ignore_errors=True)
        _write_public_tables(self._builder, inputs.base, self._included)
        bound = _verify(paths, months, written, metadata, self.seed, plan, reporter)
        return _Built(bound, read, removed, sum(written.values()), figure)

    def _choose_bounds(self, policy: BoundChoicePolicy, plan: PublishPlan) -> ChosenBoundsRecord:
        """Between passes 1 and 2: charge the choice's declared spend to the dataset's cap,
        then choose the bounds by OpenDP's quantile over the patients' buckets
        (governance/bound_choice.py) and have the builder's metadata enforce them (pass 2 cuts
        to them, the files are verified against them). If the cap cannot pay, nothing is
        chosen and the policy's bounds stand; the record says why."""
        metadata = self._builder.metadata
        settings = policy.settings(metadata.accounting)
        periods = metadata.period_bounds
        known = policy_values(metadata.max_contributions, periods)
        record = ChosenBoundsRecord(
            settings.bounds, settings.spend_units, {name: known[name] for name in settings.bounds}
        )
        declared = DeclaredSpend(
            BOUND_CHOICE, metadata.accounting, settings.spend_units, policy.max_per_version
        )
        self._charged_as = self._store.next_version_name(metadata.dataset_id)
        try:
            paid = charge_declared_spend(
                self._inputs.ledger,
                metadata.dataset_id,
                self._charged_as,
                declared,
                self._inputs.request,
            )
        except DatasetNotFoundError:  # a ledger without the dataset has no cap to pay
            paid = PublishSpendRecord(
                BOUND_CHOICE,
                metadata.accounting,
                declared.units,
                charged=False,
                note=f"the ledger has no cap for {metadata.dataset_id}: nothing charged",
            )
        self._spends.append(paid)
        if not paid.charged:
            return dataclasses.replace(record, note=paid.note)
        buckets = BucketFiles(
            self._builder.work_dir / "buckets", plan.buckets, with_periods=bool(periods)
        )
        histograms = patient_histograms(
            bucket_frames(buckets), settings.bounds, settings.max_candidate
        )
        calendar = {period: len(_column_values(metadata, period)) for period in settings.periods}
        choice = choose_bounds(histograms, settings, metadata.accounting, calendar)
        total, bounds = choice.apply(metadata.max_contributions, periods)
        self._builder.metadata = metadata_for(
            dataclasses.replace(metadata, max_contributions=total), self._included, bounds
        )
        return dataclasses.replace(record, choice=choice)

    def _source(self) -> dict[str, Any]:
        inputs = self._inputs
        base_source = inputs.base.manifest.source
        lineage = {k: base_source[k] for k in LINEAGE_KEYS if k in base_source}
        declared = set(inputs.declared_practices.get_column("practice_code").to_list())
        return {
            **lineage,
            "publisher": PUBLISHER,
            "based_on": inputs.base.version,
            "key_id": inputs.key_id,
            "practice_count": self._included.height,
            "staged_practices": list(self.staged),
            "carried_forward_practices": len(self.carried),
            "withdrawn_practices": sorted(inputs.withdrawn & declared),
        }


def _file_ranks(
    sources: PublishSources,
    plan: PublishPlan,
    opted_out: npt.NDArray[np.int64],
    labels: Labels,
    codes: LabelCodes,
    work: Path,
    reporter: ProgressReporter,
    *,
    with_periods: bool = False,
) -> tuple[int, int]:
    """Pass 1: every kept row's (patient, rank hash) into its patient's bucket (with the
    row's practice, week and month codes when the dataset has per-period bounds).

    Returns rows read and rows of opted-out patients (for the operator's result)."""
    total = sum(len(g.codes) for g in plan.groups)
    done = read = removed = 0
    reporter.report(PublishStage.READING, 0, total, "practices")
    with BucketFiles(work / "buckets", plan.buckets, with_periods=with_periods) as buckets:
        for group, rows in sources.groups(plan.groups, labels):
            read += rows.num_rows
            patient = rows.column("patient_key")
            kept = ~_listed(patient, opted_out)
            removed += int(rows.num_rows - kept.sum())
            ranks = rows.rank_values(STAGED_NAMES, labels, codes)
            period_codes = (
                {name: rows.column(name)[kept] for name in PERIOD_FIELDS} if with_periods else None
            )
            buckets.append(patient[kept], ranks[kept], period_codes)
            done += len(group.codes)
            reporter.report(PublishStage.READING, done, total, "practices")
    return read, removed


def _cut_buckets(
    plan: PublishPlan,
    max_contributions: int,
    work: Path,
    reporter: ProgressReporter,
    tally: DroppedTally | None = None,
) -> None:
    """Pass 2: the cut points of every patient over the bound, one file per bucket (and the
    patients cut, into `tally`)."""
    buckets = BucketFiles(work / "buckets", plan.buckets)
    folder = work / "cut"
    folder.mkdir(exist_ok=True)
    reporter.report(PublishStage.BOUNDING, 0, plan.buckets, "buckets")
    for bucket in range(plan.buckets):
        patient, prefix = buckets.read(bucket)
        cut = cut_points(patient, prefix, max_contributions).frame
        del patient, prefix
        if tally is not None:
            tally.add_total(cut.height)  # one row per patient over the bound
        if cut.height:
            pq.write_table(cut.to_arrow(), folder / f"{bucket:05d}.parquet")
        buckets.remove(bucket)
        reporter.report(PublishStage.BOUNDING, bucket + 1, plan.buckets, "buckets")


def _cut_period_buckets(
    plan: PublishPlan,
    max_contributions: int,
    bounds: PeriodBounds,
    work: Path,
    reporter: ProgressReporter,
    tally: DroppedTally | None = None,
) -> None:
    """Pass 2 with per-period bounds: per bucket, the rows each patient drops under K and
    the period bounds (store.period_bounding, in keyed-hash order), filed as how many rows
    of each (patient, rank hash) are dropped (rows with equal hashes are identical, so which
    of them goes never matters)."""
    buckets = BucketFiles(work / "buckets", plan.buckets, with_periods=True)
    folder = work / "drop"
    folder.mkdir(exist_ok=True)
    reporter.report(PublishStage.BOUNDING, 0, plan.buckets, "buckets")
    for bucket in range(plan.buckets):
        rows = buckets.read_rows(bucket)
        frame = pl.DataFrame(
            {
                PATIENT: rows["patient_key"],
                PRIORITY: rows["rank"],
                **{name: rows[name] for name in PERIOD_FIELDS},
            }
        )
        del rows
        cut = period_cut(frame, max_contributions, bounds)
        keep = cut.keep
        if tally is not None:
            tally.add(cut.patients_cut)
        dropped = (
            frame.filter(~keep).group_by(PATIENT, PRIORITY).agg(dropped=pl.len().cast(pl.UInt32))
        )
        del frame
        if dropped.height:
            pq.write_table(
                dropped.rename({PRIORITY: "rank"}).sort(PATIENT).to_arrow(),
                folder / f"{bucket:05d}.parquet",
            )
        buckets.remove(bucket)
        reporter.report(PublishStage.BOUNDING, bucket + 1, plan.buckets, "buckets")


def _write_months(
    sources: PublishSources,
    plan: PublishPlan,
    opted_out: npt.NDArray[np.int64],
    labels: Labels,
    codes: LabelCodes,
    work: Path,
    included: pl.DataFrame,
    months: Sequence[str],
    paths: Sequence[Path],
    reporter: ProgressReporter,
) -> dict[str, int]:
    """Pass 3: kept rows with their hierarchy, sorted, into the month files.

    Returns the rows written per practice (checked against the files afterwards)."""
    cut_files = sorted((work / "cut").glob("*.parquet"))
    drop_files = sorted((work / "drop").glob("*.parquet"))
    hierarchy = _Hierarchy.of(included)
    month_index = {month: i for i, month in enumerate(months)}
    written = np.zeros(0, dtype=np.int64)
    total = sum(len(g.codes) for g in plan.groups)
    done = 0
    reporter.report(PublishStage.WRITING, 0, total, "practices")
    files = MonthTableFiles(paths, labels)
    try:
        for group, rows in sources.groups(plan.groups, labels):
            patient = rows.column("patient_key")
            kept = ~_listed(patient, opted_out)
            if drop_files:
                kept &= ~_dropped_rows(rows, patient, kept, drop_files, labels, codes)
            else:
                kept &= ~_beyond_cut(rows, patient, kept, cut_files, labels, codes)
            for month, part in _month_parts(rows, kept, hierarchy, month_index, labels):
                practice = part.column("practice_code")
                counts = np.bincount(practice, minlength=len(labels.labels("practice_code")))
                written = np.pad(written, (0, counts.size - written.size)) + counts
                files.append(month, part)
            done += len(group.codes)
            reporter.report(PublishStage.WRITING, done, total, "practices")
    finally:
        files.close()
    practice_labels = labels.labels("practice_code")
    return {str(practice_labels[i]): int(written[i]) for i in np.flatnonzero(written).tolist()}


def _verify(
    paths: Sequence[Path],
    months: Sequence[str],
    written: dict[str, int],
    metadata: DatasetMetadata,
    seed: int,
    plan: PublishPlan,
    reporter: ProgressReporter,
) -> ContributionBound:
    """The checks of store.verification, then the bound counted over every file."""
    checks = 4
    reporter.report(PublishStage.VERIFYING, 0, checks, "checks")
    check_schema(paths)
    reporter.report(PublishStage.VERIFYING, 1, checks, "checks")
    check_months_and_order(dict(zip(months, paths, strict=True)))
    reporter.report(PublishStage.VERIFYING, 2, checks, "checks")
    check_rows_per_practice(paths, written)
    reporter.report(PublishStage.VERIFYING, 3, checks, "checks")
    periods = metadata.period_bounds
    bound = verify_bound(
        paths,
        metadata.max_contributions,
        method=KEYED_HASH_PERIOD_BOUND_METHOD if periods else KEYED_HASH_BOUND_METHOD,
        seed=seed,
        # the period counts group by practice and period too: a quarter of the rows a pass
        rows_per_pass=max(1, plan.verify_rows_per_pass // 4)
        if periods
        else plan.verify_rows_per_pass,
        period_bounds=periods or None,
    )
    reporter.report(PublishStage.VERIFYING, 4, checks, "checks")
    return bound


# row operations


def _listed(
    patient: npt.NDArray[np.int64], opted_out: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Which rows belong to patients in `opted_out` (sorted, distinct)."""
    if opted_out.size == 0:
        return np.zeros(patient.size, dtype=np.bool_)
    position = np.minimum(np.searchsorted(opted_out, patient), opted_out.size - 1)
    listed: npt.NDArray[np.bool_] = opted_out[position] == patient
    return listed


def _beyond_cut(
    rows: CodedRows,
    patient: npt.NDArray[np.int64],
    kept: npt.NDArray[np.bool_],
    cut_files: Sequence[Path],
    labels: Labels,
    codes: LabelCodes,
) -> npt.NDArray[np.bool_]:
    """Which of the `kept` rows lie beyond their patient's cut point (pass 2's files)."""
    beyond = np.zeros(patient.size, dtype=np.bool_)
    if not cut_files or patient.size == 0:
        return beyond
    frame = pl.DataFrame({"patient_key": patient, "kept": kept}).with_row_index("row")
    cut = pl.scan_parquet([str(p) for p in cut_files])
    hits = frame.lazy().filter("kept").join(cut, on="patient_key", how="inner").collect()
    if hits.height == 0:
        return beyond
    affected = hits.get_column("row").to_numpy().astype(np.int64)
    ranks = rows.take(affected).rank_values(STAGED_NAMES, labels, codes)
    per_patient = hits.select("patient_key", "threshold", "kept_at_threshold").unique()
    beyond[affected] = ~keep_mask(patient[affected], ranks, per_patient)
    return beyond


def _dropped_rows(
    rows: CodedRows,
    patient: npt.NDArray[np.int64],
    kept: npt.NDArray[np.bool_],
    drop_files: Sequence[Path],
    labels: Labels,
    codes: LabelCodes,
) -> npt.NDArray[np.bool_]:
    """Which of the `kept` rows the per-period cut drops (`_cut_period_buckets`' files):
    of the rows of one patient with one rank hash, the first `dropped`."""
    out = np.zeros(patient.size, dtype=np.bool_)
    if patient.size == 0:
        return out
    frame = pl.DataFrame({PATIENT: patient, "kept": kept}).with_row_index("row")
    drops = pl.scan_parquet([str(p) for p in drop_files])
    affected_patients = drops.select(PATIENT).unique()
    hits = frame.lazy().filter("kept").join(affected_patients, on=PATIENT, how="semi").collect()
    if hits.height == 0:
        return out
    affected = hits.get_column("row").to_numpy().astype(np.int64)
    ranked = pl.DataFrame(
        {
            "row": affected,
            PATIENT: patient[affected],
            "rank": rows.take(affected).rank_values(STAGED_NAMES, labels, codes),
        }
    )
    matched = ranked.lazy().join(drops, on=[PATIENT, "rank"], how="inner").collect()
    ordinal = pl.int_range(pl.len()).over(PATIENT, "rank")
    gone = matched.sort("row").filter(ordinal < pl.col("dropped")).get_column("row")
    out[gone.to_numpy()] = True
    return out


@dataclass(frozen=True, slots=True)
class _Hierarchy:
    """Each practice's hierarchy codes, for building the columns from practice codes."""

    values: dict[str, dict[str, str]]
    """column -> practice code -> value."""

    @staticmethod
    def of(practices: pl.DataFrame) -> _Hierarchy:
        codes = practices.get_column("practice_code").to_list()
        return _Hierarchy(
            {
                name: dict(zip(codes, practices.get_column(name).to_list(), strict=True))
                for name in HIERARCHY_COLUMNS
            }
        )

    def codes(self, labels: Labels, used: Any) -> dict[str, npt.NDArray[np.int32]]:
        """Per hierarchy column, the code (in `labels`) of each practice code's value.

        A dictionary may list practices without rows; every practice with rows (codes
        `used`) must be in the table."""
        practices = [str(p) for p in labels.labels("practice_code")]
        known = self.values[HIERARCHY_COLUMNS[0]]
        unknown = sorted(
            practices[i] for i in np.unique(used).tolist() if practices[i] not in known
        )
        if unknown:
            raise ValueError(f"rows of practices outside the version: {', '.join(unknown[:3])}")
        return {
            name: labels.codes_of(name, [values.get(p, "") for p in practices])
            for name, values in self.values.items()
        }


def _month_parts(
    rows: CodedRows,
    kept: npt.NDArray[np.bool_],
    hierarchy: _Hierarchy,
    month_index: dict[str, int],
    labels: Labels,
) -> Iterator[tuple[int, CodedRows]]:
    """The `kept` rows in the version's columns, month by month (index into the months),
    each sorted by practice, date, hour and patient. One month's sorted copy at a time."""
    month_labels = [str(m) for m in labels.labels("month")]
    month_of_code = np.array([month_index.get(m, -1) for m in month_labels], dtype=np.int64)
    month = month_of_code[rows.column("month")] if month_labels else np.zeros(0, np.int64)
    outside = kept & (month < 0)
    if outside.any():
        shown = sorted({month_labels[c] for c in rows.column("month")[outside][:100].tolist()})
        raise ValueError(f"rows dated outside the dataset's months: {', '.join(shown[:3])}")
    practice = rows.column("practice_code")
    practice_labels = [str(p) for p in labels.labels("practice_code")]
    by_label = sorted(range(len(practice_labels)), key=practice_labels.__getitem__)
    practice_rank = np.empty(len(practice_labels), dtype=np.int64)
    practice_rank[by_label] = np.arange(len(by_label))
    hierarchy_codes = hierarchy.codes(labels, practice[kept])
    # practice, date and hour in one integer (28 + 20 + 8 bits), then the patient
    days = rows.column("appointment_date").astype(np.int64)
    if days.size:
        days = days - days.min()  # the group's first day is 0, so later days stay positive
    hour = rows.column("hour").astype(np.int64) & 0xFF
    position = (practice_rank[practice] << 28) | (days << 8) | hour
    patient = rows.column("patient_key")
    for index in np.unique(month[kept]).tolist():
        chosen = np.flatnonzero((month == index) & kept)
        order = chosen[np.lexsort((patient[chosen], position[chosen]))]
        part = rows.take(order)
        in_part = part.column("practice_code")
        added = {name: codes[in_part] for name, codes in hierarchy_codes.items()}
        yield index, part.with_columns(added, APPOINTMENTS_SCHEMA.names)


def _column_values(metadata: DatasetMetadata, name: str) -> tuple[Any, ...]:
    spec = metadata.column(name)
    return tuple(spec.values or ()) if spec is not None else ()


# metadata and public tables


def policy_metadata(base: DatasetVersion) -> DatasetMetadata:
    """`base`'s metadata with the bounds its publish chose privately back at the policy's
    values (its manifest's chosen_bounds record keeps them): the administrator's K and
    period caps, where the next publish starts. A chosen bound lasts one version, so turning
    the choice off, or a choice the cap cannot pay, returns to the policy, and the next
    record's policy values are the administrator's, never the last chosen ones."""
    metadata = base.metadata
    record = base.manifest.chosen_bounds
    if record is None:
        return metadata
    total, bounds = record.policy_bounds(metadata.max_contributions, metadata.period_bounds)
    return dataclasses.replace(metadata, max_contributions=total, period_bounds=bounds)


def metadata_for(
    base: DatasetMetadata, practices: pl.DataFrame, period_bounds: PeriodBounds | None = None
) -> DatasetMetadata:
    """`base` with its practice-hierarchy value sets (and row ceiling) from `practices`,
    and `period_bounds` as its per-period bounds policy (None: the base's).

    Values keep the table's order (hierarchy order), as the generator's metadata does.
    """
    columns = []
    for spec in base.columns:
        if spec.key_table == PRACTICES_TABLE and spec.name in practices.columns:
            values = tuple(dict.fromkeys(practices.get_column(spec.name).to_list()))
            columns.append(dataclasses.replace(spec, values=values))
        else:
            columns.append(spec)
    max_rows = base.max_rows
    if "list_size" in practices.columns:
        registered = int(practices.get_column("list_size").sum())
        max_rows = max(1, min(base.max_contributions * registered, _MAX_ROWS_CEILING))
    bounds = base.period_bounds if period_bounds is None else period_bounds
    return dataclasses.replace(
        base, columns=tuple(columns), max_rows=max_rows, period_bounds=bounds
    )


def _write_public_tables(
    builder: VersionBuilder, base: DatasetVersion, practices: pl.DataFrame
) -> None:
    for name in base.metadata.public_tables:
        target = builder.public_table_path(name)
        if name == PRACTICES_TABLE:
            write_table(_as_plain_strings(practices.to_arrow()), target)
        else:
            shutil.copyfile(base.public_table_path(name), target)


def _as_plain_strings(table: pa.Table) -> pa.Table:
    schema = pa.schema(
        [
            pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f
            for f in table.schema
        ]
    )
    return table.cast(schema)


# errors


def _is_storage_full(exc: OSError) -> bool:
    return exc.errno in _STORAGE_FULL or "No space left on device" in str(exc)


def storage_full(store_root: Path) -> GovernanceError:
    """The refusal of a publish that ran out of disk (nothing was published)."""
    return GovernanceError(
        ErrorReason.STORAGE_FULL,
        f"the disk holding the dataset store ({store_root}) filled up during the publish; "
        "nothing was published and its working files were removed. A publish needs room "
        "for about two copies of the version beside the current one: free space (or lower "
        "publishing.keep_versions) and publish again",
    )
