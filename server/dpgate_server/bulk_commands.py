"""`dpgate-server ingest FOLDER`, `optouts load FILE` and `publish DATASET`: bulk loads for
the operator on the server's own machine, through the same governance service as the RPCs.

Each file goes through `Governance.ingest` (or `load_opt_out_list`) exactly as an upload
would, with the local operator as the caller, so it passes the same checks and is audited
the same way: an accepted file by the service itself, a refused one here with the outcome
and reason its RPC would record. The progress bars show files and bytes, or a publish's
stages with practices done of total, never counts of rows (they are private until released
with noise).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from dpgate_server.api.errors import answer_for
from dpgate_server.api.ledger_storage import open_ledger_storage, open_reader_leases
from dpgate_server.api.provider_servicer import governance_for
from dpgate_server.bounded_pool import in_parallel
from dpgate_server.config import ConfigError, Settings, load_settings
from dpgate_server.governance.optouts import OptOutKind
from dpgate_server.governance.publish_progress import PublishProgress
from dpgate_server.governance.service import Governance
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo
from dpgate_server.spend import describe
from dpgate_server.store.chosen_bounds import ChosenBoundsRecord
from dpgate_server.store.store import DatasetStore
from dpgate_server.vocabulary.errors import DomainError

EXTRACT_SUFFIXES = (".csv.gz", ".csv")
"""What `ingest` picks up in a folder; the practice code is the name before the suffix."""
DEFAULT_INGEST_JOBS = 2
"""Two extracts at once: while one is in a single-threaded step (HMAC of its patients,
the Parquet footer, the audit) the other keeps Polars busy; more would only add memory."""

optouts_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Opt-out lists.")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file (DPGATE_* variables override it)."),
]


@dataclass(frozen=True, slots=True)
class RefusedExtract:
    """A file that was refused, and why (the message its RPC would answer with)."""

    name: str
    reason: str
    message: str

    def __str__(self) -> str:
        """One line, then the message's further lines (an extract's problems) indented."""
        first, *rest = self.message.splitlines() or [""]
        return "\n".join(
            [f"refused {self.name}: {self.reason}: {first}", *(f"  {r}" for r in rest)]
        )


def extract_files(folder: Path) -> list[tuple[str, Path]]:
    """(practice code, path) of every extract in `folder`, by name."""
    found = []
    for path in sorted(folder.iterdir()):
        for suffix in EXTRACT_SUFFIXES:
            if path.is_file() and path.name.endswith(suffix):
                found.append((path.name[: -len(suffix)], path))
                break
    return found


def ingest(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Folder of extracts named PRACTICE.csv or PRACTICE.csv.gz.",
            exists=True,
            file_okay=False,
        ),
    ],
    dataset: Annotated[str, typer.Option(help="The dataset to stage them for.")] = (
        "gp_appointments"
    ),
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Extracts validated at once (each is held in memory whole while it is).",
        ),
    ] = DEFAULT_INGEST_JOBS,
    config: ConfigOption = None,
) -> None:
    """Validate and stage every extract in FOLDER, as UploadExtract would (audited alike).

    A refused file changes nothing and is listed with its reason; the others are staged.
    They reach analysts at the next publish. Exits 1 if any file was refused.
    """
    settings = _settings_or_exit(config)
    files = extract_files(folder)
    if not files:
        typer.echo(f"dpgate-server: no *.csv or *.csv.gz extracts in {folder}", err=True)
        raise typer.Exit(2)
    refused: list[RefusedExtract] = []
    with _governance(settings) as (governance, ledger), _progress() as progress:
        task = progress.add_task(
            "extracts", total=sum(p.stat().st_size for _, p in files), files=f"0/{len(files)}"
        )

        def ingest_one(file: tuple[str, Path]) -> RefusedExtract | None:
            code, path = file
            request = _request("UploadExtract", f"ingest {dataset} {code} from {path.name}")
            try:
                governance.ingest(dataset, code, path.read_bytes(), request)
            except DomainError as exc:
                return _refusal(ledger, request, path.name, exc)
            return None

        governance.refresh_opt_outs()  # a list waiting at a drop path: once, before any extract
        outcomes = in_parallel(files, ingest_one, jobs)
        for done, ((_, path), outcome) in enumerate(outcomes, start=1):
            if outcome is not None:
                refused.append(outcome)
            progress.update(task, advance=path.stat().st_size, files=f"{done}/{len(files)}")
    refused.sort(key=lambda r: r.name)  # as a sequential run lists them, whatever finished first
    staged = len(files) - len(refused)
    typer.echo(f"{staged} of {len(files)} extracts staged for {dataset}", err=True)
    for item in refused:
        typer.echo(str(item), err=True)
    if refused:
        raise typer.Exit(1)


@optouts_app.command("load")
def load_opt_outs(
    file: Annotated[
        Path,
        typer.Argument(
            help="The list: a header and one NHS number a line (it is deleted once"
            " its keys are stored).",
            exists=True,
            dir_okay=False,
        ),
    ],
    kind: Annotated[OptOutKind, typer.Option(help="Which list it replaces.")] = (
        OptOutKind.NATIONAL
    ),
    config: ConfigOption = None,
) -> None:
    """Replace an opt-out list, as LoadOptOutList would (audited alike), and remove the
    listed patients' staged rows."""
    settings = _settings_or_exit(config)
    size = file.stat().st_size
    request = _request("LoadOptOutList", f"load {kind.value} opt-out list {file.name}")
    with _governance(settings) as (governance, ledger), _progress() as progress:
        task = progress.add_task("opt-out list", total=size, files="0/1")
        try:
            governance.load_opt_out_list(kind, file, request)
        except DomainError as exc:
            typer.echo(str(_refusal(ledger, request, file.name, exc)), err=True)
            raise typer.Exit(1) from None
        progress.update(task, advance=size, files="1/1")
    typer.echo(f"{kind.value} opt-out list replaced from {file.name}", err=True)


