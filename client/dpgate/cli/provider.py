"""Provider commands (a provider token): practice data uploads and consent.

`status` and `consent` also work with an admin token, for an administrator recording a
practice's written instruction (`--instruction-reference` is then required).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from dpgate._provider import ProviderClient, UploadResult
from dpgate.cli._output import stderr
from dpgate.cli._session import JsonOption, connect, output

app = typer.Typer(help="Practice data uploads and consent (provider token).", no_args_is_help=True)

DatasetArgument = Annotated[
    str, typer.Argument(metavar="DATASET", help="Dataset id, e.g. gp_appointments.")
]
PracticeArgument = Annotated[
    str, typer.Argument(metavar="PRACTICE", help="The practice's code, e.g. A81001.")
]


class ConsentChoice(StrEnum):
    """A practice's decision."""

    granted = "granted"
    withdrawn = "withdrawn"


@app.command()
def upload(
    ctx: typer.Context,
    dataset: DatasetArgument,
    practice: PracticeArgument,
    extract: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="The practice's raw CSV extract (columns in the README).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    json_output: JsonOption = False,
) -> None:
    """Upload a practice's extract: validated, minimised and staged by the server.

    The whole file is refused if any row is wrong (each distinct problem is listed once,
    one a line, with its column and lines); nothing is then staged. An accepted extract
    replaces the practice's previous one and reaches analysts at the next published version.
    """
    out = output(ctx, json_output)
    console = stderr()
    with connect(ctx, ProviderClient, out) as provider:
        if out.as_json or not console.is_terminal:
            result = provider.upload(dataset, practice, extract)
        else:
            result = _upload_with_bar(provider, console, dataset, practice, extract)
    out.emit(
        result,
        lambda view: view.print(
            f"staged {result.rows_staged:,} rows for {result.practice_code} "
            f"({result.rows_opted_out:,} left out: their patients opted out); they reach "
            "analysts at the next published version"
        ),
    )


@app.command()
def status(
    ctx: typer.Context,
    dataset: DatasetArgument,
    practice: PracticeArgument,
    json_output: JsonOption = False,
) -> None:
    """The practice's consent and its last staged upload."""
    out = output(ctx, json_output)
    with connect(ctx, ProviderClient, out) as provider:
        found = provider.status(dataset, practice)

    def render(view: Console) -> None:
        view.print(f"{found.practice_code} on {found.dataset_id}: consent {found.consent}")
        if found.last_upload_at is None:
            view.print("no extract staged")
        else:
            when = found.last_upload_at.isoformat(timespec="seconds")
            view.print(f"last extract staged {when}: {found.rows_staged:,} rows")

    out.emit(found, render)


@app.command()
def consent(
    ctx: typer.Context,
    dataset: DatasetArgument,
    practice: PracticeArgument,
    decision: Annotated[
        ConsentChoice, typer.Argument(metavar="granted|withdrawn", help="The practice's decision.")
    ],
    instruction_reference: Annotated[
        str,
        typer.Option(
            "--instruction-reference",
            help="Reference of the practice's written instruction (required on an admin token).",
        ),
    ] = "",
    json_output: JsonOption = False,
) -> None:
    """Grant or withdraw the practice's consent.

    A withdrawal deletes the practice's staged extract and leaves the practice out of every
    version published afterwards. It cannot recall versions already published or answers
    already released from them.
    """
    out = output(ctx, json_output)
    with connect(ctx, ProviderClient, out) as provider:
        state = provider.set_consent(dataset, practice, decision.value, instruction_reference)
    note = (
        "; its staged extract is deleted and it leaves the next published version"
        if state == "withdrawn"
        else ""
    )
    out.emit(
        {"dataset_id": dataset, "practice_code": practice, "consent": state},
        lambda view: view.print(f"{practice} on {dataset}: consent {state}{note}"),
    )


def _upload_with_bar(
    provider: ProviderClient, console: Console, dataset: str, practice: str, extract: Path
) -> UploadResult:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"uploading {extract.name}", total=extract.stat().st_size)
        result = provider.upload(
            dataset,
            practice,
            extract,
            progress=lambda sent, _total: bar.update(task, completed=sent),
        )
        bar.update(task, description="validating and staging")
    return result
