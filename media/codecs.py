"""Audio codecs for the recorder: RTP payloads of each leg decoded to PCM at the file's rate.

What callrec can record, by SDP encoding name (RFC 3551 and RFC 7587):

| codec | RTP clock | decoded at | how |
|---|---|---|---|
| PCMU, PCMA (G.711) | 8000 | 8000 | `media.g711` table lookup |
| G722 | 8000 (RFC 3551's historical error) | 16000 | PyAV (ffmpeg's G.722 ADPCM) |
| opus | 48000 | 48000, resampled to the file's rate | PyAV (libopus) |

Anything else (G.729, iLBC, Speex...) is not decodable here and makes a recording
`unrecordable` (`media.recorder`). A call is recorded at 16 kHz when a wideband codec
(G.722, Opus) may carry it (`recording_rate`), else at 8 kHz; each leg's audio is
resampled to that rate with a windowed-sinc polyphase filter (`Resampler`), never by
repeating or dropping samples.

Decoders keep their state per leg and codec (G.722 is ADPCM: each sample depends on the
ones before), so a leg's packets must reach `LegDecoder.decode` in stream order, which
the recorder's per-tick batches (arrival order) are. Cost stays per batch, not per
packet, where the codec allows it: G.711 is one table lookup per batch, G.722 one ffmpeg
call per batch (its payloads are a plain sample stream, so a batch of consecutive
packets is one payload), and Opus one ffmpeg call per packet (each packet is a frame).
`bench/codec_cost.py` measures the CPU per 20 ms frame.

Encoding (`encode_payloads`) is for what callrec itself sends: the legal notice, the
beeps and in-band DTMF (`media.announce`), in whichever of these codecs the receiving
leg negotiated, cut into 20 ms payloads. G.722 is one ffmpeg call for the whole prompt;
Opus (libopus, `voip` mode, 32 kbit/s) one call per 20 ms frame, with one frame of
silence added so that the encoder's look-ahead does not cut the end. Each call encodes
with a fresh encoder: a prompt is a stream of its own, so its first frame starts from
the codec's initial state.

`Resampler` is stateful too: the filter's history runs across calls, so a leg resampled
batch by batch is the same signal as one resampled in one go. It delays its output by a
whole number of output samples, `delay`; the recorder places a leg's audio that many
samples earlier, so a resampled leg stays aligned with one that is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import numpy.typing as npt

from media import g711
from media.rtp import MediaError

if TYPE_CHECKING:
    from av import AudioCodecContext, AudioFrame

__all__ = [
    "DECODABLE",
    "ENCODABLE",
    "NARROWBAND_RATE",
    "RTP_CLOCK_RATES",
    "WIDEBAND",
    "WIDEBAND_RATE",
    "CodecError",
    "LegDecoder",
    "Resampler",
    "decoded_rate",
    "encode_payloads",
    "frame_timestamp_step",
    "recording_rate",
]

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]

NARROWBAND_RATE: Final = 8000
WIDEBAND_RATE: Final = 16000

# Timestamp clock of each codec's RTP stream (what one RTP timestamp unit is).
RTP_CLOCK_RATES: Final[dict[str, int]] = {
    "PCMU": 8000,
    "PCMA": 8000,
    "G722": 8000,
    "OPUS": 48000,
}
# The rate each decoder gives its PCM at.
_DECODED_RATES: Final[dict[str, int]] = {
    "PCMU": 8000,
    "PCMA": 8000,
    "G722": 16000,
    "OPUS": 48000,
}
DECODABLE: Final = frozenset(RTP_CLOCK_RATES)
ENCODABLE: Final = DECODABLE
WIDEBAND: Final = frozenset({"G722", "OPUS"})
FRAMES_PER_SECOND: Final = 50  # what callrec sends is in 20 ms packets
OPUS_BIT_RATE: Final = 32000  # wideband speech is transparent well below this

# Resampling filter: a Kaiser-windowed sinc. The pass band ends at 90% of the lower
# Nyquist frequency (3.6 kHz of 4 kHz: beyond the telephone band's 3.4 kHz) and
# the stop band starts at it; beta 8.6 gives about 86 dB of stop-band attenuation.
_PASS_FRACTION: Final = 0.9
_KAISER_BETA: Final = 8.6
_ATTENUATION_DB: Final = 86.0


class CodecError(MediaError):
    """A codec or a rate change callrec cannot do (not a bad packet: those are counted)."""


def recording_rate(codecs: Iterable[str]) -> int:
    """The file's sample rate for a call whose legs may use `codecs` (encoding names):
    16 kHz when any of them is wideband, else 8 kHz."""
    return WIDEBAND_RATE if any(c.upper() in WIDEBAND for c in codecs) else NARROWBAND_RATE


def decoded_rate(codec: str) -> int:
    """The rate `codec`'s decoder gives PCM at (KeyError for an undecodable codec)."""
    return _DECODED_RATES[codec.upper()]


