"""What every command shares: the root options, the output mode, and one connection.

A sub-app (`dpgate provider ...`, say) needs only this module:

    @app.command()
    def status(ctx: typer.Context, json_output: JsonOption = False) -> None:
        out = output(ctx, json_output)
        with connect(ctx, ProviderClient, out) as provider:
            out.emit(provider.status(), lambda console: console.print(...))

`connect` turns every `DpgateError` into its message on stderr and the exit code of
`dpgate.cli._errors`, so commands contain no error handling of their own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, TypeVar

import typer

from dpgate._channel import Connection
from dpgate.cli._config import ConfigError, ConnectionSettings, Flags, resolve
from dpgate.cli._errors import ExitCode, report_error, report_problem
from dpgate.cli._output import Output
from dpgate.errors import DpgateError

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document (for scripts) instead of tables.")
]
"""Every command takes `--json`; `dpgate --json COMMAND` works as well."""

C = TypeVar("C", bound=Connection)


@dataclass(frozen=True, slots=True)
class RootState:
    """The root command's options, kept on the click context for the subcommands."""

    flags: Flags
    as_json: bool


def root_state(ctx: typer.Context) -> RootState:
    """The options given before the command name (defaults if none)."""
    state = ctx.find_root().obj
    return state if isinstance(state, RootState) else RootState(Flags(), as_json=False)


def output(ctx: typer.Context, json_flag: bool) -> Output:
    """JSON if `--json` was given to the command or to `dpgate` itself."""
    return Output(as_json=json_flag or root_state(ctx).as_json)


def settings(ctx: typer.Context, out: Output) -> ConnectionSettings:
    """The resolved connection settings; a config problem exits with code 2."""
    try:
        return resolve(root_state(ctx).flags, os.environ)
    except ConfigError as error:
        raise typer.Exit(
            report_problem(str(error), ExitCode.BAD_INPUT, as_json=out.as_json)
        ) from None


@contextmanager
def connect(ctx: typer.Context, kind: Callable[..., C], out: Output) -> Iterator[C]:
    """A connected client of type `kind`; failures inside become exit codes.

    Raises:
        typer.Exit: with the code of `dpgate.cli._errors` for a missing token, a bad
            configuration, a `DpgateError`, or a value the client refused (ValueError).
    """
    resolved = settings(ctx, out)
    if resolved.token is None:
        message = (
            "no token: set DPGATE_TOKEN (or DPGATE_TOKEN_FILE), or token/token_file in "
            f"profile {resolved.profile!r} of {resolved.config_file}"
        )
        raise typer.Exit(report_problem(message, ExitCode.AUTH, as_json=out.as_json))
    try:
        with kind(resolved.target, resolved.token, **resolved.client_options()) as client:
            yield client
    except DpgateError as error:
        code = report_error(error, as_json=out.as_json, target=resolved.target)
        raise typer.Exit(code) from None
    except ValueError as error:  # the client's own checks of what the user gave
        raise typer.Exit(
            report_problem(str(error), ExitCode.BAD_INPUT, as_json=out.as_json)
        ) from None
