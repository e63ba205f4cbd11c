"""`dpgate-server synthetic generate` and `synthetic extracts`: synthetic data in one command.

`generate` writes and publishes the synthetic "gp_appointments" dataset into the configured
store (the national one with `--practices all`); `extracts` writes raw extracts as suppliers
would send them, for `dpgate-server ingest`, in batches of practices if the disk requires.
Both show a progress bar (practices done of total, rows/s, elapsed, time left) and run the
generators' worker processes. `python -m dpgate_server.synthetic.generator` and
`python -m dpgate_server.synthetic.raw_extracts` do the same from a module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dpgate_server.config import ConfigError, Settings, load_settings

synthetic_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Synthetic data: a dataset, raw extracts."
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file (DPGATE_* variables override it)."),
]
PracticesOption = Annotated[
    str | None,
    typer.Option(
        help='How many whole practices, or "all" (England\'s 6,229).'
        " Default: the config's demo.practices."
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(min=1, help="Worker processes (default: one per core, up to 4)."),
]


@synthetic_app.command("generate")
def generate(
    practices: PracticesOption = None,
    seed: Annotated[
        int | None, typer.Option(help="Default: the config's demo.seed.", min=0)
    ] = None,
    workers: WorkersOption = None,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse/--fresh",
            help="Keep the current version if this generator, seed, scale and key made it.",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Generate and publish the synthetic dataset into storage.data_dir (key: storage.key_file).

    A server with demo.enabled regenerates its demo scale at start: set
    DPGATE_DEMO__ENABLED=false to serve what this wrote.
    """
    from dpgate_server.synthetic import generator  # noqa: PLC0415 - heavy import

    settings = _settings_or_exit(config)
    try:
        summary = generator.generate_with_progress(
            settings.storage.data_dir,
            settings.storage.key_file,
            _practices(practices, settings),
            settings.demo.seed if seed is None else seed,
            workers,
            reuse=reuse,
        )
    except ValueError as exc:
        typer.echo(f"dpgate-server: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary)


@synthetic_app.command("extracts")
def extracts(
    out: Annotated[Path, typer.Option(help="Folder to write the extracts into.")],
    practices: PracticesOption = None,
    seed: Annotated[
        int | None, typer.Option(help="Default: the config's demo.seed.", min=0)
    ] = None,
    first: Annotated[
        int, typer.Option(min=0, help="Position in the selection of the batch's first practice.")
    ] = 0,
    count: Annotated[
        int | None,
        typer.Option(min=1, help="Practices in the batch (default: to the end of the selection)."),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option(help="A practice code to write (repeatable).")
    ] = None,
    gzip: Annotated[bool, typer.Option("--gzip", help="Write PRACTICE.csv.gz.")] = False,
    opt_out_lists: Annotated[
        bool,
        typer.Option(
            "--opt-out-lists/--no-opt-out-lists",
            help="Also write national_opt_out.csv and type1_opt_out.csv (they cover the whole"
            " selection: one batch need write them).",
        ),
    ] = True,
    workers: WorkersOption = None,
    config: ConfigOption = None,
) -> None:
    """Write raw extracts (PRACTICE.csv or .csv.gz) and opt-out lists for `ingest`.

    A batch writes exactly the files a whole run writes for its practices (same seed, same
    rows), so a national load can be written, ingested and deleted a batch at a time.
    """
    from dpgate_server.synthetic import raw_extracts  # noqa: PLC0415 - heavy import

    settings = _settings_or_exit(config)
    try:
        summary = raw_extracts.write_with_progress(
            out,
            _practices(practices, settings),
            settings.demo.seed if seed is None else seed,
            only or (),
            first=first,
            count=count,
            compress=gzip,
            opt_out_lists=opt_out_lists,
            workers=workers,
        )
    except ValueError as exc:
        typer.echo(f"dpgate-server: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary)


def _practices(text: str | None, settings: Settings) -> int | None:
    if text is None:
        return settings.demo.practices
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        typer.echo(f'dpgate-server: --practices must be a number or "all", got {text!r}', err=True)
        raise typer.Exit(2) from None


def _settings_or_exit(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(f"dpgate-server: {exc}", err=True)
        raise typer.Exit(2) from None
