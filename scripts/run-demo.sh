#!/usr/bin/env bash
# One command: set everything up, generate the demo data once (cached under var/),
# and run the server on 127.0.0.1 with a SQLite ledger. Ctrl-C stops it cleanly.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec "$UV" run --frozen --no-sync dpgate-server serve --config config/demo.toml "$@"
