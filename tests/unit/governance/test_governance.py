"""The governance facade over a real (small) store: uploads, opt-outs, consent, publishing."""

from __future__ import annotations

import gzip

import polars as pl
import pytest

from dpgate_server.governance.consent import ConsentState
from dpgate_server.governance.errors import GovernanceError
from dpgate_server.governance.optouts import OptOutKind, OptOutLists, read_opt_out_numbers
from dpgate_server.governance.staging import StagingArea
from dpgate_server.store.bounding import max_rows_per_patient
from dpgate_server.store.pseudonym import load_or_create_key, patient_key, patient_keys
from dpgate_server.store.store import DatasetStore
from dpgate_server.vocabulary.errors import ErrorReason
from tests.unit.governance.helpers import (
    DATASET_ID,
    OPERATOR,
    OTHER,
    SMALL,
    UNUSED,
    RecordingAudit,
    World,
    admin,
    csv_bytes,
    good_row,
    open_governance,
    provider,
    staged_state,
    valid_numbers,
    version_rows,
)


def staged_rows(world: World, practice: str) -> pl.DataFrame:
    return pl.read_parquet(StagingArea(world.governance_root / DATASET_ID).path(practice))


def opted_out_keys(world: World) -> set[int]:
    key = load_or_create_key(world.key_file)
    numbers = read_opt_out_numbers(world.files.national_opt_out) + read_opt_out_numbers(
        world.files.type1_opt_out
    )
    return set(patient_keys(key, numbers).tolist())


# uploads


def test_upload_stages_minimised_rows_and_is_audited(world: World) -> None:
    audit = RecordingAudit()
    result = open_governance(world, audit).ingest(
        DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL)
    )
    assert result.rows_staged == staged_rows(world, SMALL).height > 1000
    assert result.rows_opted_out == 0  # no list loaded yet
    assert any(f"practice {SMALL}" in d for d in audit.details())


def test_upload_excludes_patients_on_a_loaded_list(world: World) -> None:
    expected = opted_out_keys(world)
    governance = open_governance(world, RecordingAudit())
    governance.load_opt_out_list(OptOutKind.NATIONAL, world.files.national_opt_out, OPERATOR)
    governance.load_opt_out_list(OptOutKind.TYPE1, world.files.type1_opt_out, OPERATOR)
    result = governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))
    assert result.rows_opted_out > 0
    assert not set(staged_rows(world, SMALL)["patient_key"].to_list()) & expected


def test_new_upload_replaces_the_staged_rows_whole(world: World) -> None:
    governance = open_governance(world, RecordingAudit())
    governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))
    governance.ingest(DATASET_ID, SMALL, csv_bytes([good_row()]), provider(SMALL))
    assert staged_rows(world, SMALL).height == 1


def test_refused_extract_changes_nothing(world: World) -> None:
    audit = RecordingAudit()
    governance = open_governance(world, audit)
    governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))
    before = staged_state(world)
    with pytest.raises(GovernanceError):
        governance.ingest(DATASET_ID, SMALL, csv_bytes([good_row(mode="Phone")]), provider(SMALL))
    assert staged_state(world) == before
    assert len(audit.events) == 1


def test_provider_cannot_upload_for_another_practice(world: World) -> None:
    with pytest.raises(GovernanceError) as caught:
        open_governance(world, RecordingAudit()).ingest(
            DATASET_ID, OTHER, world.extract(OTHER), provider(SMALL)
        )
    assert caught.value.reason is ErrorReason.PRACTICE_FORBIDDEN
    assert staged_state(world) == {} or "staged" not in str(staged_state(world))


def test_upload_for_a_practice_outside_the_dataset_is_refused(world: World) -> None:
    with pytest.raises(GovernanceError) as caught:
        open_governance(world, RecordingAudit()).ingest(
            DATASET_ID, "A99999", csv_bytes([good_row()]), provider("A99999")
        )
    assert caught.value.reason == "UNKNOWN_PRACTICE"


def test_extract_over_the_limit_is_refused_before_parsing(world: World) -> None:
    governance = open_governance(world, RecordingAudit(), max_upload_bytes=10_000)
    with pytest.raises(GovernanceError) as caught:
        governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))
    assert caught.value.reason == "EXTRACT_TOO_LARGE"


