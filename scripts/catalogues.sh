#!/usr/bin/env bash
# Message catalogues of the portal, the mails and the settings texts (Babel, gettext).
#   scripts/catalogues.sh          extract the messages (babel.cfg), merge them into each
#                                  language's messages.po and compile the messages.mo
#                                  beside it (both are committed)
#   scripts/catalogues.sh --check  fail if a .mo is not what its .po compiles to
# Translate in portal/locale/<language>/LC_MESSAGES/messages.po, then run it again.
# tests/portal/test_catalogues.py checks that every marked message has a translation and
# that each .mo is current.
set -euo pipefail
cd "$(dirname "$0")/.."
PYBABEL="${PYBABEL:-venv/bin/pybabel}"
LOCALE=portal/locale
if [ "${1:-}" = "--check" ]; then
  exec venv/bin/python -m pytest -q -p no:cacheprovider tests/portal/test_catalogues.py
fi
POT="$(mktemp --suffix=.pot)"
trap 'rm -f "$POT"' EXIT
"$PYBABEL" extract -F babel.cfg --no-location --sort-output -k N_ -o "$POT" . 2>/dev/null
for po in "$LOCALE"/*/LC_MESSAGES/messages.po; do
  language="$(basename "$(dirname "$(dirname "$po")")")"
  "$PYBABEL" update -i "$POT" -d "$LOCALE" -l "$language" -w 100 \
    --no-fuzzy-matching --ignore-obsolete
done
"$PYBABEL" compile -d "$LOCALE" --statistics
# The CLI's own catalogue (domain "cli", callrec/locale; tests/callrec/test_cli_language.py).
"$PYBABEL" extract -F babel-cli.cfg --no-location --sort-output -o "$POT" . 2>/dev/null
for po in callrec/locale/*/LC_MESSAGES/cli.po; do
  language="$(basename "$(dirname "$(dirname "$po")")")"
  "$PYBABEL" update -i "$POT" -d callrec/locale -D cli -l "$language" -w 100 \
    --no-fuzzy-matching --ignore-obsolete
done
"$PYBABEL" compile -d callrec/locale -D cli --statistics
