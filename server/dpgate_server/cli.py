"""`dpgate-server`, the console entry point: loads the commands, or says what to install.

The distribution's base install is the client alone; the server's dependencies are the
`server` extra. The same install puts `dpgate-server` on the PATH either way, so on a
client-only install the entry point explains the missing extra instead of a traceback.
"""

from __future__ import annotations

import sys

OUR_PACKAGES = frozenset({"dpgate", "dpgate_server"})
"""A missing module of ours is a broken install, not a missing extra: let it raise."""


def main() -> None:
    """Console entry point."""
    try:
        from dpgate_server.commands import app  # noqa: PLC0415 - the import is what is checked
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing in OUR_PACKAGES:
            raise
        print(
            f"dpgate-server: the server's dependencies are not installed (no module"
            f" {missing!r}); this is a client-only install. Install the server with:"
            " pip install 'dpgate[server]'",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(app())


if __name__ == "__main__":
    main()
