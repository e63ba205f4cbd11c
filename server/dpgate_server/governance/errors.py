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
    """One distinct thing wrong with an extract: where (column, lines) and what.

    A problem is listed once however many rows have it: its first lines are named and the
    rest counted. `line` counts the file's lines with the header as line 1 (0 for the file
    as a whole), which is the row number a spreadsheet shows. The message never quotes a
    value from the extract (it ends up in audit details and client logs).
    """

    line: int
    column: str
    message: str
    other_lines: tuple[int, ...] = ()
    """Further lines with the same problem, after `line` (the first few only)."""
    line_count: int = 1
    """Every line with the problem."""

    def __str__(self) -> str:
        column = f", column {self.column}" if self.column else ""
        return f"{self._where()}{column}: {self.message}"

    def _where(self) -> str:
        if self.line == 0:
            return "file"
        if self.line_count <= 1:
            return f"line {self.line}"
        shown = (self.line, *self.other_lines)
        rest = self.line_count - len(shown)
        listed = ", ".join(str(n) for n in shown)
        return f"lines {listed}" + (f" and {rest:,} more" if rest > 0 else "")


LINES_NAMED_PER_PROBLEM = 3
"""How many of a problem's lines a refusal names; the others are counted."""
MAX_LISTING_BYTES = 900
"""Longest listing of problems in a refusal (UTF-8 bytes): the API sends at most 1,024
bytes of message (api/errors.py), and a listing cut mid-line would hide what was left out."""


def extract_rejected(problems: Sequence[Problem]) -> GovernanceError:
    """The refusal of a whole extract: each distinct problem once, one a line, in the order
    of their first lines (as many as fit the message; the others are counted)."""
    count = len(problems)
    head = (
        f"the extract was refused, nothing was staged ({count} problem{'s' if count > 1 else ''}"
        + ("; each is listed once):" if count > 1 else "):")
    )
    listed: list[str] = []
    size = len(head.encode())
    for problem in problems:
        line = str(problem)
        size += len(line.encode()) + 1
        if size > MAX_LISTING_BYTES and listed:
            break
        listed.append(line)
    if len(listed) < count:
        listed.append(
            f"and {count - len(listed)} more problem(s): fix these, then upload again to see them"
        )
    return GovernanceError(
        ErrorReason.EXTRACT_REJECTED,
        "\n".join([head, *listed]),
        {"problem_count": str(count)},
    )