def test_gzipped_extract_stages_the_same_rows_as_the_plain_csv(world: World) -> None:
    governance = open_governance(world, RecordingAudit())
    plain = world.extract(SMALL)
    governance.ingest(DATASET_ID, SMALL, plain, provider(SMALL))
    from_plain = staged_rows(world, SMALL)
    result = governance.ingest(DATASET_ID, SMALL, gzip.compress(plain), provider(SMALL))
    assert result.rows_staged == from_plain.height > 1000
    assert staged_rows(world, SMALL).equals(from_plain)


def test_gzipped_extract_in_several_members_is_read_whole(world: World) -> None:
    plain = world.extract(SMALL)
    middle = plain.index(b"\n", len(plain) // 2) + 1
    data = gzip.compress(plain[:middle]) + gzip.compress(plain[middle:])
    result = open_governance(world, RecordingAudit()).ingest(
        DATASET_ID, SMALL, data, provider(SMALL)
    )
    assert result.rows_staged == plain.count(b"\n") - 1


def test_gzipped_extract_that_inflates_past_the_limit_is_refused(world: World) -> None:
    governance = open_governance(world, RecordingAudit(), max_upload_bytes=100_000)
    data = gzip.compress(world.extract(SMALL))
    assert len(data) < 100_000 < len(world.extract(SMALL))
    with pytest.raises(GovernanceError) as caught:
        governance.ingest(DATASET_ID, SMALL, data, provider(SMALL))
    assert caught.value.reason == "EXTRACT_TOO_LARGE"
    assert StagingArea(world.governance_root / DATASET_ID).practices() == []


def test_corrupt_or_cut_gzip_is_refused_and_changes_nothing(world: World) -> None:
    governance = open_governance(world, RecordingAudit())
    data = gzip.compress(world.extract(SMALL))
    corrupt = data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:]
    for bad, words in ((data[: len(data) // 2], "cut short"), (corrupt, "corrupt")):
        with pytest.raises(GovernanceError) as caught:
            governance.ingest(DATASET_ID, SMALL, bad, provider(SMALL))
        assert caught.value.reason == "EXTRACT_REJECTED"
        assert words in caught.value.message
    assert StagingArea(world.governance_root / DATASET_ID).practices() == []


def test_upload_that_cannot_be_audited_changes_nothing(world: World) -> None:
    audit = RecordingAudit()
    governance = open_governance(world, audit)
    governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))
    before = staged_state(world)
    audit.broken = True
    with pytest.raises(RuntimeError):
        governance.ingest(DATASET_ID, SMALL, csv_bytes([good_row()]), provider(SMALL))
    assert staged_state(world) == before


# opt-out lists


def test_loading_a_list_keeps_only_keys_and_deletes_the_file(world: World) -> None:
    path = world.files.national_opt_out
    numbers = read_opt_out_numbers(path)
    open_governance(world, RecordingAudit()).load_opt_out_list(OptOutKind.NATIONAL, path, OPERATOR)
    assert not path.exists()
    stored = OptOutLists(world.governance_root).keys()
    assert stored.columns == ["patient_key"]
    assert stored.height == len(set(numbers))


def test_list_dropped_at_the_configured_path_is_consumed_at_the_next_upload(world: World) -> None:
    drop = world.files.type1_opt_out
    governance = open_governance(world, RecordingAudit(), drops={OptOutKind.TYPE1: drop})
    result = governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))
    assert not drop.exists()
    assert result.rows_opted_out > 0


def test_list_with_an_invalid_number_is_refused_and_left_in_place(world: World) -> None:
    path = world.root / "bad.csv"
    path.write_text("nhs_number\n" + valid_numbers(1)[0] + "\n1234567890\n")
    with pytest.raises(GovernanceError) as caught:
        open_governance(world, RecordingAudit()).load_opt_out_list(
            OptOutKind.NATIONAL, path, OPERATOR
        )
    assert "lines 3" in caught.value.message
    assert "1234567890" not in caught.value.message
    assert path.exists()


def test_new_opt_out_removes_rows_already_staged(world: World) -> None:
    listed = opted_out_keys(world)
    governance = open_governance(world, RecordingAudit())
    governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))
    assert set(staged_rows(world, SMALL)["patient_key"].to_list()) & listed
    governance.load_opt_out_list(OptOutKind.NATIONAL, world.files.national_opt_out, OPERATOR)
    governance.load_opt_out_list(OptOutKind.TYPE1, world.files.type1_opt_out, OPERATOR)
    assert not set(staged_rows(world, SMALL)["patient_key"].to_list()) & listed


