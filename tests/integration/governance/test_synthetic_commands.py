"""`dpgate-server synthetic extracts` / `synthetic generate` and the modules' own entry points:
small runs through the real commands (typer's runner), checked against the files and the
dataset they produce, a full run, and the real ingest command."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest
from click.testing import Result
from typer.testing import CliRunner

from dpgate_server.commands import app
from dpgate_server.governance.staging import StagingArea
from dpgate_server.store.pseudonym import load_or_create_key
from dpgate_server.store.store import DatasetStore, DatasetVersion
from dpgate_server.synthetic import raw_extracts
from dpgate_server.synthetic.generator import generate_dataset
from dpgate_server.synthetic.population import select_practices
from dpgate_server.synthetic.raw_extracts import NATIONAL_OPT_OUT_FILE, TYPE1_OPT_OUT_FILE
from tests.unit.governance.helpers import (
    DATASET_ID,
    OTHER,
    PRACTICES,
    SEED,
    SMALL,
    World,
    copy_world,
)

RUNNER = CliRunner()
LISTS = {NATIONAL_OPT_OUT_FILE, TYPE1_OPT_OUT_FILE}


def codes() -> list[str]:
    return list(select_practices(PRACTICES).practice_code)


def run_extracts(*options: str) -> Result:
    """`dpgate-server synthetic extracts` over the governance world's selection and seed."""
    selection = ["--practices", str(PRACTICES), "--seed", str(SEED)]
    return RUNNER.invoke(app, ["synthetic", "extracts", *selection, *options])


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every practice of the governance world's selection, plain CSV, through the command."""
    out = tmp_path_factory.mktemp("full") / "extracts"
    result = run_extracts("--out", str(out), "--workers", "1")
    assert result.exit_code == 0, result.output
    return out


def test_extracts_writes_every_practice_and_both_lists(
    full_run: Path, governance_source: World
) -> None:
    assert names(full_run) == {f"{code}.csv" for code in codes()} | LISTS
    # the same seed gives the same rows as the library call that built the governance world
    assert (full_run / f"{SMALL}.csv").read_bytes() == governance_source.extract(SMALL)
    assert (full_run / NATIONAL_OPT_OUT_FILE).read_bytes() == (
        governance_source.files.national_opt_out.read_bytes()
    )


def test_a_gzipped_batch_is_the_matching_slice_of_a_full_run(
    full_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "batch"
    argv = ["--practices", str(PRACTICES), "--seed", str(SEED), "--out", str(out)]
    argv += ["--first", "1", "--count", "3", "--gzip", "--no-opt-out-lists", "--workers", "2"]
    assert raw_extracts.main(argv) == 0
    batch = codes()[1:4]
    assert names(out) == {f"{code}.csv.gz" for code in batch}  # no lists, nothing partial
    for code in batch:
        unpacked = gzip.decompress((out / f"{code}.csv.gz").read_bytes())
        assert unpacked == (full_run / f"{code}.csv").read_bytes()


def test_a_batch_past_the_end_stops_at_the_end(full_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "batch"
    result = run_extracts("--out", str(out), "--first", str(PRACTICES - 1), "--count", "10")
    assert result.exit_code == 0, result.output
    last = codes()[-1]
    assert names(out) == {f"{last}.csv"} | LISTS
    assert (out / f"{last}.csv").read_bytes() == (full_run / f"{last}.csv").read_bytes()
    assert "practices 1/1" in result.output  # the progress bar


def test_a_batch_outside_the_selection_is_refused_saying_what_to_change(tmp_path: Path) -> None:
    out = tmp_path / "batch"
    result = run_extracts("--out", str(out), "--first", str(PRACTICES))
    assert result.exit_code == 2
    assert f"--first must be between 0 and {PRACTICES - 1}" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_gzipped_extracts_round_trip_through_ingest(
    governance_source: World, tmp_path: Path
) -> None:
    """Ingest of the .csv.gz files stages exactly what ingest of the same CSV files stages."""
    staged: dict[str, dict[str, pl.DataFrame]] = {}
    for form in ("csv", "gzip"):
        world = copy_world(governance_source, tmp_path / form / "world")
        drop = tmp_path / form / "drop"
        options = ["--out", str(drop), "--only", SMALL, "--only", OTHER, "--no-opt-out-lists"]
        written = run_extracts(*options, *(["--gzip"] if form == "gzip" else []))
        assert written.exit_code == 0, written.output
        suffix = ".csv.gz" if form == "gzip" else ".csv"
        assert names(drop) == {f"{SMALL}{suffix}", f"{OTHER}{suffix}"}
        env = {
            "DPGATE_STORAGE__DATA_DIR": str(world.store_root),
            "DPGATE_STORAGE__KEY_FILE": str(world.key_file),
            "DPGATE_STORAGE__LEDGER_PATH": str(tmp_path / form / "ledger.sqlite"),
        }
        ingested = RUNNER.invoke(app, ["ingest", str(drop)], env=env)
        assert ingested.exit_code == 0, ingested.output
        assert "2 of 2 extracts staged" in ingested.output
        area = StagingArea(world.governance_root / DATASET_ID)
        assert area.practices() == sorted([SMALL, OTHER])
        staged[form] = {code: pl.read_parquet(area.path(code)) for code in (SMALL, OTHER)}
    for code in (SMALL, OTHER):
        assert staged["gzip"][code].height > 0
        assert staged["gzip"][code].equals(staged["csv"][code])


def _digests(version: DatasetVersion) -> dict[str, str]:
    records = (*version.manifest.appointment_files, *version.manifest.public_files)
    return {r.path: r.sha256 for r in records}


def test_generate_publishes_the_generators_dataset_and_can_reuse_it(tmp_path: Path) -> None:
    store_root, key_file = tmp_path / "store", tmp_path / "secrets" / "pseudonym.key"
    env = {"DPGATE_STORAGE__DATA_DIR": str(store_root), "DPGATE_STORAGE__KEY_FILE": str(key_file)}
    argv = ["synthetic", "generate", "--practices", "2", "--seed", "3", "--workers", "1"]
    result = RUNNER.invoke(app, argv, env=env)
    assert result.exit_code == 0, result.output
    assert "practices 2/2" in result.output  # the progress bar
    version = DatasetStore(store_root).current(DATASET_ID)
    assert version.manifest.source["practice_count"] == 2
    assert version.manifest.source["seed"] == 3
    reference = generate_dataset(
        DatasetStore(tmp_path / "reference"), load_or_create_key(key_file), 2, 3, workers=1
    )
    assert _digests(version) == _digests(reference)  # same seed, same scale: the same files
    reused = RUNNER.invoke(app, [*argv, "--reuse"], env=env)
    assert reused.exit_code == 0, reused.output
    assert "reused" in reused.output
    assert DatasetStore(store_root).current(DATASET_ID).version == version.version
    fresh = RUNNER.invoke(app, argv, env=env)
    assert fresh.exit_code == 0, fresh.output
    assert DatasetStore(store_root).current(DATASET_ID).version != version.version


def test_generate_refuses_a_key_inside_the_store(tmp_path: Path) -> None:
    env = {
        "DPGATE_STORAGE__DATA_DIR": str(tmp_path / "store"),
        "DPGATE_STORAGE__KEY_FILE": str(tmp_path / "store" / "pseudonym.key"),
    }
    result = RUNNER.invoke(app, ["synthetic", "generate", "--practices", "2"], env=env)
    assert result.exit_code == 2
    assert "must be outside the data folder" in result.output
