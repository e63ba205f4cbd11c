"""The root `dpgate` command: connection options for every subcommand, and `dpgate config`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

import dpgate
from dpgate.cli._config import Flags
from dpgate.cli._session import JsonOption, RootState, output, settings

app = typer.Typer(
    name="dpgate",
    help=(
        "Differentially private counts and sums over GP appointments.\n\n"
        "The server and token come from DPGATE_TARGET and DPGATE_TOKEN, or from a profile"
        " in ~/.config/dpgate/client.toml (see `dpgate config`)."
    ),
    no_args_is_help=True,
    add_completion=False,
    # Plain help: flags read `--json`, not `--json <bool>`; options with a value show it.
    rich_markup_mode=None,
    # A traceback's local variables would include the token: never show them.
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dpgate {dpgate.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Profile of the config file to use (env DPGATE_PROFILE; else 'default')."
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="Server host:port, or several replicas separated by commas (env DPGATE_TARGET).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Bearer token. Prefer DPGATE_TOKEN or the config file: a flag stays in shell"
            " history and is visible to other users in `ps`.",
            show_default=False,
        ),
    ] = None,
    ca_cert: Annotated[
        Path | None,
        typer.Option(help="CA certificate (PEM) to trust: use TLS (env DPGATE_CA_CERT)."),
    ] = None,
    client_cert: Annotated[
        Path | None,
        typer.Option(help="Client certificate for mutual TLS (env DPGATE_CLIENT_CERT)."),
    ] = None,
    client_key: Annotated[
        Path | None, typer.Option(help="Client key for mutual TLS (env DPGATE_CLIENT_KEY).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds a call may take (env DPGATE_TIMEOUT).")
    ] = None,
    json_output: JsonOption = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Keep the connection options for the subcommand (resolved only when it connects)."""
    flags = Flags(profile, target, token, ca_cert, client_cert, client_key, timeout)
    ctx.obj = RootState(flags=flags, as_json=json_output)


@app.command("config")
def show_config(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Where the CLI would connect, and where its token comes from (never the token)."""
    out = output(ctx, json_output)
    resolved = settings(ctx, out)
    document = {
        "target": resolved.target,
        "profile": resolved.profile,
        "config_file": str(resolved.config_file),
        "config_file_exists": resolved.config_file.exists(),
        "token_source": resolved.token_source or None,
        "tls": resolved.root_certificates is not None,
        "mutual_tls": resolved.certificate_chain is not None,
        "timeout": resolved.timeout,
    }

    def render(console: Console) -> None:
        exists = "" if resolved.config_file.exists() else " (not found)"
        console.print(f"target:      {resolved.target}")
        console.print(f"profile:     {resolved.profile}")
        console.print(f"config file: {resolved.config_file}{exists}")
        console.print(
            f"token:       {'from ' + resolved.token_source if resolved.token_source else 'none'}"
        )
        tls = "mutual TLS" if document["mutual_tls"] else "TLS" if document["tls"] else "plaintext"
        console.print(f"transport:   {tls}")

    out.emit(document, render)
