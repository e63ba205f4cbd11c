"""Errors of data governance (uploads, opt-outs, consent, publishing), in one place.

Each error carries a `kind` saying which family of refusal it is, so the API layer maps
it to a status code without this package importing grpc, and a machine-readable `reason`.
Messages never quote a value from an identifying column (NHS number, date of birth,
postcode): they end up in audit details and client logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Refusal(StrEnum):
    """Which family of refusal a governance error is (the API maps each to one status)."""

    INVALID = "invalid"
    """The input is wrong (bad extract, unknown practice, bad list): INVALID_ARGUMENT."""
    FORBIDDEN = "forbidden"
    """The caller may not act for this practice: PERMISSION_DENIED."""
    PRECONDITION = "precondition"
    """The state forbids it (consent withdrawn, key mismatch): FAILED_PRECONDITION."""


class GovernanceError(Exception):
    """A refused governance action; nothing was changed.

    Not a frozen dataclass: raising through a `with` block sets `__traceback__`.
    """

    def __init__(
        self,
        kind: Refusal,
        reason: str,
        message: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason
        self.message = message
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an extract: where (line, column) and what.

    `line` counts the file's lines with the header as line 1 (0 for the file as a whole),
    which is the row number a spreadsheet shows.
    """

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        where = "file" if self.line == 0 else f"line {self.line}"
        column = f", column {self.column}" if self.column else ""
        return f"{where}{column}: {self.message}"


MAX_REPORTED_PROBLEMS = 20
"""How many problems a refusal lists; the total is always given."""


def extract_rejected(problems: Sequence[Problem], total: int) -> GovernanceError:
    """The refusal of a whole extract: the first problems (in file order) and the count."""
    shown = list(problems[:MAX_REPORTED_PROBLEMS])
    listing = "; ".join(str(p) for p in shown)
    more = f" (showing the first {len(shown)})" if total > len(shown) else ""
    return GovernanceError(
        Refusal.INVALID,
        "EXTRACT_REJECTED",
        f"the extract was refused, nothing was staged: {total} problem(s){more}: {listing}",
        {"problem_count": str(total), "problems": "\n".join(str(p) for p in shown)},
    )
