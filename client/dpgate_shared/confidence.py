"""The confidence level of an answer's intervals: one default and one check.

The server, the client's builders and analysis helpers, and the CLI all use these, so a
level is accepted or refused the same way wherever it is written.

Example:
    >>> check_confidence_level(0.9)
    0.9
    >>> DEFAULT_CONFIDENCE_LEVEL
    0.95
"""

from __future__ import annotations

import math
from decimal import Decimal

DEFAULT_CONFIDENCE_LEVEL = 0.95
"""The level used when none is given (on the wire, a level of 0 means this default)."""


def check_confidence_level(level: object) -> float:
    """`level` (a float, int or Decimal) as a float strictly between 0 and 1.

    Raises:
        ValueError: `level` is not a real number (a bool is not), not finite, or not in
            (0, 1). The message says what to write instead.
    """
    if (
        isinstance(level, bool)
        or not isinstance(level, float | int | Decimal)
        or not math.isfinite(level)
        or not 0 < level < 1
    ):
        raise ValueError(
            f"the confidence level must be a number strictly between 0 and 1, got "
            f"{level!r:.40}; use e.g. {DEFAULT_CONFIDENCE_LEVEL} for 95% intervals"
        )
    return float(level)
