"""DTMF receiver bench: callrec's in-band detector beside multimon-ng on the same audio.

Runs every condition of the test battery (tests/dtmf/signals.py) `--trials` times with
fresh random phases, alignment and noise, then `--speech-minutes` of espeak-ng speech for
talk-off, and prints a markdown table. multimon-ng reads raw signed 16-bit audio at
22050 Hz, so the very same 8 kHz µ-law-decoded audio is resampled by sox for it.

Run from the repository root:  python -m bench.dtmf [--trials 10] [--speech-minutes 30]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

import numpy as np

from dtmf.inband import InbandDetector
from testkit.signals import BATTERY, SAMPLE_RATE, Condition, Int16Array, render, speech

MULTIMON_RATE = 22050


def callrec_digits(audio: Int16Array) -> str:
    detector = InbandDetector(SAMPLE_RATE)
    digits: list[str] = []
    for start in range(0, audio.size, 160):  # 20 ms packets, as the relay tap gives them
        events = detector.feed(audio[start : start + 160], start / SAMPLE_RATE)
        digits.extend(event.digit for event in events)
    return "".join(digits)


def _raw_mono16(rate: int) -> list[str]:
    """sox options for headerless 16-bit mono audio on a pipe."""
    return ["-t", "raw", "-r", str(rate), "-e", "signed", "-b", "16", "-c", "1", "-"]


def multimon_digits(audio: Int16Array) -> str:
    resample = subprocess.run(
        ["sox", *_raw_mono16(SAMPLE_RATE), *_raw_mono16(MULTIMON_RATE)],
        input=audio.astype("<i2").tobytes(),
        capture_output=True,
        check=True,
    )
    decoded = subprocess.run(
        ["multimon-ng", "-c", "-a", "DTMF", "-t", "raw", "-"],
        input=resample.stdout,
        capture_output=True,
        check=True,
    )
    return "".join(
        line.split(":", 1)[1].strip()
        for line in decoded.stdout.decode().splitlines()
        if line.startswith("DTMF:")
    )


def matched(expected: str, detected: str) -> int:
    """Length of the longest common subsequence: digits detected in the right order."""
    previous = [0] * (len(detected) + 1)
    for digit in expected:
        current = [0]
        for j, other in enumerate(detected):
            current.append(previous[j] + 1 if digit == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def score(condition: Condition, expected: str, detected: str) -> tuple[str, bool]:
    hits = matched(expected, detected)
    extra = len(detected) - hits
    if condition.expect:
        cell = f"{100 * hits / len(expected):.1f}%" + (f" (+{extra} false)" if extra else "")
        return cell, hits == len(expected) and extra == 0
    return f"{100 * len(detected) / len(expected):.1f}%", not detected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="repeats of each condition")
    parser.add_argument("--speech-minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    have_multimon = shutil.which("multimon-ng") is not None and shutil.which("sox") is not None

    rng = np.random.default_rng(args.seed)
    lines = [
        f"DTMF battery: {args.trials} runs x 16 digits per condition (fewer for the 10/s "
        "sequence), levels dBm0 per tone, every signal through G.711 µ-law.",
        "Cells: share of digits detected (want 100% for 'detect', 0% for 'reject').",
        "",
        "| condition | spec | callrec | multimon-ng |",
        "|---|---|---|---|",
    ]
    callrec_ok = multimon_ok = 0
    for condition in BATTERY:
        renders = [render(condition, rng) for _ in range(args.trials)]
        audio = np.concatenate(renders)
        expected = condition.digits * args.trials
        ours, ours_ok = score(condition, expected, callrec_digits(audio))
        callrec_ok += ours_ok
        theirs, theirs_ok = ("n/a", False)
        if have_multimon:
            theirs, theirs_ok = score(condition, expected, multimon_digits(audio))
            multimon_ok += theirs_ok
        spec = "detect" if condition.expect else "reject"
        mark = {True: "", False: " ✗"}
        lines.append(
            f"| {condition.name} | {spec} | {ours}{mark[ours_ok]} | {theirs}{mark[theirs_ok]} |"
        )
    lines.append(
        f"| **conditions met** | | **{callrec_ok}/{len(BATTERY)}** | "
        f"**{multimon_ok}/{len(BATTERY)}** |"
    )

    talk = speech(args.speech_minutes * 60)
    started = time.perf_counter()
    ours_talk = callrec_digits(talk)
    elapsed = time.perf_counter() - started
    theirs_talk = multimon_digits(talk) if have_multimon else ""
    hours = args.speech_minutes / 60
    lines += [
        "",
        f"Talk-off: {args.speech_minutes:g} min of espeak-ng speech (12 voices/pitches in "
        "en, en-us, de, fr, es; -18 dBm0 RMS), false digits:",
        "",
        "| speech | callrec | multimon-ng |",
        "|---|---|---|",
        f"| false digits | {len(ours_talk)} ({ours_talk or '-'}) | "
        f"{len(theirs_talk) if have_multimon else 'n/a'} ({theirs_talk or '-'}) |",
        f"| false digits per hour | {len(ours_talk) / hours:.1f} | "
        f"{len(theirs_talk) / hours if have_multimon else float('nan'):.1f} |",
        "",
        f"callrec in-band detection on the speech took {elapsed:.1f} s "
        f"({args.speech_minutes * 60 / elapsed:.0f}x real time, one core, 20 ms chunks).",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
