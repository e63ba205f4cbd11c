"""The client's bias figure: read from the wire as stored, said in words beside answers."""

from __future__ import annotations

from decimal import Decimal

from dpgate import BiasFigure, DroppedPatients, PublishedVersion
from dpgate._convert import bias_figure, published_version
from dpgate.cli._output import bias_in_words
from dpgate_proto.v1 import types_pb2


def _message() -> types_pb2.BiasFigure:
    return types_pb2.BiasFigure(
        released=True,
        counts=[
            types_pb2.DroppedPatients(
                bound=types_pb2.CONTRIBUTION_BOUND_KIND_TOTAL_ROWS,
                limit=24,
                value=1234,
                ci_low=1150.0,
                ci_high=1318.0,
            ),
            types_pb2.DroppedPatients(
                bound=types_pb2.CONTRIBUTION_BOUND_KIND_ROWS_PER_PERIOD,
                period="week",
                limit=3,
                value=-5,
                ci_low=-89.0,
                ci_high=79.0,
            ),
            types_pb2.DroppedPatients(
                bound=types_pb2.CONTRIBUTION_BOUND_KIND_PERIODS,
                period="week",
                limit=10,
                value=40,
                ci_low=-44.0,
                ci_high=124.0,
            ),
        ],
        mechanism="discrete_laplace",
        noise_scale=28.0,
        confidence_level=0.95,
        spend=types_pb2.Spend(accounting=types_pb2.ACCOUNTING_PURE_DP, nano_units=50_000_000),
    )


def test_a_released_figure_reads_as_patients_dropped_by_each_bound() -> None:
    figure = bias_figure(_message(), "v000003")
    assert figure.released
    assert figure.spend == Decimal("0.05")
    assert figure.accounting == "pure_dp"
    assert figure.counts[1] == DroppedPatients("rows_per_period", "week", 3, -5, -89.0, 79.0)
    assert figure.lines() == [
        "1,234 ± 84 patients had rows dropped by the 24-row bound",
        "-5 ± 84 patients had rows dropped by the 3-rows-a-week bound",
        "40 ± 84 patients had rows dropped by the 10-weeks bound",
    ]
    assert repr(figure).startswith("BiasFigure(v000003: 1,234 ± 84 patients had rows dropped")
    shown = bias_in_words(figure)
    assert shown[0] == "bias of the bounds (v000003, DP counts, 95% intervals, free to read):"
    assert shown[1:] == [f"  {line}" for line in figure.lines()]


def test_a_withheld_figure_says_why() -> None:
    message = types_pb2.BiasFigure(released=False, note="the cap has epsilon 0 left")
    figure = bias_figure(message, "v000004")
    assert figure == BiasFigure(version="v000004", released=False, note=message.note)
    assert figure.lines() == ["no bias figure for v000004: the cap has epsilon 0 left"]
    assert bias_in_words(figure) == [
        "bias of the bounds: no figure for v000004 (the cap has epsilon 0 left)"
    ]
    assert bias_in_words(None) == []


def test_a_publish_result_is_a_dataset_info_with_its_figure() -> None:
    summary = types_pb2.DatasetSummary(
        dataset_id="gp_appointments",
        version="v000003",
        accounting=types_pb2.ACCOUNTING_PURE_DP,
        max_contributions=24,
        period_start="2024-04-01",
        period_end="2025-03-31",
    )
    published = published_version(summary, _message())
    assert isinstance(published, PublishedVersion)
    assert published.version == "v000003"
    assert published.bias_figure == bias_figure(_message(), "v000003")
    assert published_version(summary, None).bias_figure is None
