"""The `dpgate-server` commands: run the service (thin: load settings, prepare data, build,
wait), generate the demo data, create the first admin token. `dpgate_server.cli` is the
entry point that loads them."""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from dpgate_server import bulk_commands, synthetic_commands
from dpgate_server.api.ledger_storage import describe_ledger, open_ledger_storage
from dpgate_server.api.server import RunningServer, build_server
from dpgate_server.api.startup_checks import StartupError, check_address_free
from dpgate_server.config import ConfigError, Settings, load_settings
from dpgate_server.demo_bootstrap import DEMO_ALSO_ALLOCATION, bootstrap_demo
from dpgate_server.ledger import errors as ledger_errors
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import IssuedToken, RequestInfo, Role
from dpgate_server.observability.logs import configure_logging
from dpgate_server.serving.port_lock import PortLock
from dpgate_server.serving.shares import for_process, process_count
from dpgate_server.serving.supervisor import READY_LINE, Supervisor, config_args, watch_lifeline
from dpgate_server.store.store import DatasetStore
from dpgate_server.vocabulary.accounting import Accounting

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)
app.command("ingest")(bulk_commands.ingest)
app.add_typer(bulk_commands.optouts_app, name="optouts")
app.command("publish")(bulk_commands.publish)
app.add_typer(synthetic_commands.synthetic_app, name="synthetic")
_log = logging.getLogger("dpgate_server")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file (DPGATE_* variables override it)."),
]


@app.command()
def serve(
    config: ConfigOption = None,
    accept_broken_audit_chain: Annotated[
        bool,
        typer.Option(
            "--accept-broken-audit-chain",
            help="Start even though the audit chain fails its start-up check (to export and"
            " investigate); the override is recorded in the chain.",
        ),
    ] = False,
    serving_process: Annotated[
        int | None,
        typer.Option(hidden=True, help="Internal: run as this serving process of a supervisor."),
    ] = None,
    lifeline_fd: Annotated[
        int | None,
        typer.Option(hidden=True, help="Internal: a pipe whose end means the supervisor died."),
    ] = None,
) -> None:
    """Start the server; stop it cleanly with SIGTERM or Ctrl-C."""
    settings = _settings_or_exit(config)
    configure_logging(settings.operations.log_format, settings.operations.log_level)
    processes = process_count(settings.server.processes)
    if serving_process is not None:
        _serve_as_child(
            settings, processes, serving_process, lifeline_fd, accept_broken_audit_chain
        )
        return
    lock: PortLock | None = None
    try:
        lock = PortLock.take(settings.server.address)  # a second server fails here, by name
        check_address_free(settings.server.address)  # before minutes of demo generation
        if settings.demo.enabled:
            _prepare_demo_data(settings)
        if processes > 1:
            if lock is not None:
                lock.release()  # the supervisor takes it again and hands it to its children
                lock = None
            extra = ["--accept-broken-audit-chain"] if accept_broken_audit_chain else []
            supervisor = Supervisor(
                settings.server.address,
                processes,
                [*config_args(config), *extra],
                settings.server.grace_seconds,
            )
            raise typer.Exit(supervisor.run())
        running = build_server(settings, accept_broken_audit_chain=accept_broken_audit_chain)
    except StartupError as exc:
        if lock is not None:
            lock.release()
        typer.echo(f"dpgate-server: {exc}", err=True)
        raise typer.Exit(2) from None
    _announce(running, settings)
    if settings.demo.enabled:
        _announce_demo_accounts(running)
    _wait_for_signal(running, settings.server.grace_seconds)


def _serve_as_child(
    settings: Settings,
    processes: int,
    index: int,
    lifeline_fd: int | None,
    accept_broken_audit_chain: bool,
) -> None:
    """One of the supervisor's serving processes: its share of the settings, a shared port.

    Ctrl-C reaches the whole process group; a child ignores it and stops when the
    supervisor sends SIGTERM, so the supervisor alone decides when the server stops.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if lifeline_fd is not None:
        watch_lifeline(lifeline_fd)
    settings = for_process(settings, processes, index)
    try:
        running = build_server(
            settings, accept_broken_audit_chain=accept_broken_audit_chain, reuse_port=True
        )
    except StartupError as exc:
        typer.echo(f"dpgate-server: serving process {index}: {exc}", err=True)
        raise typer.Exit(2) from None
    if index == 0:
        print(f"  data:   {settings.storage.data_dir}", flush=True)
        print(f"  ledger: {describe_ledger(settings)}", flush=True)
    for line in running.sidecars.describe():
        print(f"  process {index}: {line}", flush=True)
    print(READY_LINE.format(index=index + 1, processes=processes, pid=os.getpid()), flush=True)
    if settings.demo.enabled and index == 0:
        _announce_demo_accounts(running)
    _wait_for_signal(running, settings.server.grace_seconds, signals=(signal.SIGTERM,))


@app.command("generate-demo")
def generate_demo(config: ConfigOption = None) -> None:
    """Generate (or reuse) the synthetic demo dataset without starting the server."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _prepare_demo_data(_settings_or_exit(config))


