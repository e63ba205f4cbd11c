"""Auditor commands (an auditor token): the audit chain's head, its verification, the report."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dpgate._admin_types import AuditEvent, AuditHead, ChainVerification
from dpgate._audit import AuditClient
from dpgate.cli._errors import ExitCode
from dpgate.cli._output import amount, table
from dpgate.cli._session import JsonOption, connect, output
from dpgate.cli._signed_head_source import read_signed_head

app = typer.Typer(help="Read and verify the audit chain (auditor token).", no_args_is_help=True)


class ReportFormat(StrEnum):
    """Formats of the transparency report."""

    csv = "csv"
    json = "json"


@app.command()
def head(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The chain's length and last hash: keep them, to verify against later."""
    out = output(ctx, json_output)
    with connect(ctx, AuditClient, out) as audit:
        found = audit.head()
    out.emit(found, lambda console: _print_head(console, found))


@app.command()
def verify(
    ctx: typer.Context,
    expected_head: Annotated[
        str | None,
        typer.Option(
            metavar="COUNT:HASH",
            help="A head seen earlier (`dpgate audit head`): the chain must still hold it.",
        ),
    ] = None,
    against_head: Annotated[
        str | None,
        typer.Option(
            metavar="FILE_OR_URL",
            help="A signed head kept earlier (a file, or its URL on the transparency page):"
            " the signature must be the server's and the chain must still hold it.",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Check every event's hash and link; exit code 8 if the chain fails."""
    out = output(ctx, json_output)
    if expected_head is not None and against_head is not None:
        raise typer.BadParameter("give --expected-head or --against-head, not both")
    kept = _parse_head(expected_head)
    signed = None if against_head is None else read_signed_head(against_head)
    with connect(ctx, AuditClient, out) as audit, out.working("verifying the audit chain"):
        if signed is not None:
            try:
                result = audit.verify_signed_head(signed)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--against-head") from None
        else:
            result = audit.verify(kept)
    out.emit(result, lambda console: _print_verification(console, result))
    if not result.valid:
        raise typer.Exit(ExitCode.AUDIT_INVALID)


@app.command()
def events(
    ctx: typer.Context,
    start: Annotated[int, typer.Option("--from", min=1, help="First sequence number.")] = 1,
    limit: Annotated[int, typer.Option(min=1, help="At most this many events.")] = 100,
    json_output: JsonOption = False,
) -> None:
    """Audit events from a sequence number on, oldest first."""
    out = output(ctx, json_output)
    with connect(ctx, AuditClient, out) as audit:
        found = audit.events(start, limit)
    out.emit(found, lambda console: console.print(_events_table(found)))


@app.command()
def export(
    ctx: typer.Context,
    output_file: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="Write here ('-': stdout).")
    ],
    report_format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.json,
    json_output: JsonOption = False,
) -> None:
    """Export the public transparency report (every answered query and its spend, no values)."""
    out = output(ctx, json_output)
    with connect(ctx, AuditClient, out) as audit, out.working("exporting the report"):
        data = audit.transparency_report(report_format.value)
    if str(output_file) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    output_file.write_bytes(data)
    document = {"output": str(output_file), "format": report_format.value, "bytes": len(data)}
    message = f"wrote the transparency report ({report_format.value}, {len(data):,} bytes)"
    out.emit(document, lambda console: console.print(f"{message} to {output_file}"))


def _parse_head(text: str | None) -> AuditHead | None:
    if text is None:
        return None
    count, sep, digest = text.partition(":")
    if not sep or not count.strip().isdigit() or not digest.strip():
        raise typer.BadParameter(
            f"{text!r} is not COUNT:HASH (as `dpgate audit head` prints)",
            param_hint="--expected-head",
        )
    return AuditHead(event_count=int(count), head_hash=digest.strip())


def _print_head(console: Console, found: AuditHead) -> None:
    # soft_wrap: the head stays on one line, to be copied whole into --expected-head.
    console.print(f"{found.event_count} events; head", soft_wrap=True)
    console.print(f"{found.event_count}:{found.head_hash}", soft_wrap=True)


def _print_verification(console: Console, result: ChainVerification) -> None:
    if result.valid:
        console.print(f"the audit chain is valid: {result.head.event_count} events; head")
        console.print(f"{result.head.event_count}:{result.head.head_hash}", soft_wrap=True)
        return
    console.print(
        f"[bold red]the audit chain is NOT valid[/bold red] from event"
        f" {result.first_bad_sequence}: {result.problem}"
    )


def _events_table(found: list[AuditEvent]) -> object:
    rows = [
        (
            e.sequence,
            e.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{e.requester_id} ({e.role})" if e.role else e.requester_id,
            e.rpc,
            e.outcome,
            amount(e.cost) if e.cost else "",
            e.detail,
        )
        for e in found
    ]
    columns = ("seq", "at (UTC)", "requester", "rpc", "outcome", "cost", "detail")
    return table(columns, rows, title=f"Audit events ({len(found)})")
