"""Administrator commands (an admin token): requesters, tokens, allocations, caps, reports.

Amounts are given as decimals (`--epsilon 0.5`) and sent exactly (to 1e-9); every change
is recorded in the server's audit chain under the token that made it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

import polars as pl
import typer
from rich.console import Console

from dpgate._admin import AdminClient
from dpgate._admin_types import DatasetBudget, Requester, TokenRecord
from dpgate._types import BudgetInfo, DatasetInfo, PublishedVersion
from dpgate.cli._errors import ExitCode, report_problem
from dpgate.cli._output import (
    EQUIVALENT_NOTE,
    amount_in_plain_terms,
    bias_in_words,
    stderr,
    table,
    unit,
)
from dpgate.cli._publish_bars import publish_bars
from dpgate.cli._session import JsonOption, connect, output
from dpgate.errors import NotFoundError

app = typer.Typer(help="Run requesters, tokens and budgets (admin token).", no_args_is_help=True)
requesters_app = typer.Typer(help="Requesters: who may be issued tokens.", no_args_is_help=True)
tokens_app = typer.Typer(help="Issue, list and revoke tokens.", no_args_is_help=True)
cap_app = typer.Typer(help="A dataset's global cap across all requesters.", no_args_is_help=True)
datasets_app = typer.Typer(
    help="A dataset's cap, allocations, spending and release sharing.", no_args_is_help=True
)
app.add_typer(requesters_app, name="requesters")
app.add_typer(tokens_app, name="tokens")
app.add_typer(cap_app, name="cap")
app.add_typer(datasets_app, name="datasets")


class Switch(StrEnum):
    """A setting turned on or off."""

    on = "on"
    off = "off"


class RoleName(StrEnum):
    """The four roles a token may carry (exactly one)."""

    analyst = "analyst"
    admin = "admin"
    auditor = "auditor"
    provider = "provider"


RequesterArgument = Annotated[
    str, typer.Argument(metavar="REQUESTER_ID", help="The requester's id.")
]
DatasetArgument = Annotated[
    str, typer.Argument(metavar="DATASET", help="Dataset id, e.g. gp_appointments.")
]
EpsilonAmount = Annotated[
    str | None, typer.Option("--epsilon", "-e", help="An amount of epsilon (pure-DP datasets).")
]
RhoAmount = Annotated[str | None, typer.Option("--rho", help="An amount of rho (zCDP datasets).")]
ExpiresOption = Annotated[
    str | None,
    typer.Option(
        "--expires",
        metavar="WHEN",
        help="ISO date or time, e.g. 2026-03-31 (midnight UTC) or 2026-03-31T17:00:00+01:00.",
    ),
]


# requesters


@requesters_app.command("list")
def list_requesters(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Every requester, enabled or not."""
    out = output(ctx, json_output)
    with connect(ctx, AdminClient, out) as admin:
        found = admin.requesters()
    out.emit(found, lambda console: console.print(_requesters_table(found)))


@requesters_app.command("create")
def create_requester(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="The person or team.")],
    organisation: Annotated[str, typer.Option(help="Their organisation.")],
    purpose: Annotated[
        str, typer.Option(help="The purpose or data-sharing agreement under which they ask.")
    ],
    json_output: JsonOption = False,
) -> None:
    """Register a requester (enabled); the server chooses the id, printed here."""
    out = output(ctx, json_output)
    with connect(ctx, AdminClient, out) as admin:
        created = admin.create_requester(name, organisation, purpose)
    out.emit(created, lambda console: console.print(f"created requester {created.requester_id}"))


@requesters_app.command("disable")
def disable_requester(
    ctx: typer.Context, requester_id: RequesterArgument, json_output: JsonOption = False
) -> None:
    """Disable a requester: every token of theirs stops working at once."""
    out = output(ctx, json_output)
    with connect(ctx, AdminClient, out) as admin:
        disabled = admin.disable_requester(requester_id)
    message = f"disabled requester {disabled.requester_id}: their tokens no longer work"
    out.emit(disabled, lambda console: console.print(message))


@requesters_app.command("enable")
def enable_requester(
    ctx: typer.Context, requester_id: RequesterArgument, json_output: JsonOption = False
) -> None:
    """Enable a disabled requester again: their unrevoked, unexpired tokens work again."""
    out = output(ctx, json_output)
    with connect(ctx, AdminClient, out) as admin:
        enabled = admin.enable_requester(requester_id)
    message = f"enabled requester {enabled.requester_id}: their valid tokens work again"
    out.emit(enabled, lambda console: console.print(message))