def test_patient_who_opts_back_in_returns_with_the_next_upload(world: World) -> None:
    number = valid_numbers(1, start=42)[0]
    governance = open_governance(world, RecordingAudit())
    listed = world.root / "list.csv"
    listed.write_text(f"nhs_number\n{number}\n")
    governance.load_opt_out_list(OptOutKind.NATIONAL, listed, OPERATOR)
    extract = csv_bytes([good_row(nhs_number=number), good_row()])
    assert governance.ingest(DATASET_ID, SMALL, extract, provider(SMALL)).rows_staged == 1
    listed.write_text("nhs_number\n")
    governance.load_opt_out_list(OptOutKind.NATIONAL, listed, OPERATOR)
    assert governance.ingest(DATASET_ID, SMALL, extract, provider(SMALL)).rows_staged == 2


# consent


def test_withdrawal_deletes_staged_rows_and_refuses_uploads(world: World) -> None:
    audit = RecordingAudit()
    governance = open_governance(world, audit)
    governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))
    governance.set_consent(DATASET_ID, SMALL, ConsentState.WITHDRAWN, provider(SMALL))
    assert StagingArea(world.governance_root / DATASET_ID).practices() == []
    assert governance.status(DATASET_ID, SMALL, None).consent is ConsentState.WITHDRAWN
    with pytest.raises(GovernanceError) as caught:
        governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))
    assert caught.value.reason == "CONSENT_WITHDRAWN"
    assert f"consent of practice {SMALL}: withdrawn" in audit.details()


def test_admin_records_consent_only_with_an_instruction_reference(world: World) -> None:
    governance = open_governance(world, RecordingAudit())
    with pytest.raises(GovernanceError) as caught:
        governance.set_consent(DATASET_ID, SMALL, ConsentState.WITHDRAWN, admin())
    assert caught.value.reason == "INSTRUCTION_REFERENCE_REQUIRED"
    governance.set_consent(DATASET_ID, SMALL, ConsentState.WITHDRAWN, admin(), "letter 2025/17")
    assert governance.status(DATASET_ID, SMALL, None).consent is ConsentState.WITHDRAWN


def test_provider_cannot_change_another_practices_consent(world: World) -> None:
    with pytest.raises(GovernanceError) as caught:
        open_governance(world, RecordingAudit()).set_consent(
            DATASET_ID, OTHER, ConsentState.WITHDRAWN, provider(SMALL)
        )
    assert caught.value.reason is ErrorReason.PRACTICE_FORBIDDEN


def test_status_shows_the_last_upload(world: World) -> None:
    governance = open_governance(world, RecordingAudit())
    assert governance.status(DATASET_ID, SMALL, None).last_upload is None
    result = governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))
    status = governance.status(DATASET_ID, SMALL, provider(SMALL).principal)
    assert status.consent is ConsentState.GRANTED
    assert status.last_upload is not None
    assert status.last_upload.rows_staged == result.rows_staged


# publishing


def test_publish_uses_staged_rows_and_carries_the_other_practices_forward(world: World) -> None:
    before = version_rows(world.store_root)
    governance = open_governance(world, RecordingAudit())
    governance.ingest(DATASET_ID, SMALL, csv_bytes([good_row()]), provider(SMALL))
    result = governance.publish(DATASET_ID, OPERATOR)
    after = version_rows(world.store_root)
    assert after.filter(pl.col("practice_code") == SMALL).height == 1
    unchanged = before.filter(pl.col("practice_code") == UNUSED).sort(pl.all())
    assert after.filter(pl.col("practice_code") == UNUSED).sort(pl.all()).equals(unchanged)
    assert result.staged_practices == (SMALL,)
    assert result.version.version == "v000002"


def test_published_rows_carry_the_practice_hierarchy(world: World) -> None:
    governance = open_governance(world, RecordingAudit())
    governance.ingest(DATASET_ID, SMALL, csv_bytes([good_row()]), provider(SMALL))
    version = governance.publish(DATASET_ID, OPERATOR).version
    practices = pl.read_parquet(version.public_table_path("practices"))
    row = version_rows(world.store_root).filter(pl.col("practice_code") == SMALL)
    expected = practices.filter(pl.col("practice_code") == SMALL).drop("list_size")
    assert row.select(expected.columns).equals(expected)


