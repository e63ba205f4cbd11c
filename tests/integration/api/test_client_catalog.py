"""The real client against the real server: catalog calls and the exception tree."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pytest

from dpgate import Client, InvalidRequestError, NotFoundError
from dpgate_server.store.store import DatasetVersion

from .conftest import Service


@pytest.fixture
def client(service: Service) -> Iterator[Client]:
    with Client(service.target, token=service.tokens["analyst"], timeout=10) as connected:
        yield connected


def test_datasets_lists_the_current_version(client: Client, small_dataset: DatasetVersion) -> None:
    [info] = client.datasets()
    assert info.dataset_id == small_dataset.dataset_id
    assert info.version == small_dataset.version
    assert info.accounting == "pure_dp"
    assert info.period_start.isoformat() == "2024-12-01"


def test_describe_gives_typed_columns(client: Client, small_dataset: DatasetVersion) -> None:
    description = client.describe(small_dataset.dataset_id)
    assert description.column("duration_minutes").bounds == (0, 60)
    assert description.column("status").values == ("Attended", "DNA", "Unknown")
    assert not description.column("patient_key").public
    assert "practices" in description.public_tables


def test_describe_unknown_column_names_the_columns(
    client: Client, small_dataset: DatasetVersion
) -> None:
    description = client.describe(small_dataset.dataset_id)
    with pytest.raises(KeyError, match="practice_code"):
        description.column("nhs_number")


def test_public_table_is_a_polars_frame(client: Client, small_dataset: DatasetVersion) -> None:
    practices = client.public_table(small_dataset.dataset_id, "practices")
    assert isinstance(practices, pl.DataFrame)
    assert practices.height == len(small_dataset.metadata.column("practice_code").values or ())
    assert (practices["list_size"] > 0).all()


def test_unknown_dataset_raises_not_found_with_reason(client: Client) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.describe("nope")
    assert caught.value.reason == "DATASET_NOT_FOUND"
    assert caught.value.metadata["dataset_id"] == "nope"


def test_missing_dataset_id_raises_invalid_query_naming_the_field(client: Client) -> None:
    for blank in ("", "  "):  # one rule for a required field, in every service
        with pytest.raises(InvalidRequestError) as caught:
            client.describe(blank)
        assert (caught.value.reason, caught.value.field) == ("MISSING_FIELD", "dataset_id")
