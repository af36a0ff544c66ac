#!/usr/bin/env bash
# Installs everything callrec needs on a fresh Debian machine: system packages (SIPp,
# espeak-ng, sox, multimon-ng, Chromium), a virtualenv in ./venv and callrec itself in it.
# Safe to run again. Run as root or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# The list is shared with .ci/run.
APT_PACKAGES="$(cat scripts/apt-packages.txt)"
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
PY="${PYTHON:-python3}"
if [ ! -x venv/bin/python ]; then
  "$PY" -m venv venv
fi
venv/bin/python -m pip install -q --upgrade pip
venv/bin/python -m pip install -q -e '.[test,phone]'
echo "callrec installed: $(venv/bin/callrec --version 2>/dev/null || echo venv/bin/callrec)"
