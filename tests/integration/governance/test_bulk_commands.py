"""`dpgate-server ingest FOLDER` and `dpgate-server optouts load FILE` against a real store
and ledger in a temporary folder (typer's runner, the real governance service)."""

from __future__ import annotations

import gzip
import shutil
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from dpgate_server.commands import app
from dpgate_server.governance.staging import StagingArea
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import Outcome
from dpgate_server.ledger.sqlite import SqliteStorage
from dpgate_server.store.store import DatasetStore
from tests.unit.governance.helpers import (
    DATASET_ID,
    OTHER,
    SMALL,
    World,
    copy_world,
    csv_bytes,
    good_row,
    version_rows,
)

RUNNER = CliRunner()
STAGE_WORDS = [["reading"], ["bounding"], ["writing"], ["verifying"]]


@pytest.fixture
def world(governance_source: World, tmp_path: Path) -> World:
    return copy_world(governance_source, tmp_path / "world")


@pytest.fixture
def env(world: World, tmp_path: Path) -> dict[str, str]:
    return {
        "DPGATE_STORAGE__DATA_DIR": str(world.store_root),
        "DPGATE_STORAGE__KEY_FILE": str(world.key_file),
        "DPGATE_STORAGE__LEDGER_PATH": str(tmp_path / "ledger.sqlite"),
    }


def staging(world: World) -> StagingArea:
    return StagingArea(world.governance_root / DATASET_ID)


def audit_events(path: str) -> list[tuple[str, Outcome, str]]:
    with Ledger(SqliteStorage(Path(path))) as ledger:
        return [(e.rpc, e.outcome, e.detail) for e in ledger.list_events()]


def test_ingest_stages_good_extracts_and_lists_the_refused(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / f"{SMALL}.csv.gz").write_bytes(gzip.compress(world.extract(SMALL)))
    (folder / f"{OTHER}.csv").write_bytes(world.extract(OTHER))
    bad = csv_bytes([good_row(), good_row(mode="Phone")])
    (folder / "F81145.csv").write_bytes(bad.replace(b"F81144", b"F81145"))
    (folder / "notes.txt").write_text("not an extract")
    result = RUNNER.invoke(app, ["ingest", str(folder)], env=env)
    assert result.exit_code == 1, result.output
    assert "2 of 3 extracts staged" in result.output
    assert "refused F81145.csv: EXTRACT_REJECTED" in result.output
    assert (
        "refused F81145.csv: EXTRACT_REJECTED: the extract was refused, nothing was staged "
        "(1 problem):\n  line 3, column mode: not one of the dataset's labels"
    ) in result.output
    assert "Phone" not in result.output
    assert staging(world).practices() == sorted([SMALL, OTHER])
    rows = pl.read_parquet(staging(world).path(SMALL)).height
    assert str(rows) not in result.output  # no counts of private rows
    events = audit_events(env["DPGATE_STORAGE__LEDGER_PATH"])
    assert sum(1 for rpc, o, _ in events if rpc == "UploadExtract" and o is Outcome.ANSWERED) == 2
    assert ("UploadExtract", Outcome.INVALID, "EXTRACT_REJECTED") in events


def test_optouts_load_replaces_the_list_and_is_audited(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / f"{SMALL}.csv").write_bytes(world.extract(SMALL))
    assert RUNNER.invoke(app, ["ingest", str(folder)], env=env).exit_code == 0
    before = pl.read_parquet(staging(world).path(SMALL)).height
    listing = tmp_path / "national.csv"
    shutil.copy(world.files.national_opt_out, listing)
    result = RUNNER.invoke(app, ["optouts", "load", str(listing), "--kind", "national"], env=env)
    assert result.exit_code == 0, result.output
    assert not listing.exists()  # consumed: only the keys are kept
    assert pl.read_parquet(staging(world).path(SMALL)).height < before
    events = audit_events(env["DPGATE_STORAGE__LEDGER_PATH"])
    assert any(rpc == "LoadOptOutList" and o is Outcome.ANSWERED for rpc, o, _ in events)


