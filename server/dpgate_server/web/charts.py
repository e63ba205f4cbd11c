"""Line charts as inline SVG, drawn on the server (no JavaScript, no chart library).

Each series' points are also carried as data attributes (`data-series`, `data-points`:
ISO time and value pairs), so a test or a screen reader can read the chart's numbers
without parsing geometry. A table with the same figures accompanies every chart.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 220
MARGIN = 40
COLOURS = ("#005eb8", "#da291c", "#007f3b", "#7c2855", "#ed8b00", "#330072")


@dataclass(frozen=True, slots=True)
class Point:
    at: dt.datetime
    value: Decimal


@dataclass(frozen=True, slots=True)
class Series:
    """One line: a label and its points in time order (a step line of a running total)."""

    label: str
    points: tuple[Point, ...]


def line_chart(
    title: str, series: list[Series], cap: Decimal | None = None, until: dt.datetime | None = None
) -> Markup:
    """An SVG chart of cumulative spend over time up to `until`, with an optional cap line."""
    points = [p for s in series for p in s.points]
    top = max([p.value for p in points] + ([cap] if cap is not None else []) + [Decimal(0)])
    top = top if top > 0 else Decimal(1)
    times = [p.at for p in points]
    start = min(times) if times else dt.datetime.now(dt.UTC)
    end = max([*times, until] if until is not None else times) if times else start
    span = max((end - start).total_seconds(), 1.0)

    def x(at: dt.datetime) -> float:
        return MARGIN + (WIDTH - 2 * MARGIN) * (at - start).total_seconds() / span

    def y(value: Decimal) -> float:
        return HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * float(value / top)

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" '
        f'y2="{HEIGHT - MARGIN}" stroke="#425563"/>',
        f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{HEIGHT - MARGIN}" '
        'stroke="#425563"/>',
        f'<text x="{MARGIN - 4}" y="{MARGIN + 4}" text-anchor="end" font-size="11">{top}</text>',
        f'<text x="{MARGIN - 4}" y="{HEIGHT - MARGIN}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{MARGIN}" y="{HEIGHT - MARGIN + 16}" font-size="11">'
        f"{start:%Y-%m-%d %H:%M}</text>",
        f'<text x="{WIDTH - MARGIN}" y="{HEIGHT - MARGIN + 16}" text-anchor="end" '
        f'font-size="11">{end:%Y-%m-%d %H:%M}</text>',
    ]
    if cap is not None:
        parts.append(
            f'<line class="cap" data-cap="{cap}" x1="{MARGIN}" y1="{y(cap):.1f}" '
            f'x2="{WIDTH - MARGIN}" y2="{y(cap):.1f}" stroke="#768692" stroke-dasharray="4 3"/>'
        )
    for index, one in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        data = " ".join(f"{p.at.isoformat()}={p.value}" for p in one.points)
        coordinates = _steps([(x(p.at), y(p.value)) for p in one.points], y(Decimal(0)), x(end))
        parts.append(
            f'<polyline class="series" data-series="{escape(one.label)}" data-points="{data}" '
            f'fill="none" stroke="{colour}" stroke-width="2" points="{coordinates}"/>'
        )
        parts.append(
            f'<text x="{MARGIN + 8}" y="{MARGIN + 12 + 14 * index}" font-size="11" '
            f'fill="{colour}">{escape(one.label)}</text>'
        )
    parts.append("</svg>")
    # Every interpolated text (title, labels) is escaped above; the rest are numbers.
    return Markup("".join(parts))  # noqa: S704


def _steps(points: list[tuple[float, float]], zero: float, right: float) -> str:
    """A running total drawn as steps from zero: flat until each new release, then to now."""
    if not points:
        return ""
    path = [(points[0][0], zero)]
    for index, (px, py) in enumerate(points):
        if index > 0:
            path.append((px, path[-1][1]))
        path.append((px, py))
    path.append((right, path[-1][1]))
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in path)
