"""Generating, publishing and reusing the synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dpgate_server.store.appointment_files import APPOINTMENTS_SCHEMA
from dpgate_server.store.bounding import BoundViolationError
from dpgate_server.store.store import DatasetStore, DatasetVersion
from dpgate_server.synthetic import generator
from dpgate_server.synthetic.generator import ensure_demo_dataset, generate_dataset
from dpgate_server.synthetic.gp_metadata import CATEGORY_SETS, DATASET_ID, MAX_CONTRIBUTIONS
from dpgate_server.synthetic.population import draw_patients, select_practices
from dpgate_server.vocabulary.errors import DatasetNotFoundError

KEY = bytes(range(32))


def _digests(version: DatasetVersion) -> dict[str, str]:
    records = (*version.manifest.appointment_files, *version.manifest.public_files)
    return {r.path: r.sha256 for r in records}


def test_same_seed_and_scale_give_identical_files(tmp_path: Path) -> None:
    first = generate_dataset(DatasetStore(tmp_path / "a"), KEY, practices=3, seed=11)
    second = generate_dataset(DatasetStore(tmp_path / "b"), KEY, practices=3, seed=11)
    assert _digests(first) == _digests(second)
    assert len(_digests(first)) == 15


def test_chunking_and_workers_do_not_change_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = generate_dataset(DatasetStore(tmp_path / "a"), KEY, practices=3, seed=11, workers=1)
    monkeypatch.setattr(generator, "CHUNK_PATIENTS", 1)
    chunked = generate_dataset(DatasetStore(tmp_path / "b"), KEY, practices=3, seed=11, workers=1)
    assert _digests(whole) == _digests(chunked)


def test_another_seed_gives_other_rows(tmp_path: Path) -> None:
    first = generate_dataset(DatasetStore(tmp_path / "a"), KEY, practices=2, seed=1)
    second = generate_dataset(DatasetStore(tmp_path / "b"), KEY, practices=2, seed=2)
    assert first.manifest.appointment_files != second.manifest.appointment_files


def test_metadata_and_public_tables_do_not_depend_on_the_rows(tmp_path: Path) -> None:
    first = generate_dataset(DatasetStore(tmp_path / "a"), KEY, practices=2, seed=1)
    second = generate_dataset(DatasetStore(tmp_path / "b"), b"\x01" * 32, practices=2, seed=2)
    assert (first.path / "metadata.json").read_bytes() == (
        second.path / "metadata.json"
    ).read_bytes()
    assert first.manifest.public_files == second.manifest.public_files


def test_files_follow_the_appointments_schema(small_dataset: DatasetVersion) -> None:
    schema = small_dataset.scan_appointments().collect_schema()
    assert schema.names() == APPOINTMENTS_SCHEMA.names
    assert schema["patient_key"] == pl.Int64
    assert schema["appointment_date"] == pl.Date
    assert schema["hour"] == pl.Int32
    assert schema["duration_minutes"] == pl.Int64
    assert all(schema[name] == pl.String for name, _ in CATEGORY_SETS)


def test_one_file_per_month_sorted_by_practice(small_dataset: DatasetVersion) -> None:
    paths = small_dataset.appointment_paths()
    month = small_dataset.metadata.column("month")
    assert month is not None
    assert tuple(p.stem for p in paths) == month.values
    for path in paths:
        frame = pl.read_parquet(path, columns=["practice_code", "month", "appointment_date"])
        assert frame["practice_code"].is_sorted()
        assert frame["month"].unique().to_list() == [path.stem]


def test_every_value_is_in_its_public_set(small_dataset: DatasetVersion) -> None:
    scan = small_dataset.scan_appointments()
    for spec in small_dataset.metadata.columns:
        if spec.values is not None:
            seen = set(scan.select(pl.col(spec.name).unique()).collect().to_series().to_list())
            assert seen <= set(spec.values), spec.name
        if spec.bounds is not None:
            column = pl.col(spec.name)
            low, high = (
                scan.select(column.min().alias("lo"), column.max().alias("hi")).collect().row(0)
            )
            assert spec.bounds[0] <= low, spec.name
            assert high <= spec.bounds[1], spec.name


def test_no_nhs_number_is_written(small_dataset: DatasetVersion) -> None:
    source = small_dataset.manifest.source
    table = select_practices(source["practices"])
    numbers = np.concatenate(
        [
            draw_patients(source["seed"], int(i), int(s), int(f)).nhs_number
            for i, s, f in zip(table.index, table.list_size, table.first_patient, strict=True)
        ]
    )
    keys = small_dataset.scan_appointments().select("patient_key").unique().collect()
    assert not np.isin(keys.to_series().to_numpy(), numbers).any()
    names = set(small_dataset.scan_appointments().collect_schema().names())
    assert not names & {"nhs_number", "date_of_birth", "postcode"}
    raw = b"".join(p.read_bytes() for p in small_dataset.path.rglob("*") if p.is_file())
    assert all(f"{n:010d}".encode() not in raw for n in numbers[:: numbers.size // 200])


def test_published_version_carries_a_verified_bound(small_dataset: DatasetVersion) -> None:
    bound = small_dataset.manifest.bound
    assert bound is not None
    assert bound.verified
    assert bound.max_contributions == MAX_CONTRIBUTIONS == small_dataset.metadata.max_contributions
    per_patient = small_dataset.scan_appointments().group_by("patient_key").len()
    assert per_patient.select(pl.col("len").max()).collect().item() <= MAX_CONTRIBUTIONS
    small_dataset.verify_files()


def test_unverifiable_bound_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DatasetStore(tmp_path / "store")
    draw = generator.draw_appointments
    monkeypatch.setattr(
        generator, "draw_appointments", lambda m, s, i, p, k: draw(m, s, i, p, k + 20)
    )
    with pytest.raises(BoundViolationError):
        generate_dataset(store, KEY, practices=2, seed=3, workers=1)
    with pytest.raises(DatasetNotFoundError):
        store.current(DATASET_ID)
    assert store.versions(DATASET_ID) == []
    assert list((tmp_path / "store" / DATASET_ID / "staging").iterdir()) == []


def test_ensure_reuses_a_matching_version(
    small_dataset_paths: tuple[Path, Path], small_dataset: DatasetVersion
) -> None:
    store_root, key_file = small_dataset_paths
    again = ensure_demo_dataset(store_root, key_file, practices=10, seed=7)
    assert again.version == small_dataset.version
    assert DatasetStore(store_root).versions(DATASET_ID) == [small_dataset.version]


def test_ensure_generates_when_the_seed_differs(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets" / "key"
    first = ensure_demo_dataset(tmp_path / "store", key_file, practices=1, seed=1)
    second = ensure_demo_dataset(tmp_path / "store", key_file, practices=1, seed=2)
    assert (first.version, second.version) == ("v000001", "v000002")
    assert second.manifest.source["seed"] == 2


def test_key_inside_the_data_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside the data folder"):
        ensure_demo_dataset(tmp_path, tmp_path / "key", practices=1, seed=1)
    assert not (tmp_path / "key").exists()


def test_reader_of_version_n_keeps_working_while_n_plus_1_is_published(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "store")
    first = generate_dataset(store, KEY, practices=1, seed=1)
    scan = store.open_version(DATASET_ID, first.version).scan_appointments()
    before = scan.select(pl.len(), pl.col("patient_key").sum()).collect().row(0)
    second = generate_dataset(store, KEY, practices=1, seed=2)
    assert store.current(DATASET_ID).version == second.version != first.version
    assert scan.select(pl.len(), pl.col("patient_key").sum()).collect().row(0) == before
    first.verify_files()


def test_command_line_generates_a_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = generator.main(
        [
            "--practices",
            "1",
            "--seed",
            "5",
            "--store",
            str(tmp_path / "store"),
            "--key-file",
            str(tmp_path / "secrets" / "key"),
        ]
    )
    assert code == 0
    assert "gp_appointments v000001" in capsys.readouterr().out
    manifest = json.loads(
        (tmp_path / "store" / DATASET_ID / "versions" / "v000001" / "manifest.json").read_text()
    )
    assert manifest["source"]["seed"] == 5