def test_optouts_load_refuses_a_bad_list_and_keeps_it(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    listing = tmp_path / "national.csv"
    listing.write_text("nhs_number\n12345\n")
    result = RUNNER.invoke(app, ["optouts", "load", str(listing)], env=env)
    assert result.exit_code == 1
    assert "refused national.csv" in result.output
    assert "12345" not in result.output
    assert listing.exists()


def test_publish_makes_a_new_version_with_the_ingested_practice(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    before = DatasetStore(world.store_root).current(DATASET_ID).version
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / f"{SMALL}.csv").write_bytes(world.extract(SMALL))
    assert RUNNER.invoke(app, ["ingest", str(folder)], env=env).exit_code == 0
    staged_rows = pl.read_parquet(staging(world).path(SMALL)).height
    result = RUNNER.invoke(app, ["publish", DATASET_ID], env={**env, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    after = DatasetStore(world.store_root).current(DATASET_ID)
    assert after.version != before
    assert f"version {after.version}" in result.output
    events = audit_events(env["DPGATE_STORAGE__LEDGER_PATH"])
    assert any(rpc == "PublishDatasetVersion" and o is Outcome.ANSWERED for rpc, o, _ in events)
    # a bar per stage, in order, each complete: practices (public keys) done of total
    practices = len(after.metadata.column("practice_code").values or ())
    lines = result.output.splitlines()
    stages = [line.split()[0] for line in lines if line.split()[:1] in STAGE_WORDS]
    assert stages == ["reading", "bounding", "writing", "verifying"]
    assert f"{practices}/{practices} practices" in next(x for x in lines if "reading" in x)
    assert f"{practices}/{practices} practices" in next(x for x in lines if "writing" in x)
    assert "4/4 checks" in result.output
    assert f"{practices} practices, 1 from uploads" in result.output
    # never a count of private rows
    for rows in (staged_rows, version_rows(world.store_root).height):
        assert str(rows) not in result.output
        assert f"{rows:,}" not in result.output


def test_publish_refuses_a_bound_it_cannot_choose_and_publishes_nothing(
    world: World, env: dict[str, str]
) -> None:
    before = DatasetStore(world.store_root).current(DATASET_ID).version
    result = RUNNER.invoke(app, ["publish", DATASET_ID, "--choose-bounds", "week.rows"], env=env)
    assert result.exit_code == 1
    assert "week.rows can be chosen only for a dataset with a week bound" in result.output
    assert DatasetStore(world.store_root).current(DATASET_ID).version == before


def test_publish_of_an_unknown_dataset_is_refused(env: dict[str, str]) -> None:
    result = RUNNER.invoke(app, ["publish", "no_such_dataset"], env=env)
    assert result.exit_code == 1
    assert "refused no_such_dataset" in result.output


def test_parallel_ingest_stages_and_refuses_exactly_as_sequential_ingest(
    governance_source: World, tmp_path: Path
) -> None:
    """Two extracts at a time (the default) against one at a time, on two copies of one
    world: the same rows staged per practice, the same files refused for the same reasons
    listed in the same order, the same audit outcomes."""
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / f"{SMALL}.csv.gz").write_bytes(gzip.compress(governance_source.extract(SMALL)))
    (folder / f"{OTHER}.csv").write_bytes(governance_source.extract(OTHER))
    bad = csv_bytes([good_row(), good_row(mode="Phone")]).replace(b"F81144", b"F81145")
    (folder / "F81145.csv").write_bytes(bad)
    (folder / "F81147.csv").write_bytes(b"not,a,header\n1,2,3\n")
    outputs, worlds, ledgers = [], [], []
    for jobs in ("1", "2"):
        world = copy_world(governance_source, tmp_path / f"world-{jobs}")
        ledger_path = str(tmp_path / f"ledger-{jobs}.sqlite")
        env = {
            "DPGATE_STORAGE__DATA_DIR": str(world.store_root),
            "DPGATE_STORAGE__KEY_FILE": str(world.key_file),
            "DPGATE_STORAGE__LEDGER_PATH": ledger_path,
        }
        result = RUNNER.invoke(app, ["ingest", str(folder), "--jobs", jobs], env=env)
        assert result.exit_code == 1, result.output
        outputs.append([line for line in result.output.splitlines() if "refused" in line])
        worlds.append(world)
        ledgers.append(sorted((rpc, o.value, d) for rpc, o, d in audit_events(ledger_path)))
    assert outputs[0] == outputs[1]
    assert [line.split(":")[0] for line in outputs[0]] == [
        "refused F81145.csv",
        "refused F81147.csv",
    ]
    assert ledgers[0] == ledgers[1]
    sequential, parallel = (staging(w) for w in worlds)
    assert sequential.practices() == parallel.practices() == sorted([SMALL, OTHER])
    for code in sequential.practices():
        assert_frame_equal(
            pl.read_parquet(sequential.path(code)), pl.read_parquet(parallel.path(code))
        )
        before, after = sequential.record(code), parallel.record(code)
        assert before is not None
        assert after is not None
        assert replace(before, uploaded_at="") == replace(after, uploaded_at="")
