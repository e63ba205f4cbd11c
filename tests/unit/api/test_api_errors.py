"""API-level errors behave as exceptions everywhere they can be raised."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from dpgate_server.api.errors import BadRequestError, NotYetAvailableError


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    yield


def test_bad_request_error_passes_through_a_generator_context_manager() -> None:
    with pytest.raises(BadRequestError) as caught, guarded():
        raise BadRequestError("MISSING_FIELD", "dataset_id is required", "dataset_id")
    assert caught.value.field == "dataset_id"
    assert str(caught.value) == "dataset_id is required"


def test_not_yet_available_error_names_what_is_missing() -> None:
    with (
        pytest.raises(NotYetAvailableError, match="X is not implemented yet: it needs Y"),
        guarded(),
    ):
        raise NotYetAvailableError("X", "Y")
