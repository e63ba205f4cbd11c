"""The ledger's one textual form of time: UTC ISO-8601 with microseconds (sorts as text)."""

from __future__ import annotations

import datetime as dt


def utc_now() -> dt.datetime:
    """The current time, timezone-aware UTC (the default clock)."""
    return dt.datetime.now(dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """`moment` as "YYYY-MM-DDTHH:MM:SS.ffffffZ"; refuses naive datetimes."""
    if moment.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    """Inverse of `format_time` (strict: the text must end in "Z")."""
    if not text.endswith("Z"):
        raise ValueError(f"not a ledger time: {text!r}")
    return dt.datetime.fromisoformat(text)


def format_optional(moment: dt.datetime | None) -> str | None:
    """`format_time`, passing None through."""
    return None if moment is None else format_time(moment)


def parse_optional(text: str | None) -> dt.datetime | None:
    """`parse_time`, passing None through."""
    return None if text is None else parse_time(text)
