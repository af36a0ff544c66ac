"""The legal-notice announcement: prompt audio, and RTP injection that keeps streams continuous.

Sans-IO. `load_announcement` turns the `[recording] announcement` setting into 8 kHz mono
int16 PCM; "default" is the shipped notice in the language in force (`SHIPPED_NOTICES`:
"This call is recorded." in English, "Dit gesprek wordt opgenomen." in Dutch, both made
by scripts/make_prompt.sh). `StreamContinuity` follows one outgoing direction of the
relay (what one phone receives): it numbers the packets of an `Injection` so that they
continue the stream the phone was hearing, and afterwards rewrites the forwarded packets
by a fixed offset so the phone keeps seeing one stream: same SSRC, consecutive sequence
numbers, timestamps that advance with the audio. Until a first injection, the relay
forwards packets untouched and only remembers the last one it sent (see `media.relay`).

A prompt is sent in the codec the receiving leg negotiated (`prompt_codec` picks it):
G.711, G.722 or Opus (`media.codecs.encode_payloads`), 20 ms a packet, with timestamps
on that codec's RTP clock (8000 for G.711 and G.722, whose 16 kHz audio RFC 3551 clocks
at 8000; 48000 for Opus). Wideband encoding costs milliseconds per prompt (Opus about
30 ms of CPU for a 1.5 s notice), and every call plays the same few prompts, so encoded
payloads are kept per prompt and codec (`_EncodedCache`, a few entries).

The beep is the recorder warning tone of US practice, a half-second burst of 1400 Hz
(Federal Standard 1037C, "recorder warning tone": https://www.its.bldrdoc.gov/fs-1037/dir-030/_4468.htm).
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile

from media import g711
from media.codecs import ENCODABLE, RTP_CLOCK_RATES, encode_payloads, frame_timestamp_step
from media.rtp import MediaError, RtpPacket

__all__ = [
    "BEEP_DURATION_S",
    "BEEP_FREQUENCY_HZ",
    "DEFAULT_PROMPT",
    "FRAME_SAMPLES",
    "MAX_ANNOUNCEMENT_S",
    "SAMPLE_RATE",
    "SHIPPED_NOTICES",
    "AnnouncementError",
    "Injection",
    "StreamContinuity",
    "load_announcement",
    "make_beep",
    "prompt_codec",
    "read_prompt",
    "resample",
    "shipped_notice",
]

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]

SAMPLE_RATE: Final = 8000
FRAME_SAMPLES: Final = 160  # 20 ms at 8 kHz, the usual G.711 packet
FRAME_SECONDS: Final = FRAME_SAMPLES / SAMPLE_RATE
BEEP_FREQUENCY_HZ: Final = 1400.0
BEEP_DURATION_S: Final = 0.5
BEEP_LEVEL_DBFS: Final = -10.0
MAX_ANNOUNCEMENT_S: Final = 30.0  # a notice, not music on hold; bounds memory per call
_PROMPTS: Final = Path(__file__).resolve().parent / "prompts"
DEFAULT_PROMPT: Final = _PROMPTS / "recorded.wav"
# The spoken notice shipped for each language (`callrec.policy.LANGUAGES`); media may not
# import the policy, so tests/media/test_announce.py checks that both name the same ones.
SHIPPED_NOTICES: Final = {"en": DEFAULT_PROMPT, "nl": _PROMPTS / "recorded-nl.wav"}
INJECTABLE_CODECS: Final = ENCODABLE  # G.711, G.722 and Opus
_ENCODED_CACHE_SIZE: Final = 16  # prompts x codecs: notice (per language), beep, keys

# Gaps up to this long between the last packet a phone got and the next one are treated
# as back-to-back frames; longer ones (silence suppression, hold) advance the timestamp
# by the elapsed time, as the sender's clock would have.
CONTIGUOUS_GAP_S: Final = 0.1
# After re-anchoring, this many forwarded packets are checked for reordering across the
# anchor; a late one would reuse a sequence number the phone already got.
REORDER_GUARD_PACKETS: Final = 64

_SEQUENCE_TIMESTAMP_SSRC = struct.Struct("!HII")
_SEQUENCE_MASK = 0xFFFF
_TIMESTAMP_MASK = 0xFFFFFFFF
_RAMP_S = 0.005  # fade the beep in and out so it does not click


class AnnouncementError(MediaError):
    """The announcement setting or its WAV file cannot be used; the message says why."""


# -- prompt audio ----------------------------------------------------------------------


def resample(
    samples: npt.ArrayLike, source_rate: int, target_rate: int = SAMPLE_RATE
) -> FloatArray:
    """Band-limited resampling of a 1-D float signal by FFT (no per-sample loop).

    Downsampling drops the spectrum above the new Nyquist frequency, so nothing aliases.
    """
    signal = np.asarray(samples, dtype=np.float64)
    if source_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, not {source_rate} and {target_rate}")
    if source_rate == target_rate or signal.size == 0:
        return signal.copy()
    length = signal.size
    target_length = max(1, round(length * target_rate / source_rate))
    spectrum = np.fft.rfft(signal)
    bins = target_length // 2 + 1
    kept = np.zeros(bins, dtype=np.complex128)
    shared = min(bins, spectrum.size)
    kept[:shared] = spectrum[:shared]
    if target_length < length and target_length % 2 == 0:
        kept[-1] = 0  # the new Nyquist bin would fold both signs of a tone onto one
    elif target_length > length and length % 2 == 0:
        kept[length // 2] /= 2  # the old Nyquist bin stood for +f and -f at once
    result: FloatArray = np.fft.irfft(kept, n=target_length) * (target_length / length)
    return result


def _to_int16(signal: FloatArray) -> Int16Array:
    return np.clip(np.round(signal * 32767.0), -32768, 32767).astype(np.int16)


def read_prompt(path: str | Path) -> Int16Array:
    """Read a WAV (or any file soundfile reads), any rate and channels, as 8 kHz mono int16.

    Channels are averaged. Raises `AnnouncementError` naming the file and the reason.
    """
    location = Path(path)
    if not location.exists():
        raise AnnouncementError(f"announcement file {location} does not exist")
    if not location.is_file():
        raise AnnouncementError(f"announcement file {location} is not a regular file")
    try:
        audio, rate = soundfile.read(str(location), dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise AnnouncementError(
            f"announcement file {location} is not readable audio: {exc}"
        ) from exc
    frames = audio.shape[0]
    if frames == 0:
        raise AnnouncementError(f"announcement file {location} holds no audio")
    if frames / rate > MAX_ANNOUNCEMENT_S:
        raise AnnouncementError(
            f"announcement file {location} lasts {frames / rate:.1f} s, "
            f"at most {MAX_ANNOUNCEMENT_S:.0f} s is allowed"
        )
    mono = audio.mean(axis=1)
    return _to_int16(resample(mono, int(rate), SAMPLE_RATE))


def make_beep(
    frequency_hz: float = BEEP_FREQUENCY_HZ,
    duration_s: float = BEEP_DURATION_S,
    level_dbfs: float = BEEP_LEVEL_DBFS,
) -> Int16Array:
    """A sine burst at 8 kHz with 5 ms raised-cosine ramps (default: 1400 Hz, 0.5 s)."""
    count = round(duration_s * SAMPLE_RATE)
    times = np.arange(count, dtype=np.float64) / SAMPLE_RATE
    amplitude = 10.0 ** (level_dbfs / 20.0)
    tone = amplitude * np.sin(2.0 * math.pi * frequency_hz * times)
    ramp = min(round(_RAMP_S * SAMPLE_RATE), count // 2)
    if ramp:
        fade = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, ramp))
        tone[:ramp] *= fade
        tone[count - ramp :] *= fade[::-1]
    return _to_int16(tone)


def shipped_notice(language: str) -> Path:
    """The shipped spoken notice in `language`; raises AnnouncementError for a language
    without one."""
    notice = SHIPPED_NOTICES.get(language)
    if notice is None:
        known = ", ".join(sorted(SHIPPED_NOTICES))
        raise AnnouncementError(f"no shipped notice in language {language!r} (only {known})")
    return notice


def load_announcement(setting: str, language: str = "en") -> Int16Array | None:
    """The `[recording] announcement` setting as 8 kHz mono int16 PCM.

    "default" is the shipped spoken notice in `language`, "beep" the 1400 Hz warning
    tone, "none" no announcement (None); anything else is a path to an audio file (which
    plays whatever the language). Raises `AnnouncementError` with a one-line reason if
    the file cannot be used.
    """
    keyword = setting.strip().lower()
    if keyword == "none":
        return None
    if keyword == "beep":
        return make_beep()
    if keyword == "default":
        return read_prompt(shipped_notice(language))
    if not keyword:
        raise AnnouncementError(
            "announcement setting is empty; use 'default', 'beep', 'none' or a WAV file path"
        )
    return read_prompt(Path(setting).expanduser())


def prompt_codec(
    own: Mapping[int, str], other: Mapping[int, str] | None = None
) -> tuple[int, str] | None:
    """The payload type and codec to play a prompt in towards a leg whose SDP declared
    `own` (payload type -> encoding name, in SDP order): the first injectable codec the
    other leg's SDP has too (the one the call carries, so the phone's decoder does not
    switch), else the leg's first injectable one; None if it declared none of them.
    A leg may be sent any format of its own SDP (RFC 3264 5.1, 6.1)."""
    injectable = [(pt, name.upper()) for pt, name in own.items() if name.upper() in ENCODABLE]
    if not injectable:
        return None
    shared = {name.upper() for name in other.values()} if other else set()
    return next((choice for choice in injectable if choice[1] in shared), injectable[0])


class _EncodedCache:
    """Encoded prompts by (codec, rate, audio digest), the most recent few. Every call
    plays the same notice and beep, and wideband encoding is not free (module doc)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, int, bytes], tuple[bytes, ...]] = OrderedDict()

    def payloads(self, codec: str, pcm: Int16Array, sample_rate: int) -> tuple[bytes, ...]:
        digest = hashlib.blake2b(pcm.tobytes(), digest_size=16).digest()
        key = (codec, sample_rate, digest)
        found = self._entries.get(key)
        if found is None:
            found = tuple(encode_payloads(codec, pcm, sample_rate))
            self._entries[key] = found
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return found


