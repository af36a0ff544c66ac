"""The DTMF receiver test battery: generated tones, conditions and speech for talk-off.

Shared by the tests (tests/dtmf/test_inband.py) and the bench (bench/dtmf.py), so both
judge the same audio. Levels are dBm0 per tone, on the reference of dtmf.inband
(0 dBm0 = sine of peak 22662 in int16). SNR is the power of the two tones together over
the power of white noise in the whole 0-4 kHz band. All audio goes through a G.711 µ-law
encode/decode, as it would in a call.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dtmf.inband import COLUMN_FREQUENCIES, KEYPAD, ROW_FREQUENCIES, InbandDetector, dbm0_to_peak
from media.g711 import ulaw_decode, ulaw_encode

SAMPLE_RATE = 8000
ALL_DIGITS = "123A456B789C*0#D"

FloatArray = npt.NDArray[np.float64]
Int16Array = npt.NDArray[np.int16]


def ulaw_round_trip(samples: FloatArray) -> Int16Array:
    clipped = np.clip(np.round(samples), -32768, 32767).astype(np.int16)
    return ulaw_decode(ulaw_encode(clipped))


def _position(digit: str) -> tuple[int, int]:
    for row, keys in enumerate(KEYPAD):
        if digit in keys:
            return row, keys.index(digit)
    raise ValueError(digit)


@dataclass(frozen=True)
class Condition:
    """One line of the battery: how each digit's tone is made and whether it must count."""

    name: str
    expect: bool  # True: every digit must be detected; False: none may be
    tone_ms: float = 50.0
    pause_ms: float = 150.0
    row_level: float = -10.0
    column_level: float = -10.0
    row_offset: float = 0.0  # relative frequency error, 0.015 = +1.5%
    column_offset: float = 0.0
    snr_db: float | None = None
    digits: str = ALL_DIGITS


def tone(digit: str, samples: int, condition: Condition, rng: np.random.Generator) -> FloatArray:
    row, column = _position(digit)
    n = np.arange(samples)
    result = np.zeros(samples)
    for frequency, offset, level in (
        (ROW_FREQUENCIES[row], condition.row_offset, condition.row_level),
        (COLUMN_FREQUENCIES[column], condition.column_offset, condition.column_level),
    ):
        phase = rng.uniform(0, 2 * np.pi)
        omega = 2 * np.pi * frequency * (1 + offset) / SAMPLE_RATE
        result += dbm0_to_peak(level) * np.sin(omega * n + phase)
    return result


def render(condition: Condition, rng: np.random.Generator) -> Int16Array:
    """The condition's digit string as audio: lead-in, then tone/pause per digit."""
    pieces = [np.zeros(int(rng.integers(400, 480)))]  # random alignment to the frames
    tone_samples = round(condition.tone_ms * SAMPLE_RATE / 1000)
    pause_samples = round(condition.pause_ms * SAMPLE_RATE / 1000)
    for digit in condition.digits:
        pieces.append(tone(digit, tone_samples, condition, rng))
        pieces.append(np.zeros(pause_samples))
    pieces.append(np.zeros(800))
    audio = np.concatenate(pieces)
    if condition.snr_db is not None:
        signal_power = (
            dbm0_to_peak(condition.row_level) ** 2 + dbm0_to_peak(condition.column_level) ** 2
        ) / 2
        noise_power = signal_power / 10 ** (condition.snr_db / 10)
        audio = audio + rng.normal(0.0, np.sqrt(noise_power), audio.size)
    return ulaw_round_trip(audio)


BATTERY: list[Condition] = [
    Condition("duration 15 ms", False, tone_ms=15),
    Condition("duration 20 ms", False, tone_ms=20),
    Condition("duration 40 ms", True, tone_ms=40),
    Condition("duration 50 ms", True, tone_ms=50),
    Condition("frequency +1.5%", True, row_offset=0.015, column_offset=0.015),
    Condition("frequency -1.5%", True, row_offset=-0.015, column_offset=-0.015),
    Condition("frequency low +1.5% high -1.5%", True, row_offset=0.015, column_offset=-0.015),
    Condition("frequency low +3.5%", False, row_offset=0.035),
    Condition("frequency low -3.5%", False, row_offset=-0.035),
    Condition("frequency high +3.5%", False, column_offset=0.035),
    Condition("frequency high -3.5%", False, column_offset=-0.035),
    Condition("normal twist 8 dB", True, row_level=-6, column_level=-14),
    Condition("reverse twist 4 dB", True, row_level=-10, column_level=-6),
    Condition("normal twist 12 dB (reject)", False, row_level=-6, column_level=-18),
    Condition("reverse twist 8 dB (reject)", False, row_level=-14, column_level=-6),
    Condition("SNR 15 dB white noise", True, row_level=-20, column_level=-20, snr_db=15),
    Condition("SNR 15 dB, 40 ms", True, tone_ms=40, snr_db=15),
    *(
        Condition(f"level {level} dBm0", True, row_level=level, column_level=level)
        for level in (-3, -9, -15, -21, -27, -29)
    ),
    Condition(
        "10 digits/s (40 ms on, 40 ms off)", True, tone_ms=40, pause_ms=40, digits="1*2#3A0D55"
    ),
]


