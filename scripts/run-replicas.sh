#!/usr/bin/env bash
# Two dpgate replicas on one throwaway PostgreSQL ledger and the demo's synthetic data;
# prints the client lines that use both. Ctrl-C (or SIGTERM) stops both replicas and
# deletes the PostgreSQL cluster. Kill one replica (kill -9 PID, printed below) and the
# client lines keep answering through the other.
#
# Settings (environment):
#   DPGATE_REPLICAS_DIR   folder for configs and logs (default var/replicas)
#   DPGATE_REPLICA_PORTS  the two gRPC ports (default "50051 50052")
#   DPGATE_*              any server setting, as for dpgate-server (e.g. DPGATE_DEMO__PRACTICES)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"   # cd to the repository, sync .venv
ROOT="$PWD"
FOLDER="$(realpath -m "${DPGATE_REPLICAS_DIR:-var/replicas}")"
read -r -a PORTS <<< "${DPGATE_REPLICA_PORTS:-50051 50052}"
[ "${#PORTS[@]}" -eq 2 ] || { echo "run-replicas: DPGATE_REPLICA_PORTS must name two ports" >&2; exit 2; }
PYTHON="$UV_PROJECT_ENVIRONMENT/bin/python"
SERVER="$UV_PROJECT_ENVIRONMENT/bin/dpgate-server"
mkdir -p "$FOLDER"
chmod 700 "$FOLDER"   # the configs hold the database password

# The cluster's folder, port and password, kept so that it can be deleted (also after a
# run that was killed before it could clean up).
CLUSTER_FILE="$FOLDER/postgres.json"
destroy_cluster() {
    [ -f "$CLUSTER_FILE" ] || return 0
    "$PYTHON" - "$CLUSTER_FILE" <<'PY'
import json, sys
from pathlib import Path
from dpgate_server.ledger.local_postgres import LocalPostgres
found = json.loads(Path(sys.argv[1]).read_text())
LocalPostgres(Path(found["folder"]), found["port"], found["password"], Path(found["bin_dir"]), durable=False).destroy()
PY
    rm -f "$CLUSTER_FILE"
}

PIDS=()
STOPPED=0
stop_everything() {
    [ "$STOPPED" = 1 ] && return 0
    STOPPED=1
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    destroy_cluster
    echo "run-replicas: replicas stopped, PostgreSQL cluster deleted"
}
trap stop_everything EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

destroy_cluster   # left over from a run that was killed
echo "run-replicas: starting a throwaway PostgreSQL cluster"
LEDGER_URL="$("$PYTHON" - "$CLUSTER_FILE" <<'PY'
import json, sys
from pathlib import Path
from dpgate_server.ledger.local_postgres import LocalPostgres
cluster = LocalPostgres.start()
Path(sys.argv[1]).write_text(json.dumps({
    "folder": str(cluster.folder), "port": cluster.port,
    "password": cluster.password, "bin_dir": str(cluster.bin_dir),
}))
print(cluster.create_database("ledger"))
PY
)"

write_config() {  # write_config N PORT
    cat > "$FOLDER/replica-$1.toml" <<EOF
# Replica $1 of 2 (written by scripts/run-replicas.sh): the demo's data, a shared PostgreSQL ledger.
[server]
address = "127.0.0.1:$2"
workers = 1
[storage]
data_dir = "$ROOT/var/data"
ledger_path = "$FOLDER/unused-ledger.sqlite"
key_file = "$ROOT/var/keys/pseudonym.key"
[ledger]
url = "$LEDGER_URL"
[demo]
enabled = true
practices = 150
seed = 2025
[operations]
log_format = "text"
EOF
    chmod 600 "$FOLDER/replica-$1.toml"
}

start_replica() {  # start_replica N: starts it and waits until it listens
    local log="$FOLDER/replica-$1.log"
    "$SERVER" serve --config "$FOLDER/replica-$1.toml" > "$log" 2>&1 &
    PIDS+=("$!")
    local pid="$!"
    until grep -q "listening on" "$log"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "run-replicas: replica $1 exited; its log ($log):" >&2
            tail -n 20 "$log" >&2
            exit 1
        fi
        sleep 0.2
    done
}

# The first replica generates the demo data if var/data has none (minutes, once) and
# creates the demo accounts in the new ledger; the second starts when it is ready.
echo "run-replicas: starting replica 1 on 127.0.0.1:${PORTS[0]} (the first run generates the demo data)"
write_config 1 "${PORTS[0]}"
start_replica 1
until grep -qE "^ +analyst +dpg_" "$FOLDER/replica-1.log"; do
    kill -0 "${PIDS[0]}" 2>/dev/null || { tail -n 20 "$FOLDER/replica-1.log" >&2; exit 1; }
    sleep 0.2
done
TOKEN="$(grep -m1 -E "^ +analyst +dpg_" "$FOLDER/replica-1.log" | awk '{print $2}')"
DATASET="$(grep -m1 -oE "spend epsilon [0-9.]+ on [A-Za-z0-9_]+" "$FOLDER/replica-1.log" | awk '{print $NF}')"
echo "run-replicas: starting replica 2 on 127.0.0.1:${PORTS[1]}"
write_config 2 "${PORTS[1]}"
start_replica 2

TARGETS="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]}"
cat <<EOF

run-replicas: two replicas on one PostgreSQL ledger
  replica 1: 127.0.0.1:${PORTS[0]}  pid ${PIDS[0]}  log $FOLDER/replica-1.log
  replica 2: 127.0.0.1:${PORTS[1]}  pid ${PIDS[1]}  log $FOLDER/replica-2.log

From Python (paste in another terminal, in this folder):

.tools/bin/uv run python - <<'PY'
from dpgate import Client, count
with Client("$TARGETS", token="$TOKEN") as c:
    r = c.query(count("$DATASET").where(status="DNA").by("month").epsilon(0.5))
    print(r.frame, r.charged, r.remaining)
PY

Or with the command line:

DPGATE_TARGET=$TARGETS DPGATE_TOKEN=$TOKEN \\
  .tools/bin/uv run dpgate query $DATASET --count --where status=DNA --by month --epsilon 0.5

Kill one replica (kill -9 ${PIDS[0]}) and ask again: the other answers.
Ctrl-C stops both replicas and deletes the PostgreSQL cluster.
run-replicas: ready
EOF

wait "${PIDS[@]}" || true   # until both replicas have exited, or a signal arrives