_ENCODED = _EncodedCache(_ENCODED_CACHE_SIZE)


# -- RTP continuity ----------------------------------------------------------------------


def _frame_samples(data: bytes | None, clock_rate: int = SAMPLE_RATE) -> int:
    """RTP timestamp units a packet covers. At an 8000 Hz clock (G.711, G.722: one
    payload octet per unit) its payload size, if plausible; otherwise (Opus, whose
    packets vary in size, or an odd packet) 20 ms."""
    default = clock_rate * FRAME_SAMPLES // SAMPLE_RATE
    if data is None or clock_rate != SAMPLE_RATE:
        return default
    try:
        size = len(RtpPacket.parse(data).payload)
    except MediaError:
        return default
    # 10..60 ms of G.711; anything else (an RFC 4733 event, comfort noise) says nothing.
    return size if 80 <= size <= 480 else default


class StreamContinuity:
    """One receiver's view of the stream sent towards it, kept continuous across injections.

    Built from the last packet forwarded towards the receiver (`last_packet`, sent at wall
    time `last_sent_at`), or with a fresh random SSRC, sequence number and timestamp if
    none was. `start_injection` returns the `Injection` that continues the stream; while
    it runs `forward` returns None (the prompt replaces the far side's audio). After it,
    `forward` rewrites each forwarded packet's sequence number, timestamp and SSRC so the
    receiver sees one stream; a new far-side SSRC is re-anchored the same way.
    """

    __slots__ = (
        "_anchor_sequence",
        "_forward_frame",
        "_guard",
        "_injection",
        "_last_packet",
        "_sequence_offset",
        "_source_ssrc",
        "_timestamp_offset",
        "clock_rate",
        "last_frame_samples",
        "last_sent_at",
        "last_sequence",
        "last_timestamp",
        "ssrc",
    )

    def __init__(
        self,
        last_packet: bytes | None = None,
        last_sent_at: float | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if last_packet is not None and len(last_packet) >= 12:
            sequence, timestamp, ssrc = _SEQUENCE_TIMESTAMP_SSRC.unpack_from(last_packet, 2)
            self.last_sent_at: float | None = last_sent_at
        else:
            # RFC 3550 5.1: random initial values, so the stream cannot be guessed.
            source = rng if rng is not None else random.SystemRandom()
            sequence = source.getrandbits(16)
            timestamp = source.getrandbits(32)
            ssrc = source.getrandbits(32)
            self.last_sent_at = None
        self.ssrc: int = ssrc
        self.last_sequence: int = sequence
        self.last_timestamp: int = timestamp
        self.clock_rate = SAMPLE_RATE  # of the stream's codec; set by each injection
        self._last_packet = last_packet  # until the first injection tells the clock
        self.last_frame_samples: int = _frame_samples(last_packet)
        self._injection: Injection | None = None
        self._source_ssrc: int | None = ssrc if last_packet is not None else None
        self._sequence_offset = 0
        self._timestamp_offset = 0
        self._anchor_sequence = 0
        self._forward_frame = FRAME_SAMPLES
        self._guard = 0

    @property
    def injecting(self) -> bool:
        return self._injection is not None

    def start_injection(
        self,
        pcm: npt.ArrayLike,
        payload_type: int,
        codec: str,
        now: float,
        *,
        sample_rate: int = SAMPLE_RATE,
    ) -> Injection:
        """Packets of `pcm` (mono int16 at `sample_rate`) in `codec` continuing this
        stream from `now`, timestamped on `codec`'s RTP clock.

        An injection still running is stopped first (the new one continues after it).
        Raises `MediaError` for a codec not in `INJECTABLE_CODECS` or a bad payload type.
        """
        clock = RTP_CLOCK_RATES.get(codec.upper())
        if clock is None:
            raise MediaError(f"cannot inject an announcement in codec {codec!r}")
        if clock != self.clock_rate:
            self.clock_rate = clock
            self.last_frame_samples = _frame_samples(self._last_packet, clock)
        if self._injection is not None:
            self._injection.stop()
        first_sequence = (self.last_sequence + 1) & _SEQUENCE_MASK
        first_timestamp = (self.last_timestamp + self._timestamp_advance(now)) & _TIMESTAMP_MASK
        injection = Injection(
            self, pcm, payload_type, codec, first_sequence, first_timestamp, sample_rate
        )
        self._injection = injection
        return injection

    def end_injection(self, injection: Injection) -> None:
        """Resume forwarding after `injection` (no-op if a newer one has replaced it)."""
        injection.stop()
        if self._injection is injection:
            self._injection = None
            self._source_ssrc = None  # the next forwarded packet sets new offsets

    def forward(self, data: bytes, now: float) -> bytes | bytearray | None:
        """The packet to send instead of forwarded `data` (arrived at `now`), or None to drop it."""
        if self._injection is not None:
            return None
        sequence, timestamp, ssrc = _SEQUENCE_TIMESTAMP_SSRC.unpack_from(data, 2)
        if ssrc != self._source_ssrc:
            self._anchor(data, sequence, timestamp, ssrc, now)
        elif self._guard:
            self._guard -= 1
            if (sequence - self._anchor_sequence) & _SEQUENCE_MASK >= 0x8000:
                return None
        sequence = (sequence + self._sequence_offset) & _SEQUENCE_MASK
        timestamp = (timestamp + self._timestamp_offset) & _TIMESTAMP_MASK
        packet = bytearray(data)
        _SEQUENCE_TIMESTAMP_SSRC.pack_into(packet, 2, sequence, timestamp, self.ssrc)
        self.last_sequence = sequence
        self.last_timestamp = timestamp
        self.last_sent_at = now
        return packet

    def _anchor(self, data: bytes, sequence: int, timestamp: int, ssrc: int, now: float) -> None:
        """Map a (new) incoming stream so its packet `data` follows the last one sent."""
        advance = self._timestamp_advance(now)
        self._sequence_offset = (self.last_sequence + 1 - sequence) & _SEQUENCE_MASK
        self._timestamp_offset = (self.last_timestamp + advance - timestamp) & _TIMESTAMP_MASK
        self._source_ssrc = ssrc
        self._anchor_sequence = sequence
        self._guard = REORDER_GUARD_PACKETS
        self.last_frame_samples = _frame_samples(data, self.clock_rate)

    def _timestamp_advance(self, now: float) -> int:
        """Timestamp step from the last packet sent to one sent at `now`."""
        frame = self.last_frame_samples
        if self.last_sent_at is None:
            return frame
        elapsed = now - self.last_sent_at
        if elapsed <= CONTIGUOUS_GAP_S:
            return frame
        step = self.clock_rate * FRAME_SAMPLES // SAMPLE_RATE  # 20 ms on the stream's clock
        return max(frame, round(elapsed * self.clock_rate / step) * step)

    def _sent_injected(self, sequence: int, timestamp: int, now: float, units: int) -> None:
        self.last_sequence = sequence
        self.last_timestamp = timestamp
        self.last_sent_at = now
        self.last_frame_samples = units


class Injection:
    """The RTP packets of one announcement towards one receiver (sans-IO).

    PCM is padded with silence to whole 20 ms frames and encoded: G.711 at 8 kHz in one
    table lookup, straight into one array of packets; G.722 and Opus (or PCM at another
    rate) by `media.codecs.encode_payloads`, through the cache of encoded prompts.
    `next_packet(now)` hands out one packet per call (the caller paces them at 20 ms) and
    tells the `StreamContinuity` what was sent. The first packet carries the marker bit
    (RFC 3551 4.1: the start of a talkspurt).
    """

    __slots__ = (
        "_continuity",
        "_first_sequence",
        "_first_timestamp",
        "_index",
        "_packets",
        "_step",
        "_stopped",
        "codec",
        "payload_type",
    )

    def __init__(
        self,
        continuity: StreamContinuity,
        pcm: npt.ArrayLike,
        payload_type: int,
        codec: str,
        first_sequence: int,
        first_timestamp: int,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        name = codec.upper()
        if name not in INJECTABLE_CODECS:
            known = ", ".join(sorted(INJECTABLE_CODECS))
            raise MediaError(f"cannot inject an announcement in codec {codec!r}, only {known}")
        if not 0 <= payload_type <= 127:
            raise MediaError(f"RTP payload type {payload_type} does not fit in 7 bits")
        samples = np.asarray(pcm)
        if samples.ndim != 1:
            raise MediaError(f"announcement PCM must be 1-D mono, not shape {samples.shape}")
        self._step = frame_timestamp_step(name)
        self._packets: npt.NDArray[np.uint8] | list[bytes]
        if name in ("PCMU", "PCMA") and sample_rate == SAMPLE_RATE:
            count = -(-samples.size // FRAME_SAMPLES)
            padded = np.zeros(count * FRAME_SAMPLES, dtype=np.int16)
            padded[: samples.size] = np.clip(samples, -32768, 32767)
            self._packets = self._build(
                g711.encode(name, padded).reshape(count, FRAME_SAMPLES),
                payload_type,
                first_sequence,
                first_timestamp,
                continuity.ssrc,
            )
        else:
            clipped = np.clip(samples, -32768, 32767).astype(np.int16)
            self._packets = self._build_list(
                _ENCODED.payloads(name, clipped, sample_rate),
                payload_type,
                first_sequence,
                first_timestamp,
                continuity.ssrc,
                self._step,
            )
        self._continuity = continuity
        self._first_sequence = first_sequence
        self._first_timestamp = first_timestamp
        self._index = 0
        self._stopped = False
        self.codec = name
        self.payload_type = payload_type

    @staticmethod
    def _build(
        payloads: npt.NDArray[np.uint8],
        payload_type: int,
        first_sequence: int,
        first_timestamp: int,
        ssrc: int,
    ) -> npt.NDArray[np.uint8]:
        """All packets as rows of one array: 12-byte header then the payload."""
        count = payloads.shape[0]
        index = np.arange(count, dtype=np.int64)
        sequences = ((first_sequence + index) & _SEQUENCE_MASK).astype(">u2")
        timestamps = ((first_timestamp + index * FRAME_SAMPLES) & _TIMESTAMP_MASK).astype(">u4")
        packets = np.empty((count, 12 + FRAME_SAMPLES), dtype=np.uint8)
        packets[:, 0] = 0x80
        packets[:, 1] = payload_type
        if count:
            packets[0, 1] |= 0x80
        packets[:, 2:4] = sequences.view(np.uint8).reshape(count, 2)
        packets[:, 4:8] = timestamps.view(np.uint8).reshape(count, 4)
        packets[:, 8:12] = np.frombuffer(ssrc.to_bytes(4, "big"), dtype=np.uint8)
        packets[:, 12:] = payloads
        return packets

    @staticmethod
    def _build_list(
        payloads: Sequence[bytes],
        payload_type: int,
        first_sequence: int,
        first_timestamp: int,
        ssrc: int,
        step: int,
    ) -> list[bytes]:
        """All packets of payloads that may differ in size (Opus), `step` units apart."""
        header = struct.Struct("!BBHII")
        return [
            header.pack(
                0x80,
                payload_type | (0x80 if index == 0 else 0),
                (first_sequence + index) & _SEQUENCE_MASK,
                (first_timestamp + index * step) & _TIMESTAMP_MASK,
                ssrc,
            )
            + payload
            for index, payload in enumerate(payloads)
        ]

    def __len__(self) -> int:
        return len(self._packets)

    @property
    def sent(self) -> int:
        return self._index

    @property
    def finished(self) -> bool:
        return self._stopped or self._index >= len(self)

    @property
    def duration_s(self) -> float:
        return len(self) * FRAME_SECONDS

    def stop(self) -> None:
        """Send nothing more (a newer injection or the end of the call)."""
        self._stopped = True

    def next_packet(self, now: float) -> bytes | None:
        """The next packet to send at `now`, or None once all were sent or it was stopped."""
        if self.finished:
            return None
        index = self._index
        self._index = index + 1
        self._continuity._sent_injected(
            (self._first_sequence + index) & _SEQUENCE_MASK,
            (self._first_timestamp + index * self._step) & _TIMESTAMP_MASK,
            now,
            self._step,
        )
        packet = self._packets[index]
        return packet if isinstance(packet, bytes) else packet.tobytes()
