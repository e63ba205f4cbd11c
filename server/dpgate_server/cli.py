"""`dpgate-server`: run the service. Thin: load settings, prepare data, build, wait."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from dpgate_server.api.server import InsecureBindError, RunningServer, build_server
from dpgate_server.config import ConfigError, Settings, load_settings
from dpgate_server.data.store import DatasetStore
from dpgate_server.demo_bootstrap import bootstrap_demo

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
_log = logging.getLogger("dpgate_server")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file (DPGATE_* variables override it)."),
]


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Start the server; stop it cleanly with SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = _settings_or_exit(config)
    if settings.demo.enabled:
        _prepare_demo_data(settings)
    try:
        running = build_server(settings)
    except (InsecureBindError, OSError, ValueError) as exc:
        typer.echo(f"dpgate-server: {exc}", err=True)
        raise typer.Exit(2) from None
    _announce(running, settings)
    if settings.demo.enabled:
        _announce_demo_accounts(running)
    _wait_for_signal(running, settings.server.grace_seconds)


@app.command("generate-demo")
def generate_demo(config: ConfigOption = None) -> None:
    """Generate (or reuse) the synthetic demo dataset without starting the server."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _prepare_demo_data(_settings_or_exit(config))


def _settings_or_exit(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(f"dpgate-server: {exc}", err=True)
        raise typer.Exit(2) from None


def _prepare_demo_data(settings: Settings) -> None:
    from dpgate_server.data.generator import ensure_demo_dataset  # noqa: PLC0415 - heavy import

    version = ensure_demo_dataset(
        settings.storage.data_dir,
        settings.storage.key_file,
        practices=settings.demo.practices,
        seed=settings.demo.seed,
    )
    _log.info("dataset %s version %s is current", version.dataset_id, version.version)


def _announce(running: RunningServer, settings: Settings) -> None:
    security = "TLS" if running.tls else "plaintext, loopback only: no TLS configured"
    print(f"dpgate server listening on {running.address} ({security})", flush=True)
    print(f"  data:   {settings.storage.data_dir}", flush=True)
    print(f"  ledger: {settings.storage.ledger_path}", flush=True)


def _announce_demo_accounts(running: RunningServer) -> None:
    store = DatasetStore(running.store_root)
    for dataset_id in store.dataset_ids():
        version = store.current(dataset_id)
        codes = version.metadata.column("practice_code")
        practice = str(codes.values[0]) if codes is not None and codes.values else ""
        accounts = bootstrap_demo(running.ledger, dataset_id, practice)
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
        return


def _wait_for_signal(running: RunningServer, grace_seconds: float) -> None:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        _log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stop.wait()
    running.stop(grace_seconds)
    print("dpgate server stopped", flush=True)


def main() -> None:
    """Console entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