@app.command("create-admin-token")
def create_admin_token(
    config: ConfigOption = None,
    requester_id: Annotated[
        str, typer.Option(help="The administrator's requester id (created if it does not exist).")
    ] = "admin",
    name: Annotated[str, typer.Option(help="Their name, for a new requester.")] = "Administrator",
    organisation: Annotated[
        str, typer.Option(help="Their organisation, for a new requester.")
    ] = "local operator",
) -> None:
    """Create an admin token on the ledger itself (file or database): the first admin, no server.

    Works offline (the server may be stopped or running). The token alone goes to stdout,
    this once: the ledger keeps only its hash. The requester and the token are recorded in
    the audit chain as the work of the local operator, like any administrative change.
    """
    settings = _settings_or_exit(config)
    request = RequestInfo(
        request_id=f"cli-{uuid.uuid4().hex}", rpc="create-admin-token", source="local"
    )
    try:
        with Ledger(open_ledger_storage(settings)) as ledger:
            issued = _issue_admin_token(ledger, requester_id, name, organisation, request)
    except (StartupError, ledger_errors.LedgerError, ValueError) as exc:
        typer.echo(f"dpgate-server: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"admin token {issued.info.token_id} for requester {requester_id}"
        f" on {describe_ledger(settings)}"
        " (shown once; only its hash is kept):",
        err=True,
    )
    typer.echo(issued.token)


def _issue_admin_token(
    ledger: Ledger, requester_id: str, name: str, organisation: str, request: RequestInfo
) -> IssuedToken:
    admin = ledger.admin
    existing = {r.requester_id: r for r in admin.list_requesters()}.get(requester_id)
    if existing is None:
        admin.create_requester(
            requester_id,
            name=name,
            organisation=organisation,
            agreement="server operator (create-admin-token)",
            request=request,
        )
    elif not existing.enabled:
        raise ValueError(f"requester {requester_id!r} is disabled; choose another --requester-id")
    return admin.issue_token(requester_id, Role.ADMIN, request=request)


def _settings_or_exit(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(f"dpgate-server: {exc}", err=True)
        raise typer.Exit(2) from None


def _prepare_demo_data(settings: Settings) -> None:
    from dpgate_server.synthetic.generator import ensure_demo_dataset  # noqa: PLC0415 - heavy import
    from dpgate_server.synthetic.gp_metadata import (  # noqa: PLC0415 - heavy import
        DATASET_ID,
        ZCDP_DATASET_ID,
    )

    datasets = [DATASET_ID, ZCDP_DATASET_ID] if settings.demo.zcdp_dataset else [DATASET_ID]
    for dataset_id in datasets:
        version = ensure_demo_dataset(
            settings.storage.data_dir,
            settings.storage.key_file,
            practices=settings.demo.practices,
            seed=settings.demo.seed,
            dataset_id=dataset_id,
        )
        _log.info("dataset %s version %s is current", version.dataset_id, version.version)


def _announce(running: RunningServer, settings: Settings) -> None:
    security = "TLS" if running.tls else "plaintext, loopback only: no TLS configured"
    print(f"dpgate server listening on {running.address} ({security})", flush=True)
    print(f"  data:   {settings.storage.data_dir}", flush=True)
    print(f"  ledger: {describe_ledger(settings)}", flush=True)
    for line in running.sidecars.describe():
        print(f"  {line}", flush=True)


def _announce_demo_accounts(running: RunningServer) -> None:
    store = DatasetStore(running.store_root)
    datasets = store.dataset_ids()
    for dataset_id in datasets[:1]:
        version = store.current(dataset_id)
        codes = version.metadata.column("practice_code")
        practice = str(codes.values[0]) if codes is not None and codes.values else ""
        also = [d for d in datasets[1:] if store.current(d).metadata.accounting is Accounting.ZCDP]
        accounts = bootstrap_demo(running.ledger, dataset_id, practice, also)
        if accounts is None:
            print(
                "  demo tokens were printed at the first start (only their hashes are kept);"
                " delete the ledger file to start the demo afresh",
                flush=True,
            )
            return
        print("\n  demo tokens (shown once; the server keeps only their hashes):", flush=True)
        for role, token in accounts.tokens.items():
            print(f"    {role:9s} {token}", flush=True)
        print(
            f"\n  the analyst may spend epsilon {accounts.allocation} on {dataset_id}."
            " Paste this in another terminal, in this folder:\n",
            flush=True,
        )
        print(
            ".tools/bin/uv run python - <<'PY'\n"
            "from dpgate import Client, count\n"
            f"with Client('{running.address}', token='{accounts.tokens['analyst']}') as c:\n"
            f"    r = c.query(count('{dataset_id}').where(status='DNA').by('month').epsilon(0.5))\n"
            "    print(r.frame, r.charged, r.remaining)\n"
            "PY\n",
            flush=True,
        )
        print("  or, with the command line (a repeat of the same query is free):\n", flush=True)
        print(
            f"DPGATE_TARGET={running.address} DPGATE_TOKEN={accounts.tokens['analyst']} \\\n"
            f"  .tools/bin/uv run dpgate query {dataset_id} --count --where status=DNA"
            " --by month --epsilon 0.5\n",
            flush=True,
        )
        for other in also:
            print(
                f"  and rho {DEMO_ALSO_ALLOCATION} on {other} (zCDP, per-period bounds):"
                f" count('{other}').by('practice_code', 'week').rho(0.05)\n",
                flush=True,
            )
        return


def _wait_for_signal(
    running: RunningServer,
    grace_seconds: float,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        _log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    for signum in signals:
        signal.signal(signum, request_stop)
    stop.wait()
    running.stop(grace_seconds)
    print("dpgate server stopped", flush=True)