def publish(
    dataset: Annotated[str, typer.Argument(help="The dataset to publish.")],
    choose_bounds: Annotated[
        str | None,
        typer.Option(
            "--choose-bounds",
            help="Bounds to choose privately for this publish, comma-separated, of"
            " max_contributions, week.rows, week.periods, month.rows, month.periods, at the"
            " level and spend of publishing.chosen_bounds (docs/chosen-bounds.md); charged"
            " to the dataset's cap. \"none\": the policy's bounds. Default: the setting's.",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Publish the next version of DATASET from the staged practices, as
    PublishDatasetVersion would (the same service call, audited alike).

    A bar per stage (reading, bounding, writing, verifying) shows practices (buckets,
    checks) done of total, the stage's time and the whole publish's time left.
    """
    settings = _settings_or_exit(config)
    request = _request("PublishDatasetVersion", f"publish {dataset}")
    chosen = bound_names(choose_bounds)
    with _governance(settings) as (governance, ledger):
        with _stage_progress() as progress:
            bars = PublishBars(progress)
            refused: RefusedExtract | None = None
            try:
                result = governance.publish(
                    dataset, request, progress=bars.show, choose_bounds=chosen
                )
            except DomainError as exc:
                refused = _refusal(ledger, request, dataset, exc)
            finally:
                bars.finish()
        if refused is not None:
            typer.echo(str(refused), err=True)
            raise typer.Exit(1)
    typer.echo(
        f"published {dataset} version {result.version.version}"
        f" ({result.practices} practices, {len(result.staged_practices)} from uploads,"
        f" {len(result.withdrawn_practices)} withdrawn)",
        err=True,
    )
    if result.bound_choice is not None:
        typer.echo(describe_bound_choice(result.bound_choice), err=True)


def bound_names(option: str | None) -> tuple[str, ...] | None:
    """`--choose-bounds` as bound names: None (the setting's), () for "none".

    Example:
        >>> bound_names("max_contributions, week.rows"), bound_names("none"), bound_names(None)
        (('max_contributions', 'week.rows'), (), None)
    """
    if option is None:
        return None
    if option.strip().lower() == "none":
        return ()
    return tuple(name.strip() for name in option.split(",") if name.strip())


def describe_bound_choice(record: ChosenBoundsRecord) -> str:
    """What the publish chose privately, or why it kept the policy's bounds.

    Example:
        >>> from dpgate_server.store.chosen_bounds import BoundChoice, ChosenBound
        >>> from dpgate_server.vocabulary.accounting import Accounting
        >>> bound = ChosenBound("max_contributions", 23, 200, 19.8, 100_000_000)
        >>> choice = BoundChoice(Accounting.PURE_DP, 0.99, (bound,))
        >>> policy = {"max_contributions": 24}
        >>> asked = ("max_contributions",)
        >>> print(describe_bound_choice(ChosenBoundsRecord(asked, 100_000_000, policy, choice)))
        bounds chosen privately at level 0.99, epsilon 0.1 charged to the dataset's cap:
          max_contributions 23 (policy 24)
    """
    if record.choice is None:
        kept = ", ".join(f"{name} {record.policy.get(name)}" for name in record.asked)
        return f"bounds not chosen privately: {record.note}; the policy's stand: {kept}"
    choice = record.choice
    spent = describe(record.declared_units, choice.accounting.value)
    lines = [
        f"bounds chosen privately at level {choice.level:g}, {spent} charged to the dataset's cap:"
    ]
    lines += [f"  {b.name} {b.value} (policy {record.policy.get(b.name)})" for b in choice.bounds]
    return "\n".join(lines)


class PublishBars:
    """One rich bar per publish stage, fed by the publish's progress callback.

    Shows only what PublishProgress carries: the stage, units (practices, buckets or
    checks) done of total and time; the whole publish's time left is its own estimate
    (`seconds_left`), as rich's per-task estimate knows nothing of the stages to come.
    `dpgate admin publish` draws the same bars (dpgate/cli/_publish_bars.py); the server
    keeps its own copy because it does not import the client (docs/architecture.md).
    """

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def show(self, step: PublishProgress) -> None:
        task = self._tasks.get(step.stage.value)
        if task is None:
            self.finish()  # a new stage: the earlier ones are over
            task = self._progress.add_task(
                step.stage.value, total=step.total, unit=step.unit, left=""
            )
            self._tasks[step.stage.value] = task
        self._progress.update(
            task, completed=step.done, total=step.total, left=time_left(step.seconds_left)
        )

    def finish(self) -> None:
        """Stop the stages' clocks and clear their time left."""
        for task in self._tasks.values():
            self._progress.update(task, left="")
            self._progress.stop_task(task)


def time_left(seconds: float | None) -> str:
    """ "about 1:05 left", or "" while nothing is done to estimate from.

    Example:
        >>> time_left(65.4), time_left(None)
        ('about 1:05 left', '')
    """
    if seconds is None:
        return ""
    whole = max(0, round(seconds))
    return f"about {whole // 60}:{whole % 60:02d} left"


def _refusal(ledger: Ledger, request: RequestInfo, name: str, exc: DomainError) -> RefusedExtract:
    """Audit a refused file as its RPC would, and say why."""
    answer = answer_for(exc, request.request_id)
    if answer.outcome is not None:
        ledger.record_event(request, answer.outcome, detail=answer.reason.value)
    return RefusedExtract(name, answer.reason.value, answer.message)


def _request(rpc: str, text: str) -> RequestInfo:
    return RequestInfo(
        request_id=f"cli-{uuid.uuid4().hex}", rpc=rpc, query_text=text, source="local"
    )


@contextmanager
def _governance(settings: Settings) -> Iterator[tuple[Governance, Ledger]]:
    with Ledger(open_ledger_storage(settings)) as ledger:
        store = DatasetStore(settings.storage.data_dir, pointer=ledger)  # as the servers read it
        leases = open_reader_leases(settings, store.root)  # retention sees every server's readers
        try:
            yield governance_for(settings, store, ledger, leases), ledger
        finally:
            leases.close()


@contextmanager
def _progress() -> Iterator[Progress]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("files {task.fields[files]}"),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        yield progress


@contextmanager
def _stage_progress() -> Iterator[Progress]:
    """Bars for a publish's stages; on a console that is not a terminal (a log), their
    final state is printed once at the end."""
    progress = Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} {task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]}"),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        yield progress


def _settings_or_exit(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(f"dpgate-server: {exc}", err=True)
        raise typer.Exit(2) from None
