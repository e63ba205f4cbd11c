"""uvicorn serving the web application in a thread of the server process.

The socket is bound here (so port 0 works and a busy port fails at start, not later), and
uvicorn runs in its own thread with its own event loop; it installs no signal handlers
there, so the server's SIGTERM handling stays in charge.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

_START_TIMEOUT_S = 10.0


class WebListener:
    """The HTTP(S) listener of the web pages."""

    def __init__(
        self,
        app: Starlette,
        host: str,
        port: int,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self._host = host
        self.tls = cert_file is not None
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ssl_certfile=str(cert_file) if cert_file else None,
            ssl_keyfile=str(key_file) if key_file else None,
            ssl_version=ssl.PROTOCOL_TLS_SERVER,
            server_header=False,
            limit_concurrency=64,
            timeout_keep_alive=5,
            h11_max_incomplete_event_size=16 * 1024,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def wait_started(self) -> None:
        """Block until uvicorn accepts connections (raises if it did not start)."""
        deadline = threading.Event()
        for _ in range(int(_START_TIMEOUT_S / 0.02)):
            if self._server.started:
                return
            if not self._thread.is_alive():
                break
            deadline.wait(0.02)
        raise OSError(f"the web listener on {self.url} did not start")

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))