def _kaiser_sinc(taps: int, cutoff: float, gain: float) -> FloatArray:
    """A linear-phase low-pass of `taps` (odd) taps, cutoff in cycles per sample."""
    n = np.arange(taps) - (taps - 1) / 2
    response: FloatArray = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, _KAISER_BETA)
    scaled: FloatArray = response * (gain / response.sum())
    return scaled


class Resampler:
    """Streaming conversion of one signal between rates whose ratio is a whole number
    (8k <-> 16k, 48k -> 16k or 8k), with a polyphase windowed-sinc filter.

    `process(x)` returns `len(x) * target / source` samples (exactly, when `len(x)` is a
    multiple of the decimation factor; otherwise the phase carries over). The output lags
    the input by `delay` output samples (the filter's group delay, a whole number).
    """

    def __init__(self, source_rate: int, target_rate: int) -> None:
        if source_rate <= 0 or target_rate <= 0:
            raise CodecError(f"sample rates must be positive, not {source_rate}, {target_rate}")
        if source_rate % target_rate and target_rate % source_rate:
            raise CodecError(f"cannot resample {source_rate} Hz to {target_rate} Hz")
        self.source_rate = source_rate
        self.target_rate = target_rate
        self.up = max(1, target_rate // source_rate)
        self.down = max(1, source_rate // target_rate)
        filter_rate = source_rate * self.up  # the rate the filter runs at
        nyquist = min(source_rate, target_rate) / 2
        transition = nyquist * (1 - _PASS_FRACTION) / filter_rate  # cycles per sample
        taps = int(np.ceil((_ATTENUATION_DB - 8) / (2.285 * 2 * np.pi * transition))) + 1
        # Odd length with a group delay that is whole in output samples.
        step = 2 * self.up * self.down
        taps = step * -(-(taps - 1) // step) + 1
        cutoff = nyquist * (1 + _PASS_FRACTION) / 2 / filter_rate
        kernel = _kaiser_sinc(taps, cutoff, float(self.up))
        self.delay = (taps - 1) // 2 // self.down
        if self.up > 1:
            # Polyphase: output sample up*n + p is sum_k kernel[up*k + p] * x[n - k].
            per_phase = taps // self.up + 1
            padded = np.zeros(per_phase * self.up)
            padded[:taps] = kernel
            # Column p holds phase p's taps reversed, to dot with a window of inputs.
            self._phases: FloatArray = padded.reshape(per_phase, self.up)[::-1].copy()
            self._history = np.zeros(per_phase - 1)
        else:
            self._kernel: FloatArray = kernel[::-1].copy()
            self._history = np.zeros(taps - 1)
        self._phase = 0  # decimation: inputs to skip before the next output

    def process(self, samples: npt.ArrayLike) -> Int16Array:
        """The next stretch of output for the next stretch of input (int16 in and out)."""
        x = np.asarray(samples, dtype=np.float64)
        if x.size == 0:
            return np.zeros(0, dtype=np.int16)
        extended = np.concatenate([self._history, x])
        if self.up > 1:
            windows = np.lib.stride_tricks.sliding_window_view(extended, self._phases.shape[0])
            out = (windows @ self._phases).ravel()
        else:
            windows = np.lib.stride_tricks.sliding_window_view(extended, self._kernel.size)
            out = windows[self._phase :: self.down] @ self._kernel
            self._phase = (self._phase - x.size) % self.down
        self._history = extended[extended.size - self._history.size :]
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)


class _Decoder(Protocol):
    def decode(self, payloads: Sequence[bytes]) -> tuple[Int16Array, list[int]]: ...


class _G711Decoder:
    def __init__(self, codec: str) -> None:
        self.table = g711.decode_table(codec)

    def decode(self, payloads: Sequence[bytes]) -> tuple[Int16Array, list[int]]:
        joined = b"".join(payloads)
        pcm: Int16Array = self.table[np.frombuffer(joined, dtype=np.uint8)]
        return pcm, [len(p) for p in payloads]


def _split(pcm: Int16Array, sizes: list[int]) -> list[Int16Array]:
    bounds = np.cumsum(sizes)[:-1]
    return list(np.split(pcm, bounds))


class _AvDecoder:
    """One ffmpeg decoder (PyAV), kept open across packets: its state is the stream's."""

    def __init__(self, name: str) -> None:
        try:
            import av  # ffmpeg loads only when a call needs it
        except ImportError as exc:  # pragma: no cover - av is a dependency
            raise CodecError(f"PyAV (the av package) is needed to decode {name}: {exc}") from exc
        self._av = av
        self._context: av.AudioCodecContext = av.CodecContext.create(name, "r")  # type: ignore[assignment]
        self._context.layout = "mono"
        self._context.sample_rate = 16000 if name == "g722" else 48000
        self._context.open()

    def _decode_one(self, payload: bytes) -> Int16Array:
        av = self._av
        pieces: list[Int16Array] = []
        for frame in self._context.decode(av.Packet(payload)):
            raw: npt.NDArray[np.generic] = np.asarray(frame.to_ndarray())
            if raw.dtype != np.int16:  # planar float from ffmpeg's native decoders
                scaled = np.asarray(raw, dtype=np.float64) * 32768.0
                raw = np.clip(np.round(scaled), -32768, 32767)
            pcm: Int16Array = raw.astype(np.int16, copy=False)
            pieces.append(pcm.reshape(-1) if pcm.shape[0] == 1 else pcm[0])
        if not pieces:
            return np.zeros(0, dtype=np.int16)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


class _G722Decoder(_AvDecoder):
    """G.722: each payload octet is two 16 kHz samples, and a batch of consecutive
    payloads is one stream, so the whole batch is one ffmpeg call."""

    def __init__(self) -> None:
        super().__init__("g722")

    def decode(self, payloads: Sequence[bytes]) -> tuple[Int16Array, list[int]]:
        sizes = [2 * len(p) for p in payloads]
        total = sum(sizes)
        try:
            pcm = self._decode_one(b"".join(payloads))
        except self._av.FFmpegError:
            return np.zeros(total, dtype=np.int16), sizes
        if pcm.size != total:  # never seen; keep the lengths the timeline expects
            pcm = np.resize(pcm, total) if pcm.size else np.zeros(total, np.int16)
        return pcm, sizes


class _OpusDecoder(_AvDecoder):
    """Opus (libopus): one frame per packet, decoded to mono at 48 kHz. A packet
    libopus refuses is lost audio (empty PCM), counted by the caller."""

    def __init__(self) -> None:
        super().__init__("libopus")

    def decode(self, payloads: Sequence[bytes]) -> tuple[Int16Array, list[int]]:
        decoded: list[Int16Array] = []
        for payload in payloads:
            try:
                decoded.append(self._decode_one(payload))
            except self._av.FFmpegError:
                decoded.append(np.zeros(0, dtype=np.int16))
        sizes = [p.size for p in decoded]
        return np.concatenate(decoded) if decoded else np.zeros(0, np.int16), sizes


def _decoder(codec: str) -> _Decoder:
    if codec in ("PCMU", "PCMA"):
        return _G711Decoder(codec)
    if codec == "G722":
        return _G722Decoder()
    if codec == "OPUS":
        return _OpusDecoder()
    raise CodecError(f"no decoder for {codec}")


class LegDecoder:
    """One leg's decoders and resamplers, giving PCM at `rate` (the file's rate)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._decoders: dict[str, _Decoder] = {}
        self._resamplers: dict[str, Resampler] = {}

    def delay(self, codec: str) -> int:
        """Samples (at `rate`) by which this codec's decoded audio comes out late."""
        resampler = self._resamplers.get(codec.upper())
        return resampler.delay if resampler is not None else 0

    def decode(self, codec: str, payloads: Sequence[bytes]) -> list[Int16Array]:
        """Decode a batch of one codec's payloads, in stream order, to PCM at `rate`.

        One array per payload; an empty one for a payload that could not be decoded.
        Raises CodecError for a codec not in `DECODABLE`."""
        pcm, sizes = self.decode_joined(codec, payloads)
        return _split(pcm, sizes)

    def decode_joined(self, codec: str, payloads: Sequence[bytes]) -> tuple[Int16Array, list[int]]:
        """`decode`, with the payloads' PCM in one array: `(pcm, sizes)`, payload i's
        samples being the `sizes[i]` after the previous payload's (0: not decodable).
        What the recorder uses: a tick's packets cost one array, not one each."""
        name = codec.upper()
        decoder = self._decoders.get(name)
        if decoder is None:
            decoder = self._decoders[name] = _decoder(name)
        pcm, sizes = decoder.decode(payloads)
        source = _DECODED_RATES[name]
        if source == self.rate:
            return pcm, sizes
        resampler = self._resamplers.get(name)
        if resampler is None:
            resampler = self._resamplers[name] = Resampler(source, self.rate)
        joined = resampler.process(pcm) if pcm.size else pcm
        ratio_up, ratio_down = resampler.up, resampler.down
        out_sizes = [size * ratio_up // ratio_down for size in sizes]
        if out_sizes and joined.size != sum(out_sizes):
            # A decimation phase carried over: give the difference to the last packet.
            out_sizes[-1] += joined.size - sum(out_sizes)
        return joined, out_sizes


# -- encoding (what callrec sends: prompts, beeps, in-band keys) ---------------------


def frame_timestamp_step(codec: str) -> int:
    """RTP timestamp units of one 20 ms packet of `codec` (160 for G.711 and G.722,
    960 for Opus); KeyError for a codec not in `ENCODABLE`."""
    return RTP_CLOCK_RATES[codec.upper()] // FRAMES_PER_SECOND


def _whole_resample(samples: Int16Array, source_rate: int, target_rate: int) -> Int16Array:
    """A whole (not streamed) signal at another rate, aligned: the filter's delay is
    flushed with zeros and cut off the front."""
    resampler = Resampler(source_rate, target_rate)
    flush = -(-resampler.delay * source_rate // target_rate) + resampler.down
    out = resampler.process(np.concatenate([samples, np.zeros(flush, dtype=np.int16)]))
    length = samples.size * target_rate // source_rate
    return out[resampler.delay : resampler.delay + length]


def _av_encoder(name: str, rate: int) -> AudioCodecContext:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a dependency
        raise CodecError(f"PyAV (the av package) is needed to encode {name}: {exc}") from exc
    context: AudioCodecContext = av.CodecContext.create(name, "w")  # type: ignore[assignment]
    context.sample_rate = rate
    context.layout = "mono"
    context.format = "s16"
    if name == "libopus":
        context.bit_rate = OPUS_BIT_RATE
        context.options = {"application": "voip", "frame_duration": "20"}
    context.open()
    return context


def _av_frame(pcm: Int16Array, rate: int, pts: int) -> AudioFrame:
    from av import AudioFrame

    frame = AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    frame.pts = pts
    return frame


def encode_payloads(
    codec: str, pcm: npt.ArrayLike, sample_rate: int = NARROWBAND_RATE
) -> list[bytes]:
    """`pcm` (mono int16 at `sample_rate`) as RTP payloads of `codec`, one per 20 ms.

    The audio is resampled to the codec's own rate first (8 kHz for G.711, 16 kHz for
    G.722, 48 kHz for Opus) and padded with silence to whole frames. Raises `CodecError`
    for a codec not in `ENCODABLE` or a rate that cannot be converted.
    """
    name = codec.upper()
    if name not in ENCODABLE:
        raise CodecError(f"cannot encode {codec!r}; only {', '.join(sorted(ENCODABLE))}")
    samples = np.clip(np.asarray(pcm).reshape(-1), -32768, 32767).astype(np.int16)
    rate = _DECODED_RATES[name]
    if sample_rate != rate:
        samples = _whole_resample(samples, sample_rate, rate)
    frame = rate // FRAMES_PER_SECOND
    count = max(1, -(-samples.size // frame))
    padded = np.zeros(count * frame, dtype=np.int16)
    padded[: samples.size] = samples
    if name in ("PCMU", "PCMA"):
        encoded = g711.encode(name, padded).tobytes()
        return [encoded[i * frame : (i + 1) * frame] for i in range(count)]
    if name == "G722":
        context = _av_encoder("g722", rate)
        stream = b"".join(
            bytes(packet)
            for packet in [*context.encode(_av_frame(padded, rate, 0)), *context.encode(None)]
        )
        size = frame // 2  # 64 kbit/s: one octet per two 16 kHz samples
        stream = stream.ljust(count * size, b"\x00")
        return [stream[i * size : (i + 1) * size] for i in range(count)]
    # Opus: one more frame of silence carries what the look-ahead holds back.
    padded = np.concatenate([padded, np.zeros(frame, dtype=np.int16)])
    context = _av_encoder("libopus", rate)
    payloads: list[bytes] = []
    for start in range(0, padded.size, frame):
        payloads += [
            bytes(p) for p in context.encode(_av_frame(padded[start : start + frame], rate, start))
        ]
    payloads += [bytes(p) for p in context.encode(None)]
    return payloads
