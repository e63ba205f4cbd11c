"""Charts of DP answers that show what the noise allows: every estimate with its interval.

Each helper draws on a matplotlib `Axes` (a new figure if none is given) and returns it,
so an estimate-with-interval chart is about three lines:

    >>> from dpgate import count, plot
    >>> weekly = client.query(count("gp_appointments").by("week").epsilon(0.5))  # doctest: +SKIP
    >>> plot.estimates(weekly, "week", title="Appointments per week")  # doctest: +SKIP

What they guarantee, whatever the data:

* `estimates`: the interval is drawn as a band around the line (never left out), and the
  value axis starts at zero, so a small difference is not magnified into a large one.
* `relative_error`: each cell's interval half-width as a percentage of its value: how much
  of every number is noise, readable even where the band is too thin to see.
* `ranking`: one labelled interval per row (e.g. per practice code), sorted by value,
  coloured by `compare_with`'s verdict when the frame has one.
* `cumulative_spend`: privacy spend over dates, as a step line, with the cap if given.

matplotlib is imported only when a chart is drawn: it is in the `notebooks` extra
(`pip install 'dpgate[notebooks]'`), not a dependency of the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from dpgate._types import QueryResult
from dpgate.analysis import Estimates

__all__ = ["cumulative_spend", "estimates", "ranking", "relative_error"]

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Source = QueryResult | Estimates | pl.DataFrame
"""A release, estimates derived from releases, or any frame with value, ci_low, ci_high."""

MAX_TICK_LABELS = 14
"""Category axes show at most this many labels (evenly spaced), so they stay readable."""

VERDICT_COLOURS = {"higher": "tab:red", "lower": "tab:blue", "not distinguishable": "tab:gray"}


def estimates(
    source: Source,
    x: str,
    *,
    by: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    ylabel: str = "estimate",
) -> Axes:
    """Values along `x` (one line per `by` group) with their intervals as shaded bands.

    The value axis starts at zero (a negative noisy value extends it below).
    """
    frame = _frame(source).sort(x)
    ax = _axes(ax)
    for name, rows in _groups(frame, by):
        positions = list(range(rows.height)) if _categorical(rows[x]) else rows[x].to_list()
        line = ax.plot(positions, rows["value"].to_list(), label=name)[0]
        ax.fill_between(
            positions,
            rows["ci_low"].to_list(),
            rows["ci_high"].to_list(),
            color=line.get_color(),
            alpha=0.3,
            label=None if name else f"{_level(source)} interval",
        )
    _category_ticks(ax, frame, x)
    ax.set_ylim(bottom=min(0.0, float(frame["ci_low"].min() or 0.0)))  # type: ignore[arg-type]
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def relative_error(
    source: Source,
    x: str,
    *,
    by: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Each cell's interval half-width as a % of its value (noise against the estimate).

    A value at or below zero has no meaningful relative error and is left out.
    """
    frame = _frame(source).sort(x)
    frame = frame.with_columns(
        ((pl.col("ci_high") - pl.col("ci_low")) / 2 / pl.col("value") * 100).alias("percent")
    ).filter(pl.col("value") > 0)
    ax = _axes(ax)
    for name, rows in _groups(frame, by):
        positions = list(range(rows.height)) if _categorical(rows[x]) else rows[x].to_list()
        ax.plot(positions, rows["percent"].to_list(), marker=".", label=name)
    _category_ticks(ax, frame, x)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(x)
    ax.set_ylabel(f"{_level(source)} interval half-width, % of the value")
    if by is not None:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def ranking(
    frame: pl.DataFrame,
    label: str,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str = "estimate",
    reference: tuple[float, float] | None = None,
) -> Axes:
    """One horizontal interval per row, sorted by value, each row labelled with `label`.

    Rows are coloured by the `compared` column (from `compare_with`) when there is one;
    `reference` (low, high) is shaded, e.g. the pooled interval compared against.
    """
    ordered = frame.sort("value")
    ax = _axes(ax)
    verdicts = (
        ordered["compared"].to_list() if "compared" in ordered.columns else [None] * len(ordered)
    )
    for verdict in dict.fromkeys(verdicts):
        index = [i for i, v in enumerate(verdicts) if v == verdict]
        rows = ordered[index]
        ax.errorbar(
            rows["value"].to_list(),
            index,
            # A noisy value may lie outside its interval where the interval was raised to 0
            # (per_population): the bar then starts at the interval, never below zero length.
            xerr=[
                (rows["value"] - rows["ci_low"]).clip(lower_bound=0).to_list(),
                (rows["ci_high"] - rows["value"]).clip(lower_bound=0).to_list(),
            ],
            fmt="o",
            markersize=3,
            capsize=2,
            color=VERDICT_COLOURS.get(str(verdict), "tab:blue"),
            label=None if verdict is None else f"{verdict} ({len(index)})",
        )
    if reference is not None:
        ax.axvspan(*reference, color="black", alpha=0.12, label="reference interval")
    size = 8 if ordered.height <= 40 else 5
    ax.set_yticks(range(ordered.height), [str(v) for v in ordered[label]], fontsize=size)
    ax.set_ylim(-1, ordered.height)
    lowest = ordered.select(pl.min_horizontal(pl.col("ci_low").min(), pl.col("value").min())).item()
    ax.set_xlim(left=min(0.0, float(lowest or 0.0)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(label)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def cumulative_spend(
    frame: pl.DataFrame,
    *,
    time: str = "time",
    spend: str = "spend",
    by: str = "dataset_id",
    cap: float | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    measure: str = "epsilon",
) -> Axes:
    """Spend added up over dates (a step per release), one line per `by`, and the cap.

    `time` may hold dates, datetimes or ISO 8601 strings (as in the transparency report).
    """
    moments = frame[time]
    if moments.dtype == pl.String:
        moments = moments.str.to_datetime(time_zone="UTC")
    data = (
        frame.with_columns(moments.alias("_when"), pl.col(spend).cast(pl.Float64))
        .sort("_when")
        .with_columns(pl.col(spend).cum_sum().over(by).alias("_total"))
    )
    ax = _axes(ax)
    for name, rows in _groups(data, by):
        ax.step(
            rows["_when"].to_list(), rows["_total"].to_list(), where="post", marker="o", label=name
        )
    if cap is not None:
        ax.axhline(cap, color="tab:red", linestyle="--", label=f"cap ({measure} {cap:g})")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("date")
    ax.set_ylabel(f"cumulative {measure} spent")
    ax.figure.autofmt_xdate()
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def _frame(source: Source) -> pl.DataFrame:
    if isinstance(source, QueryResult | Estimates):
        return source.frame
    return source


def _level(source: Source) -> str:
    if isinstance(source, QueryResult | Estimates):
        return f"{source.confidence_level:.0%}"
    return "the"


def _groups(frame: pl.DataFrame, by: str | None) -> list[tuple[str | None, pl.DataFrame]]:
    if by is None:
        return [(None, frame)]
    return [(str(key[0]), rows) for key, rows in frame.group_by(by, maintain_order=True)]


def _categorical(column: pl.Series) -> bool:
    return column.dtype in (pl.String, pl.Categorical)


def _category_ticks(ax: Axes, frame: pl.DataFrame, x: str) -> None:
    """Label a category axis (weeks, months) with at most MAX_TICK_LABELS evenly spaced."""
    if not _categorical(frame[x]):
        return
    labels = list(dict.fromkeys(str(v) for v in frame[x]))
    step = max(1, -(-len(labels) // MAX_TICK_LABELS))
    positions = list(range(0, len(labels), step))
    ax.set_xticks(positions, [labels[i] for i in positions], rotation=45, ha="right")


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    pyplot = _pyplot()
    _, created = pyplot.subplots(figsize=(9, 4))
    return created  # type: ignore[no-any-return]


def _pyplot() -> Any:
    try:
        from matplotlib import pyplot  # noqa: PLC0415 - only when a chart is drawn
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "dpgate.plot draws with matplotlib, which the client does not install:"
            " pip install 'dpgate[notebooks]'"
        ) from None
    return pyplot
