#!/usr/bin/env bash
# Regenerates a shipped legal-notice prompt: espeak-ng speaks the text in the language's
# voice, sox turns it into 8 kHz mono 16-bit PCM (the G.711 rate, so nothing is resampled
# per call) normalised to -3 dBFS. The WAVs are committed; tests never run this.
#   en: media/prompts/recorded.wav     "This call is recorded."        (voice en-us)
#   nl: media/prompts/recorded-nl.wav  "Dit gesprek wordt opgenomen."  (voice nl)
# Usage: scripts/make_prompt.sh [en|nl] ["Text to speak"]   (needs espeak-ng and sox)
set -euo pipefail
cd "$(dirname "$0")/.."
LANGUAGE="${1:-en}"
case "$LANGUAGE" in
  en) VOICE=en-us; DEFAULT_TEXT="This call is recorded."; OUT=media/prompts/recorded.wav ;;
  nl) VOICE=nl; DEFAULT_TEXT="Dit gesprek wordt opgenomen."; OUT=media/prompts/recorded-nl.wav ;;
  *) echo "usage: scripts/make_prompt.sh [en|nl] [\"Text to speak\"]" >&2; exit 2 ;;
esac
TEXT="${2:-$DEFAULT_TEXT}"
TMP="$(mktemp --suffix=.wav)"
trap 'rm -f "$TMP"' EXIT
espeak-ng -v "$VOICE" -s 145 -a 160 -w "$TMP" "$TEXT"
# rate -v: very high quality anti-aliasing; silence trims leading/trailing quiet parts.
sox "$TMP" -r 8000 -c 1 -b 16 -e signed-integer "$OUT" \
  silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
  rate -v 8000 pad 0.05 0.1 norm -3
echo "wrote $OUT ($(stat -c %s "$OUT") bytes)"
