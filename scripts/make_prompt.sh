#!/usr/bin/env bash
# Regenerates the shipped legal-notice prompt, media/prompts/recorded.wav: espeak-ng
# speaks the text, sox turns it into 8 kHz mono 16-bit PCM (the G.711 rate, so nothing is
# resampled per call) normalised to -3 dBFS. The WAV is committed; tests never run this.
# Usage: scripts/make_prompt.sh ["Text to speak"]   (needs espeak-ng and sox)
set -euo pipefail
cd "$(dirname "$0")/.."
TEXT="${1:-This call is recorded.}"
OUT=media/prompts/recorded.wav
TMP="$(mktemp --suffix=.wav)"
trap 'rm -f "$TMP"' EXIT
espeak-ng -v en-us -s 145 -a 160 -w "$TMP" "$TEXT"
# rate -v: very high quality anti-aliasing; silence trims leading/trailing quiet parts.
sox "$TMP" -r 8000 -c 1 -b 16 -e signed-integer "$OUT" \
  silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
  rate -v 8000 pad 0.05 0.1 norm -3
echo "wrote $OUT ($(stat -c %s "$OUT") bytes)"
