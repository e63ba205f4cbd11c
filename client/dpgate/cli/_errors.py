"""Exit codes scripts can rely on, and how a failure is reported (stderr, no traceback).

| code | meaning                                                               |
|------|-----------------------------------------------------------------------|
| 0    | success                                                               |
| 1    | anything else (a server error: quote its request id)                  |
| 2    | bad input: usage, option values, config, or a query the server refused |
| 3    | budget exhausted: nothing was charged                                 |
| 4    | authentication or permission: no, bad or revoked token, wrong role    |
| 5    | not found: dataset, requester, token, allocation                      |
| 6    | server unavailable or overloaded (retry later), or the call timed out |
| 7    | conflict with the current state: exists already, or below what is spent |
| 8    | the audit chain failed verification                                   |
"""

from __future__ import annotations

import json
import sys
from enum import IntEnum

from dpgate.errors import (
    AlreadyExistsError,
    AuthenticationError,
    BudgetExhaustedError,
    DeadlineExceededError,
    DpgateError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    PreconditionFailedError,
    ServerUnavailableError,
)
from dpgate_shared.reasons import ErrorReason


class ExitCode(IntEnum):
    """The process exit status of `dpgate` (the table in this module's docstring)."""

    OK = 0
    OTHER = 1
    BAD_INPUT = 2
    BUDGET_EXHAUSTED = 3
    AUTH = 4
    NOT_FOUND = 5
    UNAVAILABLE = 6
    CONFLICT = 7
    AUDIT_INVALID = 8


_BY_ERROR: tuple[tuple[type[DpgateError], ExitCode], ...] = (
    (InvalidRequestError, ExitCode.BAD_INPUT),
    (BudgetExhaustedError, ExitCode.BUDGET_EXHAUSTED),
    (AuthenticationError, ExitCode.AUTH),
    (PermissionDeniedError, ExitCode.AUTH),
    (NotFoundError, ExitCode.NOT_FOUND),
    (OverloadedError, ExitCode.UNAVAILABLE),
    (ServerUnavailableError, ExitCode.UNAVAILABLE),
    (DeadlineExceededError, ExitCode.UNAVAILABLE),
    (PreconditionFailedError, ExitCode.CONFLICT),
    (AlreadyExistsError, ExitCode.CONFLICT),
)


def exit_code_for(error: DpgateError) -> ExitCode:
    """The exit code a script sees for `error`."""
    for cls, code in _BY_ERROR:
        if isinstance(error, cls):
            return code
    return ExitCode.OTHER


def report_error(error: DpgateError, *, as_json: bool, target: str) -> ExitCode:
    """Write `error` to stderr (text, or one JSON object) and return its exit code."""
    code = exit_code_for(error)
    if as_json:
        payload = {
            "error": {
                "exit_code": int(code),
                "status": error.code,
                "reason": error.reason,
                "message": error.message,
                "metadata": error.metadata,
            }
        }
        sys.stderr.write(json.dumps(payload) + "\n")
        return code
    first, *rest = error.message.splitlines() or [""]
    lines = [f"dpgate: error: {first}", *(f"  {line}" for line in rest)]
    if error.reason:
        lines.append(f"  reason: {error.reason}")
    lines.extend(
        f"  {key}: {value}"
        for key, value in sorted(error.metadata.items())
        if not key.endswith("_nano_units")  # the same amounts, in wire units
    )
    hint = _hint(error, code, target)
    if hint:
        lines.append(f"  hint: {hint}")
    sys.stderr.write("\n".join(lines) + "\n")
    return code


def report_problem(message: str, code: ExitCode, *, as_json: bool) -> ExitCode:
    """Write a local problem (bad config, bad option value) to stderr; return `code`."""
    if as_json:
        payload = {"error": {"exit_code": int(code), "reason": "", "message": message}}
        sys.stderr.write(json.dumps(payload) + "\n")
    else:
        sys.stderr.write(f"dpgate: error: {message}\n")
    return code


_PERMISSION_HINTS = {
    ErrorReason.ROLE_FORBIDDEN.value: (
        "this command needs a token with another role; see `dpgate config`"
    ),
    ErrorReason.PRACTICE_FORBIDDEN.value: (
        "an administrator issues a token for a practice: "
        "`dpgate admin tokens issue REQUESTER --role provider --practice CODE`"
    ),
}
"""Hints for the permission refusals whose message alone does not say what to do next (a
disabled requester or a self-grant is said plainly by the server's message)."""


def _hint(error: DpgateError, code: ExitCode, target: str) -> str:
    if isinstance(error, AuthenticationError):
        return "set DPGATE_TOKEN (or a token in the config file); see `dpgate config`"
    if isinstance(error, PermissionDeniedError):
        return _PERMISSION_HINTS.get(error.reason, "")
    if isinstance(error, BudgetExhaustedError):
        return "ask your administrator for a top-up, or `dpgate preview` a cheaper query"
    if isinstance(error, ServerUnavailableError) and not error.reason:
        return f"is a dpgate server running at {target}? (DPGATE_TARGET, or the config file)"
    return ""
