"""A small governance world shared by the governance tests (unit and integration).

Five whole practices of the synthetic model (seed 7), generated once per session, with
raw extracts of the two smallest practices and both opt-out lists. Tests that change
state work on a copy (`copy_world`), so they never see each other's uploads.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from dpgate_server.governance.bias_figure import BiasFigurePolicy
from dpgate_server.governance.optouts import OptOutKind
from dpgate_server.governance.publish_spends import PublishSpendLedger
from dpgate_server.governance.publishing import DEFAULT_MEMORY_BYTES
from dpgate_server.governance.service import Governance, GovernancePolicy
from dpgate_server.ledger.model import Outcome, Principal, RequestInfo, Role
from dpgate_server.store.period_bounds import PeriodBounds
from dpgate_server.store.pseudonym import load_or_create_key, reserved_test_numbers
from dpgate_server.store.store import DatasetStore
from dpgate_server.synthetic.generator import ensure_demo_dataset
from dpgate_server.synthetic.raw_extracts import (
    NATIONAL_OPT_OUT_FILE,
    TYPE1_OPT_OUT_FILE,
    RawExtractFiles,
    write_raw_extracts,
)

PRACTICES = 5
SEED = 7
DATASET_ID = "gp_appointments"
SMALL = "F81144"
"""301 registered patients: ~2,000 raw rows."""
OTHER = "F81146"
"""1,065 registered patients: ~6,500 raw rows."""
UNUSED = "F81145"
"""A practice with no extract in the world (its rows are the generated ones)."""


@dataclass(frozen=True)
class World:
    """A dataset store, its key and raw extracts, all under one folder."""

    root: Path
    store_root: Path
    key_file: Path
    files: RawExtractFiles

    @property
    def governance_root(self) -> Path:
        return self.store_root / ".governance"

    def extract(self, practice: str) -> bytes:
        return self.files.extracts[practice].read_bytes()


def build_world(root: Path) -> World:
    """Generate the dataset and the raw files (about 4 s)."""
    store_root = root / "store"
    key_file = root / "secrets" / "pseudonym.key"
    ensure_demo_dataset(store_root, key_file, PRACTICES, SEED)
    files = write_raw_extracts(root / "extracts", PRACTICES, SEED, only=[SMALL, OTHER])
    return World(root, store_root, key_file, files)


def shared_world(base_temp: Path) -> World:
    """The session's world under `base_temp`, built by whichever test package asks first."""
    root = base_temp / "governance_world"
    ready = root / "READY"
    if not ready.exists():
        shutil.rmtree(root, ignore_errors=True)
        build_world(root)
        ready.touch()
    return world_at(root)


def world_at(root: Path) -> World:
    extracts = root / "extracts"
    files = RawExtractFiles(
        extracts={code: extracts / f"{code}.csv" for code in (SMALL, OTHER)},
        national_opt_out=extracts / NATIONAL_OPT_OUT_FILE,
        type1_opt_out=extracts / TYPE1_OPT_OUT_FILE,
    )
    return World(root, root / "store", root / "secrets" / "pseudonym.key", files)


def copy_world(world: World, root: Path) -> World:
    """An independent copy (store, key, extracts and lists) under `root`."""
    shutil.copytree(world.root, root, dirs_exist_ok=True)
    return world_at(root)


@dataclass
class RecordingAudit:
    """A fake audit chain: keeps every event; can be told to fail."""

    events: list[tuple[RequestInfo, Outcome, dict[str, Any]]] = field(default_factory=list)
    broken: bool = False

    def record_event(self, request: RequestInfo, outcome: Outcome, **kwargs: Any) -> None:
        if self.broken:
            raise RuntimeError("audit chain unavailable")
        self.events.append((request, outcome, kwargs))

    def details(self) -> list[str]:
        return [str(kwargs.get("detail", "")) for _, _, kwargs in self.events]


def open_governance(
    world: World,
    audit: RecordingAudit,
    *,
    max_upload_bytes: int = 64 * 1024 * 1024,
    drops: Mapping[OptOutKind, Path | None] | None = None,
    granted_by_default: Iterable[str] = (DATASET_ID,),
    publish_memory_bytes: int = DEFAULT_MEMORY_BYTES,
    keep_versions: int = 100,
    period_bounds: Mapping[str, PeriodBounds] | None = None,
    bias_figure: BiasFigurePolicy | None = None,
    spends: PublishSpendLedger | None = None,
) -> Governance:
    policy = GovernancePolicy(
        root=world.governance_root,
        max_upload_bytes=max_upload_bytes,
        opt_out_drops=dict(drops or {}),
        granted_by_default=frozenset(granted_by_default),
        publish_memory_bytes=publish_memory_bytes,
        keep_versions=keep_versions,
        period_bounds=dict(period_bounds or {}),
        bias_figure=bias_figure,
    )
    key_file = world.key_file
    return Governance(
        DatasetStore(world.store_root),
        policy,
        lambda: load_or_create_key(key_file),
        audit,
        spends=spends,
    )


def provider(*practices: str) -> RequestInfo:
    principal = Principal("provider-1", Role.PROVIDER, "token-p", frozenset(practices))
    return RequestInfo(request_id="test", rpc="UploadExtract", principal=principal)


def admin() -> RequestInfo:
    return RequestInfo("test", "SetConsent", principal=Principal("admin-1", Role.ADMIN, "token-a"))


OPERATOR = RequestInfo(request_id="test", rpc="cli")


def valid_numbers(count: int, start: int = 0) -> list[str]:
    """Valid test-range NHS numbers (check digits right)."""
    return [f"{n:010d}" for n in reserved_test_numbers()[start : start + count].tolist()]


def with_bad_check_digit(number: str) -> str:
    return number[:9] + str((int(number[9]) + 1) % 10)


def good_row(**changes: str) -> dict[str, str]:
    """One valid raw row for practice SMALL (override any column)."""
    row = {
        "practice_code": SMALL,
        "nhs_number": valid_numbers(1)[0],
        "date_of_birth": "1980-05-17",
        "postcode": "PL6 2LR",
        "sex": "Female",
        "appointment_datetime": "2025-03-04 09:30",
        "booked_datetime": "2025-03-01 14:02",
        "duration_minutes": "12",
        "mode": "Face-to-Face",
        "status": "Attended",
        "hcp_type": "GP",
        "national_category": "General Consultation Routine",
        "service_setting": "General Practice",
    }
    row.update(changes)
    return row


def csv_bytes(rows: list[dict[str, str]], columns: list[str] | None = None) -> bytes:
    """Rows as a CSV extract (columns: the first row's keys unless given)."""
    names = columns or list(rows[0])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def staged_state(world: World) -> dict[str, bytes]:
    """Every governance file's bytes (to show a refusal changed nothing)."""
    root = world.governance_root
    if not root.is_dir():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "LOCK"
    }


def version_rows(store_root: Path) -> pl.DataFrame:
    version = DatasetStore(store_root).current(DATASET_ID)
    return pl.scan_parquet([str(p) for p in version.appointment_paths()]).collect()
