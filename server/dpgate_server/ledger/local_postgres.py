"""A throwaway PostgreSQL cluster on this machine, for tests, benchmarks and trying replicas.

Debian installs the server binaries in `/usr/lib/postgresql/<major>/bin`, off PATH.
`initdb` refuses to run as root, and CI runs as root: then `initdb` and `pg_ctl` run as
the `postgres` user (`runuser -u postgres`), in a folder under /tmp that user owns (pytest's
own temporary folders are private to root). The cluster listens on a free loopback port
and keeps its Unix socket in its own folder, so it never meets the packaged cluster on
5432. Its superuser `postgres` has a random password (TCP connections must give it), so
tests can check that the password never reaches a log.

Example (needs the binaries):
    cluster = LocalPostgres.start()
    try:
        url = cluster.create_database("ledger")
    finally:
        cluster.destroy()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

DEFAULT_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
"""Where Debian's postgresql-15 package puts initdb, pg_ctl and postgres."""
SUPERUSER = "postgres"
_OS_USER_WHEN_ROOT = "postgres"
_START_ATTEMPTS = 5


class LocalPostgresError(RuntimeError):
    """The cluster could not be created, started or stopped; the message says why."""


class LocalPostgres:
    """A private cluster: its folder, port and superuser password; start, stop, destroy."""

    def __init__(
        self, folder: Path, port: int, password: str, bin_dir: Path, *, durable: bool
    ) -> None:
        self.folder = folder
        self.port = port
        self.password = password
        self.bin_dir = bin_dir
        self.durable = durable

    @classmethod
    def start(
        cls,
        *,
        bin_dir: Path = DEFAULT_BIN_DIR,
        durable: bool = False,
        max_connections: int = 300,
    ) -> LocalPostgres:
        """Create a new cluster in a fresh /tmp folder and start it.

        Args:
            bin_dir: the folder holding initdb and pg_ctl.
            durable: fsync every commit as production would (benchmarks); False turns
                fsync off, which is safe for a cluster nobody keeps (tests).
            max_connections: PostgreSQL's connection limit.

        Raises:
            LocalPostgresError: the binaries are missing, or initdb or pg_ctl failed.
        """
        if not (bin_dir / "initdb").exists():
            raise LocalPostgresError(
                f"{bin_dir / 'initdb'} is missing: install PostgreSQL 15"
                " (apt-get install postgresql-15; scripts/test.sh does it when run as root)"
            )
        folder = Path(tempfile.mkdtemp(prefix="dpgate-pg-"))
        password = secrets.token_urlsafe(24)
        cluster = cls(folder, 0, password, bin_dir, durable=durable)
        try:
            cluster._initdb(max_connections)
            cluster.port = cluster._start_on_a_free_port()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for `database` as the superuser, over TCP on loopback."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database `name` (a copy of `template` if given); returns its URL."""
        import psycopg  # noqa: PLC0415 - the server extra; only this method needs it
        from psycopg import sql  # noqa: PLC0415

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(statement)
        return self.url(name)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data (`start_again` brings it back on the same port).

        `immediate` is a crash as far as clients can tell; `fast` ends sessions cleanly.
        """
        self._run(self._pg_ctl("stop", "-m", mode, "-w"), "pg_ctl stop")

    def start_again(self) -> None:
        """Start a stopped cluster on its port again."""
        self._run(self._pg_ctl("start", "-w", "-o", self._server_options()), "pg_ctl start")

    def is_running(self) -> bool:
        """Whether pg_ctl sees the server running."""
        return self._run_quiet(self._pg_ctl("status")).returncode == 0

    def log_text(self) -> str:
        """The server's log so far (to explain a failure)."""
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def destroy(self) -> None:
        """Stop the server if it runs and delete the cluster's folder."""
        if (self.folder / "data" / "postmaster.pid").exists():
            self._run_quiet(self._pg_ctl("stop", "-m", "immediate", "-w"))
        shutil.rmtree(self.folder, ignore_errors=True)

    # private

    def _initdb(self, max_connections: int) -> None:
        owner = _os_user()
        if owner is not None:
            entry = pwd.getpwnam(owner)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        password_file = self.folder / "password"
        password_file.write_text(self.password + "\n")
        password_file.chmod(0o600)
        if owner is not None:
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.folder / "data"),
                "-U",
                SUPERUSER,
                f"--pwfile={password_file}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        password_file.unlink()
        settings = {
            "max_connections": str(max_connections),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.folder}'",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "shared_buffers": "'64MB'",
            "logging_collector": "off",
        }
        with (self.folder / "data" / "postgresql.auto.conf").open("a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def _start_on_a_free_port(self) -> int:
        failure = ""
        for _ in range(_START_ATTEMPTS):
            self.port = _free_port()
            result = self._run_quiet(self._pg_ctl("start", "-w", "-o", self._server_options()))
            if result.returncode == 0:
                return self.port
            failure = (result.stdout + result.stderr).strip()  # the port was taken meanwhile?
        raise LocalPostgresError(f"pg_ctl start failed: {failure}\n{self.log_text()[-2000:]}")

    def _server_options(self) -> str:
        return f"-p {self.port}"

    def _pg_ctl(self, *args: str) -> list[str]:
        return [
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.folder / "data"),
            "-l",
            str(self.folder / "server.log"),
            *args,
        ]

    def _run(self, command: list[str], what: str) -> None:
        result = self._run_quiet(command)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise LocalPostgresError(f"{what} failed: {output}")

    def _run_quiet(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        owner = _os_user()
        if owner is not None:
            command = ["runuser", "-u", owner, "--", *command]
        return subprocess.run(
            command, cwd=self.folder, capture_output=True, text=True, timeout=120, check=False
        )


def _os_user() -> str | None:
    """The user to run PostgreSQL as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_OS_USER_WHEN_ROOT)
    except KeyError:
        raise LocalPostgresError(
            "running as root, and there is no 'postgres' user to run initdb as:"
            " install postgresql-15, which creates it"
        ) from None
    return _OS_USER_WHEN_ROOT


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