def detect(detector: InbandDetector, audio: Int16Array, rng: np.random.Generator) -> str:
    """Feed `audio` in random chunk sizes (1 to 400 samples) and return the digits."""
    digits: list[str] = []
    position = 0
    while position < audio.size:
        size = int(rng.integers(1, 401))
        chunk = audio[position : position + size]
        for event in detector.feed(chunk, position / SAMPLE_RATE):
            digits.append(event.digit)
        position += size
    return "".join(digits)


# --- speech for talk-off -------------------------------------------------------------

_TEXTS = {
    "en": (
        "The quick brown fox jumps over the lazy dog. Would you please call me back "
        "tomorrow morning at nine? I think the weather will be lovely, so we could walk "
        "along the river and have lunch in the old market. My phone number is two one "
        "four, five five five, eight nine zero one. Thank you very much for waiting; an "
        "agent will be with you shortly. Ah, oh, ee, oo, hmm, yes, no, maybe, alright."
    ),
    "de": (
        "Guten Morgen, hier spricht der automatische Anrufbeantworter. Bitte hinterlassen "
        "Sie eine Nachricht nach dem Signalton. Wir sind montags bis freitags von acht bis "
        "siebzehn Uhr erreichbar. Die Rechnung vom letzten Monat ist leider noch offen."
    ),
    "fr": (
        "Bonjour, vous êtes bien sur la messagerie de Monsieur Dupont. Je ne suis pas "
        "disponible pour le moment, mais laissez-moi un message et je vous rappellerai "
        "dès que possible. Merci et bonne journée, à bientôt."
    ),
    "es": (
        "Buenas tardes, le habla el servicio de atención al cliente. Su llamada es muy "
        "importante para nosotros. Por favor, espere un momento y le atenderemos enseguida. "
        "El número de su pedido es cuatro tres dos uno."
    ),
}
# (voice, pitch 0-99, words per minute): male, female and child-like pitches.
SPEECH_VOICES: list[tuple[str, int, int]] = [
    ("en", 50, 160),
    ("en-us", 40, 175),
    ("en+f3", 60, 150),
    ("en+m7", 35, 170),
    ("en+f4", 80, 165),
    ("en-us+f2", 70, 150),
    ("de", 50, 160),
    ("de+f2", 70, 150),
    ("fr", 45, 160),
    ("fr+m3", 30, 170),
    ("es", 55, 165),
    ("es+f5", 90, 150),
]
SPEECH_RMS_DBM0 = -18.0


def speech_tools_available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def _english_text() -> str:
    license_text = Path("/usr/share/common-licenses/GPL-3")
    if license_text.exists():
        return " ".join(license_text.read_text().split())
    return _TEXTS["en"]


def _cache_dir() -> Path:
    path = Path(os.environ.get("CALLREC_SPEECH_CACHE", tempfile.gettempdir()))
    path = path / "callrec-dtmf-speech"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _synthesise(voice: str, pitch: int, speed: int, text: str) -> Int16Array:
    key = hashlib.sha256(f"{voice}|{pitch}|{speed}|{text}".encode()).hexdigest()[:20]
    cached = _cache_dir() / f"{key}.wav"
    if not cached.exists():
        with tempfile.TemporaryDirectory() as scratch:
            raw = Path(scratch) / "espeak.wav"
            resampled = Path(scratch) / "8k.wav"
            subprocess.run(
                [
                    "espeak-ng",
                    "-v",
                    voice,
                    "-p",
                    str(pitch),
                    "-s",
                    str(speed),
                    "-w",
                    str(raw),
                    text,
                ],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                ["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(resampled)],
                check=True,
                capture_output=True,
            )
            os.replace(resampled, cached)
    with wave.open(str(cached)) as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").copy()


def _text_chunks(language: str) -> Iterator[str]:
    words = (_english_text() if language == "en" else _TEXTS[language]).split()
    size = 60
    position = 0
    while True:
        chunk = words[position : position + size]
        if len(chunk) < size:
            position = 0
            chunk = chunk + words[: size - len(chunk)]
        yield " ".join(chunk)
        position += size


def speech(seconds: float) -> Int16Array:
    """About `seconds` of espeak-ng speech across voices, 8 kHz, levelled, via µ-law.

    Voices take turns with ~20 s utterances; English voices read on through a long text
    so the content differs. Cached in $CALLREC_SPEECH_CACHE (default: the temp dir).
    """
    chunks = {language: _text_chunks(language) for language in _TEXTS}
    target_peak = dbm0_to_peak(SPEECH_RMS_DBM0) / np.sqrt(2)
    pieces: list[FloatArray] = []
    total = 0
    turn = 0
    while total < seconds * SAMPLE_RATE:
        voice, pitch, speed = SPEECH_VOICES[turn % len(SPEECH_VOICES)]
        # Later rounds shift pitch and rate, so repeated texts are new audio.
        cycle = turn // len(SPEECH_VOICES)
        pitch = (pitch + 13 * cycle) % 100
        speed += 15 * (cycle % 3) - 15
        turn += 1
        language = voice.split("+")[0].split("-")[0]
        audio = _synthesise(voice, pitch, speed, next(chunks[language])).astype(np.float64)
        active = audio[np.abs(audio) > 0.01 * np.abs(audio).max()]
        audio *= target_peak / np.sqrt(np.mean(active**2))
        pieces.append(audio)
        total += audio.size
    return ulaw_round_trip(np.concatenate(pieces)[: int(seconds * SAMPLE_RATE)])