def test_publish_bounds_a_patient_across_practices_and_verifies_it(world: World) -> None:
    number = valid_numbers(1, start=99)[0]
    governance = open_governance(world, RecordingAudit())
    both = provider(SMALL, OTHER)
    for practice in (SMALL, OTHER):
        rows = [good_row(practice_code=practice, nhs_number=number) for _ in range(20)]
        governance.ingest(DATASET_ID, practice, csv_bytes(rows), both)
    version = governance.publish(DATASET_ID, OPERATOR).version
    key = patient_key(load_or_create_key(world.key_file), number)
    rows = version_rows(world.store_root).filter(pl.col("patient_key") == key)
    assert rows.height == 24
    assert version.manifest.bound is not None
    assert version.manifest.bound.verified
    assert max_rows_per_patient(version.appointment_paths()) <= 24


def test_withdrawn_practice_leaves_rows_and_keys_of_the_next_version(world: World) -> None:
    governance = open_governance(world, RecordingAudit())
    governance.set_consent(DATASET_ID, UNUSED, ConsentState.WITHDRAWN, OPERATOR)
    version = governance.publish(DATASET_ID, OPERATOR).version
    assert UNUSED not in (version.metadata.column("practice_code").values or ())
    practices = pl.read_parquet(version.public_table_path("practices"))["practice_code"]
    assert UNUSED not in practices.to_list()
    assert UNUSED not in version_rows(world.store_root)["practice_code"].to_list()


def test_earlier_version_is_untouched_by_a_withdrawal(world: World) -> None:
    store = DatasetStore(world.store_root)
    first = store.current(DATASET_ID)
    governance = open_governance(world, RecordingAudit())
    governance.set_consent(DATASET_ID, UNUSED, ConsentState.WITHDRAWN, OPERATOR)
    governance.publish(DATASET_ID, OPERATOR)
    first.verify_files()  # the files a query in flight reads are still there, unchanged
    assert UNUSED in (
        store.open_version(DATASET_ID, "v000001").metadata.column("practice_code").values or ()
    )


def test_regranted_practice_is_a_key_again_and_returns_with_its_upload(world: World) -> None:
    governance = open_governance(world, RecordingAudit())
    governance.set_consent(DATASET_ID, SMALL, ConsentState.WITHDRAWN, OPERATOR)
    governance.publish(DATASET_ID, OPERATOR)
    governance.set_consent(DATASET_ID, SMALL, ConsentState.GRANTED, OPERATOR)
    version = governance.publish(DATASET_ID, OPERATOR).version
    assert SMALL in (version.metadata.column("practice_code").values or ())
    assert SMALL not in version_rows(world.store_root)["practice_code"].to_list()
    governance.ingest(DATASET_ID, SMALL, csv_bytes([good_row()]), provider(SMALL))
    governance.publish(DATASET_ID, OPERATOR)
    assert SMALL in version_rows(world.store_root)["practice_code"].to_list()


def test_keys_are_policy_not_uploads(world: World) -> None:
    governance = open_governance(world, RecordingAudit())
    governance.ingest(DATASET_ID, SMALL, csv_bytes([good_row()]), provider(SMALL))
    first = DatasetStore(world.store_root).current(DATASET_ID).metadata
    version = governance.publish(DATASET_ID, OPERATOR).version
    assert version.metadata == first


def test_practices_of_an_opt_in_dataset_are_left_out_until_they_grant(world: World) -> None:
    governance = open_governance(world, RecordingAudit(), granted_by_default=())
    governance.set_consent(DATASET_ID, SMALL, ConsentState.GRANTED, OPERATOR)
    version = governance.publish(DATASET_ID, OPERATOR).version
    assert version.metadata.column("practice_code").values == (SMALL,)


def test_publish_refuses_another_key(world: World) -> None:
    world.key_file.write_bytes(bytes(32))
    with pytest.raises(GovernanceError) as caught:
        open_governance(world, RecordingAudit()).publish(DATASET_ID, OPERATOR)
    assert caught.value.reason == "KEY_MISMATCH"
