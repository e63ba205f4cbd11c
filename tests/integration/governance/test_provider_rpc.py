"""Provider uploads, consent and publishing through the real server and the real clients."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import re
from collections.abc import Callable
from pathlib import Path

import grpc
import polars as pl
import pytest

from dpgate import InvalidRequestError, PermissionDeniedError, count
from dpgate.errors import from_rpc_error
from dpgate_proto.v1 import provider_pb2, provider_pb2_grpc
from dpgate_server.governance.ingest import IngestPolicy, minimise_extract
from dpgate_server.governance.staging import StagingArea
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import Outcome
from dpgate_server.store.pseudonym import load_or_create_key, patient_keys
from dpgate_server.store.store import DatasetStore
from tests.integration.governance.conftest import UPLOAD_LIMIT, GovernedService
from tests.unit.governance.helpers import (
    DATASET_ID,
    OTHER,
    SMALL,
    UNUSED,
    csv_bytes,
    good_row,
    staged_state,
    valid_numbers,
    version_rows,
    with_bad_check_digit,
)


def current_version(service: GovernedService) -> str:
    return DatasetStore(service.world.store_root).current(DATASET_ID).version


def snapshot(service: GovernedService) -> tuple[str, dict[str, bytes]]:
    return current_version(service), staged_state(service.world)


def as_home_visits(raw: bytes) -> bytes:
    """The extract with every appointment recorded as a home visit (easy to see in a count)."""
    frame = pl.read_csv(io.BytesIO(raw), infer_schema=False).with_columns(mode=pl.lit("Home Visit"))
    out = io.BytesIO()
    frame.write_csv(out)
    return out.getvalue()


def home_visits(service: GovernedService) -> float:
    with service.analyst() as analyst:
        result = analyst.query(
            count(DATASET_ID).where(practice_code=SMALL, mode="Home Visit").epsilon(1)
        )
    return float(result.frame["value"][0])


def test_good_extract_is_reflected_in_queries_after_publish(governed: GovernedService) -> None:
    before = home_visits(governed)
    raw = as_home_visits(governed.world.extract(SMALL))
    with governed.provider() as provider:
        uploaded = provider.upload(DATASET_ID, SMALL, raw)
    with governed.admin() as admin:
        info = admin.publish_dataset_version(DATASET_ID)
    after = home_visits(governed)
    # Laplace noise of scale 24 per answer: a shift of ~1,900 rows cannot be noise.
    assert after - before > uploaded.rows_staged - 500
    assert info.version == current_version(governed)


def test_gzipped_extract_through_upload_extract_stages_as_the_plain_csv(
    governed: GovernedService, tmp_path: Path
) -> None:
    staged = StagingArea(governed.world.governance_root / DATASET_ID).path(SMALL)
    plain = governed.world.extract(SMALL)
    compressed = tmp_path / f"{SMALL}.csv.gz"
    compressed.write_bytes(gzip.compress(plain))
    with governed.provider() as provider:
        provider.upload(DATASET_ID, SMALL, plain)
        from_plain = pl.read_parquet(staged)
        uploaded = provider.upload(DATASET_ID, SMALL, compressed)
    assert uploaded.rows_staged == from_plain.height
    assert pl.read_parquet(staged).equals(from_plain)


def test_upload_reports_progress_to_the_end(governed: GovernedService) -> None:
    seen: list[tuple[int, int]] = []
    with governed.provider() as provider:
        provider.upload(
            DATASET_ID,
            SMALL,
            governed.world.extract(SMALL),
            progress=lambda sent, total: seen.append((sent, total)),
            chunk_bytes=64 * 1024,
        )
    assert len(seen) > 1
    assert seen[-1][0] == seen[-1][1] == len(governed.world.extract(SMALL))


def _missing_column() -> bytes:
    row = good_row()
    return csv_bytes([row], [c for c in row if c != "status"])


def _truncated(raw: bytes) -> bytes:
    return raw[: raw.rindex(b"\n", 0, len(raw) - 1) + 30]


def _corrupt(raw: bytes) -> bytes:
    damaged = bytearray(raw)
    damaged[2000:2010] = bytes(range(0xF0, 0xFA))
    return bytes(damaged)


BAD_EXTRACTS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "missing column": (lambda _raw: _missing_column(), "column status: required column is missing"),
    "wrong type": (
        lambda _raw: csv_bytes([good_row(duration_minutes="12.5")]),
        "line 2, column duration_minutes: not a whole number of minutes",
    ),
    "bad check digit": (
        lambda _raw: csv_bytes([good_row(nhs_number=with_bad_check_digit(valid_numbers(1)[0]))]),
        "column nhs_number: the check digit does not match",
    ),
    "unknown category": (
        lambda _raw: csv_bytes([good_row(national_category="Flu jab")]),
        "line 2, column national_category: not one of the dataset's labels",
    ),
    "out-of-period date": (
        lambda _raw: csv_bytes([good_row(appointment_datetime="2024-11-30 10:00")]),
        "outside the dataset's period",
    ),
    "empty": (lambda _raw: b"", "the extract is empty"),
    "truncated": (_truncated, "a value is required"),
    "corrupt": (_corrupt, "not UTF-8 text"),
    "over the size limit": (
        lambda raw: raw + raw[raw.index(b"\n") + 1 :] * 2,
        f"over the limit of {UPLOAD_LIMIT:,} bytes",
    ),
}


@pytest.mark.parametrize("case", list(BAD_EXTRACTS))
def test_bad_extract_is_refused_clearly_and_changes_nothing(
    governed: GovernedService, case: str
) -> None:
    make, expected = BAD_EXTRACTS[case]
    data = make(governed.world.extract(SMALL))
    before = snapshot(governed)
    with governed.provider() as provider, pytest.raises(InvalidRequestError) as caught:
        provider.upload(DATASET_ID, SMALL, data)
    assert expected in caught.value.message
    assert snapshot(governed) == before


def test_refusal_lists_each_distinct_problem_once_one_a_line(governed: GovernedService) -> None:
    rows = [good_row(mode="Phone") for _ in range(40)] + [good_row(status="Gone")]
    with governed.provider() as provider, pytest.raises(InvalidRequestError) as caught:
        provider.upload(DATASET_ID, SMALL, csv_bytes(rows))
    lines = caught.value.message.splitlines()
    assert (
        lines[0] == "the extract was refused, nothing was staged (2 problems; each is listed once):"
    )
    assert lines[1].startswith("lines 2, 3, 4 and 37 more, column mode: not one of the")
    assert lines[2].startswith("line 42, column status: not one of the dataset's labels")
    assert len(lines) == 3
    assert "Phone" not in caught.value.message
    assert "Gone" not in caught.value.message
    assert caught.value.metadata["problem_count"] == "2"


def test_extract_for_another_practice_is_forbidden(governed: GovernedService) -> None:
    before = snapshot(governed)
    with governed.provider() as provider, pytest.raises(PermissionDeniedError) as caught:
        provider.upload(DATASET_ID, OTHER, governed.world.extract(OTHER))
    assert caught.value.reason == "PRACTICE_FORBIDDEN"
    assert caught.value.message == (
        f"this token may upload only for practice {SMALL}; the extract is for {OTHER}: "
        "use a token bound to that practice"
    )
    assert snapshot(governed) == before


def _stream(
    service: GovernedService, messages: list[provider_pb2.UploadExtractRequest]
) -> grpc.RpcError:
    metadata = (("authorization", f"Bearer {service.tokens['provider']}"),)
    with grpc.insecure_channel(service.target) as channel:
        stub = provider_pb2_grpc.ProviderServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.UploadExtract(iter(messages), metadata=metadata, timeout=30)
    return caught.value


def _header(size: int) -> provider_pb2.UploadExtractRequest:
    return provider_pb2.UploadExtractRequest(
        header=provider_pb2.UploadHeader(
            dataset_id=DATASET_ID, practice_code=SMALL, size_bytes=size
        )
    )


def test_stream_shorter_than_its_header_is_refused(governed: GovernedService) -> None:
    raw = governed.world.extract(SMALL)
    before = snapshot(governed)
    error = _stream(
        governed, [_header(len(raw)), provider_pb2.UploadExtractRequest(chunk=raw[:5000])]
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the upload was cut short" in (error.details() or "")
    assert snapshot(governed) == before


def test_stream_past_the_limit_is_cut_off_while_streaming(governed: GovernedService) -> None:
    chunk = provider_pb2.UploadExtractRequest(chunk=b"x" * 100_000)
    before = snapshot(governed)
    error = _stream(governed, [_header(UPLOAD_LIMIT - 1)] + [chunk] * 10)  # declares less
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the limit" in (error.details() or "")
    assert snapshot(governed) == before


@pytest.mark.parametrize("sent", ["whole extract", "first 5,000 bytes"])
def test_upload_without_its_size_is_refused_saying_what_to_set(
    governed: GovernedService, sent: str
) -> None:
    """Without `size_bytes` a stream cut short would be staged as if it were whole."""
    raw = governed.world.extract(SMALL)
    data = raw if sent == "whole extract" else raw[:5000]
    before = snapshot(governed)
    error = _stream(governed, [_header(0), provider_pb2.UploadExtractRequest(chunk=data)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    refused = from_rpc_error(error)
    assert (refused.reason, refused.field) == ("MISSING_FIELD", "header.size_bytes")
    assert refused.message.startswith(
        "header.size_bytes is required: set it to the extract's size in bytes"
    )
    assert snapshot(governed) == before
    with Ledger.open_sqlite(governed.ledger_path) as ledger:
        last = ledger.list_events(after_seq=ledger.head().count - 1)[-1]
    assert (last.rpc, last.outcome, last.detail) == (
        "UploadExtract",
        Outcome.INVALID,
        "MISSING_FIELD",
    )


def test_the_client_declares_the_size_of_what_it_uploads(
    governed: GovernedService, tmp_path: Path
) -> None:
    """From bytes and from a file: the server would refuse an upload without its size."""
    raw = governed.world.extract(SMALL)
    path = tmp_path / f"{SMALL}.csv"
    path.write_bytes(raw)
    with governed.provider() as provider:
        from_bytes = provider.upload(DATASET_ID, SMALL, raw, chunk_bytes=100_000)
        from_file = provider.upload(DATASET_ID, SMALL, path, chunk_bytes=100_000)
    assert from_bytes.rows_staged == from_file.rows_staged > 0


def test_opted_out_patients_contribute_nothing_to_the_stored_files(
    governed: GovernedService,
) -> None:
    raw = governed.world.extract(SMALL)
    with governed.provider() as provider:
        uploaded = provider.upload(DATASET_ID, SMALL, raw)
    with governed.admin() as admin:
        admin.publish_dataset_version(DATASET_ID)
    key = load_or_create_key(governed.world.key_file)
    listed = set(patient_keys(key, sorted(governed.opted_out_numbers)).tolist())
    staged = pl.read_parquet(StagingArea(governed.world.governance_root / DATASET_ID).path(SMALL))
    published = version_rows(governed.world.store_root)
    assert not listed & set(staged["patient_key"].to_list())
    assert not listed & set(published["patient_key"].to_list())
    version = DatasetStore(governed.world.store_root).current(DATASET_ID)
    everyone = minimise_extract(raw, IngestPolicy.of(version.metadata, SMALL), key).rows
    kept = everyone.filter(~pl.col("patient_key").is_in(sorted(listed)))
    assert uploaded.rows_opted_out == everyone.height - kept.height > 0
    assert staged.height == kept.height


def test_status_shows_consent_and_the_last_upload(governed: GovernedService) -> None:
    with governed.provider() as provider:
        provider.upload(DATASET_ID, SMALL, governed.world.extract(SMALL))
        status = provider.status(DATASET_ID, SMALL)
    assert status.consent == "granted"
    assert status.rows_staged > 0
    assert status.last_upload_at is not None
    assert dt.datetime.now(dt.UTC) - status.last_upload_at < dt.timedelta(minutes=5)


def test_admin_records_consent_only_with_an_instruction_reference(
    governed: GovernedService,
) -> None:
    with governed.admin_provider() as admin, pytest.raises(InvalidRequestError) as caught:
        admin.set_consent(DATASET_ID, UNUSED, "withdrawn")
    assert caught.value.reason == "INSTRUCTION_REFERENCE_REQUIRED"


def test_withdrawal_removes_the_practice_from_later_versions(governed: GovernedService) -> None:
    earlier = current_version(governed)
    with governed.admin_provider() as admin:
        assert admin.set_consent(DATASET_ID, UNUSED, "withdrawn", "letter 2025/31") == "withdrawn"
        assert admin.status(DATASET_ID, UNUSED).consent == "withdrawn"
    with governed.admin() as admin:
        admin.publish_dataset_version(DATASET_ID)
    with governed.analyst() as analyst:
        described = analyst.describe(DATASET_ID)
        practices = next(c for c in described.columns if c.name == "practice_code").values
        by_practice = analyst.query(count(DATASET_ID).by("practice_code").epsilon(1)).frame
    assert UNUSED not in practices
    assert UNUSED not in by_practice["practice_code"].to_list()
    assert UNUSED not in version_rows(governed.world.store_root)["practice_code"].to_list()
    old = DatasetStore(governed.world.store_root).open_version(DATASET_ID, earlier)
    old.verify_files()
    with governed.admin_provider() as admin:
        admin.set_consent(DATASET_ID, UNUSED, "granted", "letter 2025/32")


def test_no_file_the_server_wrote_holds_identifying_values(governed: GovernedService) -> None:
    raw = governed.world.extract(SMALL)
    with governed.provider() as provider:
        provider.upload(DATASET_ID, SMALL, raw)
    with governed.admin() as admin:
        admin.publish_dataset_version(DATASET_ID)
    frame = pl.read_csv(io.BytesIO(raw), infer_schema=False)
    window_start = "2024-12-01"
    identifying = (
        set(frame["nhs_number"].to_list())
        | {d for d in frame["date_of_birth"].to_list() if d < window_start}
        | set(frame["postcode"].to_list())
        | set(governed.opted_out_numbers)
    )
    written = [*governed.world.store_root.rglob("*"), *governed.ledger_path.parent.glob("ledger*")]
    files = [p for p in written if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    listed = sorted(identifying)
    assert _text_tokens(raw) >= identifying - set(governed.opted_out_numbers)  # the probe works
    for path in files:
        if path.suffix == ".parquet":
            assert not _parquet_holds(path, listed), path
        else:
            assert not _text_tokens(path.read_bytes()) & identifying, path


_TOKENS = re.compile(
    rb"(?<!\d)\d{10}(?!\d)|\d{4}-\d{2}-\d{2}|[A-Z]{2}\d{1,2} \d[A-Z]{2}|\d{3} \d{3} \d{4}"
)


def _text_tokens(data: bytes) -> set[str]:
    """Everything in raw bytes shaped like an NHS number, a date or a postcode."""
    found = {m.decode("ascii") for m in _TOKENS.findall(data)}
    return found | {t.replace(" ", "") for t in found}


def _parquet_holds(path: Path, values: list[str]) -> bool:
    """Whether any column of the decoded file, as text, equals one of `values`."""
    frame = pl.scan_parquet(path)
    found = frame.select(
        pl.any_horizontal(
            pl.col(c).cast(pl.String).is_in(values).any() for c in frame.collect_schema().names()
        )
    )
    return bool(found.collect().item())
