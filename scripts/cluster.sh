#!/usr/bin/env bash
# A local callrec cluster on loopback addresses, for trying the multi-node setup out:
#   Kamailio (deploy/kamailio/kamailio.cfg)  udp 127.0.0.10:5060, the one SIP address
#   callrec node i (1..N)                    127.0.0.<i+1>: SIP 5060, portal 8080,
#                                            media on the same address, RTP 20000-20999
#   PostgreSQL and the S3 store (SeaweedFS)  from testkit (python -m testkit.postgres,
#                                            python -m testkit.s3): one database and one
#                                            bucket that every node shares
#
#   scripts/cluster.sh up [N]    start (N nodes, default 2); prints the addresses
#   scripts/cluster.sh down      stop everything it started, by the PIDs it wrote
#   scripts/cluster.sh status    which of those PIDs still run
#
# Everything lives in $CALLREC_CLUSTER_DIR (default ./cluster-run): configs, logs, data,
# and one <name>.pid per process. `down` kills only those PIDs and stops the database
# and the object store (their data stays in $CALLREC_CLUSTER_DIR for the next `up`).
# Needs scripts/setup.sh --cluster (Kamailio, PostgreSQL, SeaweedFS).
#
# The testkit entry points it uses (each prints what the nodes need on stdout):
#   python -m testkit.postgres up DIR    -> one line, the database URL (postgresql://...)
#   python -m testkit.postgres down DIR
#   python -m testkit.s3 up DIR          -> [storage] lines: objects = "s3://...",
#                                           s3_endpoint = ..., s3_access_key = ...
#   python -m testkit.s3 down DIR
# Without them (an older testkit) each node keeps its own SQLite file and recordings.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
RUN="${CALLREC_CLUSTER_DIR:-$ROOT/cluster-run}"
PY="$ROOT/venv/bin/python"
PROXY=127.0.0.10
SIP_PORT=5060
PORTAL_PORT=8080

die() { echo "cluster: $*" >&2; exit 1; }

has_entry_point() {  # module name: true when `python -m testkit.<name>` can run
  "$PY" - "$1" <<'EOF' >/dev/null 2>&1
import importlib.util, sys
spec = importlib.util.find_spec(f"testkit.{sys.argv[1]}")
sys.exit(0 if spec and spec.origin and "__main__" in open(spec.origin).read() else 1)
EOF
}

wait_for() {  # seconds, description, command...: poll the command until it succeeds
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what did not come up within ${limit}s (see $RUN)"
    sleep 0.2
  done
}

sip_answers() {  # host port: one OPTIONS over UDP gets an answer
  "$PY" - "$1" "$2" <<'EOF'
import socket, sys, uuid
host, port = sys.argv[1], int(sys.argv[2])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.5)
    local = s.getsockname()[1]
    s.sendto((f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
              f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
              f"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:{host}>\r\n"
              f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
              "Content-Length: 0\r\n\r\n").encode(), (host, port))
    s.recv(65535)
EOF
}

start() {  # name, command...: start in the background, log and PID in $RUN
  local name=$1
  shift
  "$@" >>"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

up() {
  local nodes=${1:-2}
  [[ "$nodes" =~ ^[1-8]$ ]] || die "N must be 1-8"
  command -v kamailio >/dev/null || die "kamailio is missing: scripts/setup.sh --cluster"
  [ -x "$PY" ] || die "no venv: run scripts/setup.sh first"
  if compgen -G "$RUN/*.pid" >/dev/null; then die "already up ($RUN); run: $0 down"; fi
  mkdir -p "$RUN"

  local storage_lines="" db_line=""
  if has_entry_point postgres; then
    db_line="db = \"$("$PY" -m testkit.postgres up "$RUN/postgres" | tail -n 1)\""
    echo "PostgreSQL: ${db_line#db = }"
  else
    echo "PostgreSQL: testkit.postgres has no entry point; each node keeps its own SQLite"
  fi
  if has_entry_point s3; then
    storage_lines="$("$PY" -m testkit.s3 up "$RUN/s3")"
    echo "object store: $(echo "$storage_lines" | grep '^objects' || true)"
  else
    echo "object store: testkit.s3 has no entry point; recordings stay on each node's disk"
  fi

  : >"$RUN/dispatcher.list"
  for i in $(seq 1 "$nodes"); do
    local host="127.0.0.$((i + 1))" dir="$RUN/node$i"
    mkdir -p "$dir"
    cat >"$dir/callrec.toml" <<EOF
[sip]
listen = "$host:$SIP_PORT"
proxies = ["$PROXY"]
[trunk]
uri = "sip:127.0.0.1:5080"
[media]
address = "$host"
rtp_ports = "20000-20999"
workers = 1
[storage]
dir = "$dir/data"
$db_line
$storage_lines
[portal]
listen = "$host:$PORTAL_PORT"
metrics = true
[server]
log_format = "json"
EOF
    echo "1 sip:$host:$SIP_PORT" >>"$RUN/dispatcher.list"
    start "node$i" "$ROOT/venv/bin/callrec" serve --config "$dir/callrec.toml"
  done
  for i in $(seq 1 "$nodes"); do
    wait_for 30 "node$i" sip_answers "127.0.0.$((i + 1))" "$SIP_PORT"
  done
  start kamailio kamailio -f "$ROOT/deploy/kamailio/kamailio.cfg" -DD -E \
    -l "udp:$PROXY:$SIP_PORT" -A "DISPATCHER_LIST=\"$RUN/dispatcher.list\"" \
    -m 64 -M 8 -Y "$RUN" -P "$RUN/kamailio-main.pidfile"
  wait_for 20 kamailio sip_answers "$PROXY" "$SIP_PORT"
  echo "Kamailio: sip:$PROXY:$SIP_PORT (phones and the trunk use this address)"
  for i in $(seq 1 "$nodes"); do
    echo "node$i: sip 127.0.0.$((i + 1)):$SIP_PORT, portal http://127.0.0.$((i + 1)):$PORTAL_PORT"
  done
  if [ -n "$db_line" ]; then
    echo "add users once (the nodes share the database):" \
      "venv/bin/callrec users add 100 --config $RUN/node1/callrec.toml"
  else
    echo "add users on each node: venv/bin/callrec users add 100 --config $RUN/node1/callrec.toml"
  fi
}

down() {
  [ -d "$RUN" ] || { echo "cluster: nothing under $RUN"; return 0; }
  local pidfile pid name
  for pidfile in "$RUN"/kamailio.pid "$RUN"/node*.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    name="$(basename "$pidfile" .pid)"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
      echo "stopped $name ($pid)"
    fi
    rm -f "$pidfile"
  done
  if has_entry_point s3 && [ -d "$RUN/s3" ]; then "$PY" -m testkit.s3 down "$RUN/s3"; fi
  if has_entry_point postgres && [ -d "$RUN/postgres" ]; then
    "$PY" -m testkit.postgres down "$RUN/postgres"
  fi
}

status() {
  local pidfile
  for pidfile in "$RUN"/*.pid; do
    [ -f "$pidfile" ] || continue
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then state=running; else state=gone; fi
    echo "$(basename "$pidfile" .pid): $(cat "$pidfile") $state"
  done
}

case "${1:-}" in
  up) up "${2:-2}" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: scripts/cluster.sh up [N] | down | status" >&2; exit 2 ;;
esac