# tokens


@tokens_app.command("issue")
def issue_token(
    ctx: typer.Context,
    requester_id: RequesterArgument,
    role: Annotated[RoleName, typer.Option(help="The token's one role.")],
    expires: ExpiresOption = None,
    practice: Annotated[
        list[str] | None,
        typer.Option(metavar="CODE", help="A practice a provider token acts for (repeatable)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Issue a token. Its secret is printed this once: hand it over, do not keep it."""
    out = output(ctx, json_output)
    expires_at = _moment(expires)
    with connect(ctx, AdminClient, out) as admin:
        issued = admin.issue_token(requester_id, role.value, expires_at, practice or ())
    document = {
        "token_id": issued.token_id,
        "token": issued.token,
        "role": role.value,
        "requester_id": requester_id,
    }

    def render(console: Console) -> None:
        console.print(f"issued {role.value} token {issued.token_id} to {requester_id}")
        console.print("token (shown once; the server keeps only its hash):")
        console.print(issued.token, markup=False, soft_wrap=True)

    out.emit(document, render)


@tokens_app.command("revoke")
def revoke_token(
    ctx: typer.Context,
    token_id: Annotated[
        str, typer.Argument(metavar="TOKEN_ID", help="The token's public id (not the secret).")
    ],
    json_output: JsonOption = False,
) -> None:
    """Revoke a token from now on (revoking twice is harmless)."""
    out = output(ctx, json_output)
    with connect(ctx, AdminClient, out) as admin:
        admin.revoke_token(token_id)
    out.emit(
        {"token_id": token_id, "revoked": True},
        lambda console: console.print(f"revoked token {token_id}"),
    )


@tokens_app.command("list")
def list_tokens(
    ctx: typer.Context,
    requester: Annotated[
        str, typer.Option("--requester", metavar="REQUESTER_ID", help="Only this requester's.")
    ] = "",
    json_output: JsonOption = False,
) -> None:
    """Token records: id, requester, role, issued, expires, revoked (never a secret: the
    server keeps only hashes)."""
    out = output(ctx, json_output)
    with connect(ctx, AdminClient, out) as admin:
        found = admin.tokens(requester)
    out.emit(found, lambda console: console.print(_tokens_table(found)))


# allocations


@app.command()
def grant(
    ctx: typer.Context,
    requester_id: RequesterArgument,
    dataset: DatasetArgument,
    epsilon: EpsilonAmount = None,
    rho: RhoAmount = None,
    expires: ExpiresOption = None,
    purpose: Annotated[
        str,
        typer.Option(
            help="What the budget is for (required for a new allocation; public, shown on"
            " the transparency page)."
        ),
    ] = "",
    agreement: Annotated[
        str,
        typer.Option(
            help="The data-sharing agreement it is given under, e.g. its id (required for a"
            " new allocation; public)."
        ),
    ] = "",
    json_output: JsonOption = False,
) -> None:
    """Give a requester an allocation on a dataset (or add to the one they have)."""
    out = output(ctx, json_output)
    expires_at = _moment(expires)
    with connect(ctx, AdminClient, out) as admin:
        budget = admin.grant(
            requester_id, dataset, epsilon, rho, expires_at, purpose=purpose, agreement=agreement
        )
    out.emit(budget, lambda console: _print_budget(console, "granted", requester_id, budget))


@app.command("top-up")
def top_up(
    ctx: typer.Context,
    requester_id: RequesterArgument,
    dataset: DatasetArgument,
    epsilon: EpsilonAmount = None,
    rho: RhoAmount = None,
    expires: ExpiresOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add to an existing allocation, and/or move its expiry with --expires alone (refused,
    code 5, if there is none: use grant)."""
    out = output(ctx, json_output)
    expires_at = _moment(expires)
    if epsilon is None and rho is None and expires_at is None:
        raise typer.BadParameter("give an amount (--epsilon or --rho), --expires, or both")
    with connect(ctx, AdminClient, out) as admin:
        report = admin.spending_report(dataset)
        if report.filter(pl.col("requester_id") == requester_id).is_empty():
            raise NotFoundError(
                f"{requester_id} has no allocation on {dataset}; `dpgate admin grant` creates one",
                reason="ALLOCATION_NOT_FOUND",
                code="NOT_FOUND",
            )
        if epsilon is None and rho is None:  # --expires alone: a top-up of zero
            zero = "0"
            epsilon, rho = (zero, None) if report["accounting"][0] == "pure_dp" else (None, zero)
        budget = admin.grant(requester_id, dataset, epsilon, rho, expires_at)
    out.emit(budget, lambda console: _print_budget(console, "topped up", requester_id, budget))


@app.command()
def reduce(
    ctx: typer.Context,
    requester_id: RequesterArgument,
    dataset: DatasetArgument,
    epsilon: EpsilonAmount = None,
    rho: RhoAmount = None,
    json_output: JsonOption = False,
) -> None:
    """Take back part of an allocation; never below what is already spent (code 7)."""
    out = output(ctx, json_output)
    with connect(ctx, AdminClient, out) as admin:
        budget = admin.reduce(requester_id, dataset, epsilon, rho)
    out.emit(budget, lambda console: _print_budget(console, "reduced", requester_id, budget))


@cap_app.command("set")
def set_cap(
    ctx: typer.Context,
    dataset: DatasetArgument,
    reason: Annotated[str, typer.Option(help="Why: recorded in the audit chain.")],
    epsilon: EpsilonAmount = None,
    rho: RhoAmount = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Set it even below the sum of the allocations plus what publishing has spent"
            " from the cap (over-subscribe on purpose).",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Set a dataset's global cap, with the reason: never below what has been spent, and
    below the sum of its allocations plus what publishing has spent from it only with
    --force."""
    out = output(ctx, json_output)
    if not reason.strip():
        raise typer.BadParameter("a cap change needs a reason", param_hint="--reason")
    with connect(ctx, AdminClient, out) as admin:
        cap = admin.set_cap(dataset, epsilon, rho, reason=reason, force=force)
    name = unit(cap.accounting)
    limit, spent = (amount_in_plain_terms(v, cap.accounting) for v in (cap.cap, cap.spent))
    out.emit(
        cap,
        lambda console: console.print(
            f"cap of {cap.dataset_id} set to {name} {limit} ({name} {spent} spent so far)"
        ),
    )


# datasets


@datasets_app.command("show")
def show_dataset(
    ctx: typer.Context, dataset: DatasetArgument, json_output: JsonOption = False
) -> None:
    """A dataset's cap, what is allocated and spent against it, and release sharing."""
    out = output(ctx, json_output)
    with connect(ctx, AdminClient, out) as admin:
        found = admin.dataset_budget(dataset)
    out.emit(found, lambda console: _print_dataset_budget(console, found))


@datasets_app.command("sharing")
def release_sharing(
    ctx: typer.Context,
    dataset: DatasetArgument,
    setting: Annotated[Switch, typer.Argument(metavar="on|off", help="on (default) or off.")],
    json_output: JsonOption = False,
) -> None:
    """Whether a release one requester paid for is served free to another who asks the
    identical query (on by default; off: each requester pays for their own)."""
    out = output(ctx, json_output)
    with connect(ctx, AdminClient, out) as admin:
        shared = admin.set_release_sharing(dataset, setting is Switch.on)
    message = f"release sharing on {dataset} is {'on' if shared else 'off'}: " + (
        "a release is served free to any requester asking the identical query"
        if shared
        else "each requester pays for their own releases"
    )
    out.emit(
        {"dataset_id": dataset, "share_releases": shared},
        lambda console: console.print(message),
    )


# reports and data


@app.command()
def spending(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="Only this dataset.")] = "",
    json_output: JsonOption = False,
) -> None:
    """Allocated and spent per requester and dataset, with release counts."""
    out = output(ctx, json_output)
    with connect(ctx, AdminClient, out) as admin:
        report = admin.spending_report(dataset)
    out.emit(report, lambda console: console.print(_spending_table(report)))


@app.command()
def publish(ctx: typer.Context, dataset: DatasetArgument, json_output: JsonOption = False) -> None:
    """Publish the dataset's next version from the staged practice uploads.

    Shows a bar per stage (reading, bounding, writing, verifying) with practices done of
    total and the time left. Interrupting it (Ctrl-C) stops the publish at its next step:
    nothing is published and the current version stays current.
    """
    out = output(ctx, json_output)
    info: DatasetInfo | None = None
    with connect(ctx, AdminClient, out) as admin:
        events = admin.publish_with_progress(dataset)
        if out.as_json:
            for event in events:
                info = event if isinstance(event, DatasetInfo) else info
        else:
            with publish_bars(stderr()) as bars:
                for event in events:
                    if isinstance(event, DatasetInfo):
                        info = event
                    else:
                        bars.show(event)
    if info is None:  # the server always ends a publish with its result
        message = "the server ended the publish without its result"
        raise typer.Exit(report_problem(message, ExitCode.OTHER, as_json=out.as_json))
    published = info
    figure = published.bias_figure if isinstance(published, PublishedVersion) else None

    def say(console: Console) -> None:
        console.print(f"{published.dataset_id} version {published.version} is now current")
        for line in bias_in_words(figure):
            console.print(line)

    out.emit(published, say)


def _moment(text: str | None) -> dt.datetime | None:
    """An ISO date (midnight UTC) or time; a time without an offset is read as UTC."""
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO date or time, e.g. 2026-03-31", param_hint="--expires"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _print_dataset_budget(console: Console, found: DatasetBudget) -> None:
    name = unit(found.accounting)
    console.print(f"{found.dataset_id} (version {found.version}), amounts in {name}:")

    def shown(value: Decimal) -> str:
        return amount_in_plain_terms(value, found.accounting)

    console.print(f"  cap        {shown(found.cap)}")
    over = found.allocated + found.publish_spent > found.cap
    console.print(
        f"  allocated  {shown(found.allocated)} to {found.allocation_count} requester(s)"
        + (
            "  (above what the cap leaves after publishing: over-subscribed)"
            if over and found.publish_spent
            else "  (above the cap: over-subscribed)"
            if over
            else ""
        )
    )
    console.print(f"  spent      {shown(found.spent)} in {found.release_count} release(s)")
    if found.publish_spent:
        console.print(
            f"             of which {shown(found.publish_spent)} by publishing"
            " (bias figures, bounds chosen privately)"
        )
    console.print(f"  remaining  {shown(found.cap - found.spent)} under the cap")
    if found.accounting == "zcdp":
        console.print(f"  ({EQUIVALENT_NOTE})")
    console.print(
        "  release sharing "
        + (
            "on: a release is served free to others asking the identical query"
            if found.share_releases
            else "off: each requester pays for their own releases"
        )
    )


def _tokens_table(found: list[TokenRecord]) -> Any:
    def when(moment: dt.datetime | None) -> str:
        return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M")

    rows = [
        (
            t.token_id,
            t.requester_id,
            t.role + (f" ({', '.join(t.practice_codes)})" if t.practice_codes else ""),
            when(t.created_at),
            when(t.expires_at) or "never",
            when(t.revoked_at),
        )
        for t in found
    ]
    columns = ("token", "requester", "role", "issued", "expires", "revoked")
    return table(columns, rows, title=f"Tokens ({len(found)})")


def _print_budget(console: Console, verb: str, requester_id: str, budget: BudgetInfo) -> None:
    name = unit(budget.accounting)

    def shown(value: Decimal) -> str:
        return amount_in_plain_terms(value, budget.accounting)

    console.print(
        f"{verb}: {requester_id} on {budget.dataset_id} has {name} {shown(budget.allocated)}"
        f" allocated, {shown(budget.spent)} spent, {shown(budget.remaining)} remaining"
        f" (expires {budget.expires_at or 'never'})"
    )


def _requesters_table(found: list[Requester]) -> Any:
    rows = [
        (r.requester_id, r.name, r.organisation, r.purpose, "enabled" if r.enabled else "disabled")
        for r in found
    ]
    return table(
        ("requester", "name", "organisation", "purpose", "state"),
        rows,
        title=f"Requesters ({len(found)})",
    )


def _spending_table(report: pl.DataFrame) -> Any:
    def day(moment: dt.datetime | None) -> str:
        return "" if moment is None else moment.strftime("%Y-%m-%d")

    rows = [
        (
            r["requester_id"],
            r["organisation"],
            r["dataset_id"],
            unit(r["accounting"]),
            amount_in_plain_terms(r["allocated"], r["accounting"]),
            amount_in_plain_terms(r["spent"], r["accounting"]),
            amount_in_plain_terms(r["remaining"], r["accounting"]),
            day(r["expires_at"]) or "never",
            day(r["last_spend_at"]),
            r["release_count"],
        )
        for r in report.iter_rows(named=True)
    ]
    columns = (
        "requester",
        "organisation",
        "dataset",
        "spend",
        "allocated",
        "spent",
        "remaining",
        "expires",
        "last spend",
        "releases",
    )
    zcdp = "zcdp" in report["accounting"].to_list()
    return table(columns, rows, title="Spending", caption=EQUIVALENT_NOTE if zcdp else None)
