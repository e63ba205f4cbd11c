"""Errors of data governance (uploads, opt-outs, consent, publishing), in one place.

Each error carries one machine-readable `reason` from the shared catalogue
(`dpgate_server.vocabulary.errors.ErrorReason`); the API layer's table maps it to a status
code, so this package imports no grpc.

Messages never quote a value from an identifying column (NHS number, date of birth,
postcode): they end up in audit details and client logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dpgate_server.vocabulary.errors import DomainError, ErrorReason


class GovernanceError(DomainError):
    """A refused governance action; nothing was changed."""

    def __init__(
        self,
        reason: ErrorReason,
        message: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, metadata)
        self.reason = reason


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
        ErrorReason.EXTRACT_REJECTED,
        f"the extract was refused, nothing was staged: {total} problem(s){more}: {listing}",
        {"problem_count": str(total), "problems": "\n".join(str(p) for p in shown)},
    )
