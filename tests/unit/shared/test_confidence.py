"""One confidence-level rule and one default, applied alike by client, CLI and server."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from dpgate import count
from dpgate_server.queries.accuracy import checked_confidence_level
from dpgate_server.queries.errors import InvalidQuery
from dpgate_server.queries.model import Aggregate, Query
from dpgate_server.vocabulary.errors import ErrorReason
from dpgate_shared.confidence import DEFAULT_CONFIDENCE_LEVEL, check_confidence_level
from dpgate_shared.noise_sums import half_width

BAD_LEVELS = [0, 1, 0.0, 1.0, 95, -0.5, math.nan, math.inf, True, "0.9", None]


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.999999, Decimal("0.9")])
def test_levels_strictly_between_0_and_1_are_accepted(level: object) -> None:
    assert check_confidence_level(level) == float(level)  # type: ignore[arg-type]


@pytest.mark.parametrize("level", BAD_LEVELS)
def test_client_server_and_noise_helpers_refuse_the_same_levels(level: object) -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1") as client_side:
        count("gp").confidence(level)  # type: ignore[arg-type]
    with pytest.raises(InvalidQuery) as server_side:
        checked_confidence_level(level)
    assert server_side.value.reason is ErrorReason.BAD_CONFIDENCE
    assert server_side.value.message == str(client_side.value)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        half_width("discrete_laplace", 2.0, level)  # type: ignore[arg-type]


def test_one_default_level_everywhere() -> None:
    assert DEFAULT_CONFIDENCE_LEVEL == 0.95
    assert count("gp").confidence_level == DEFAULT_CONFIDENCE_LEVEL
    assert count("gp").epsilon(1).to_proto().confidence_level == DEFAULT_CONFIDENCE_LEVEL
    assert Query("gp", Aggregate.count()).confidence_level == DEFAULT_CONFIDENCE_LEVEL
