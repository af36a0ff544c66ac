"""An organisation's own legal notice, as an admin uploads it: the checks a WAV file must
pass and its conversion to what callrec plays (8 kHz mono 16-bit PCM).

Sans-IO: bytes in, bytes out. A notice is accepted when it is a RIFF/WAVE file of at
most `MAX_NOTICE_BYTES`, its audio is PCM (8 to 32 bits), A-law or µ-law (also inside
WAVE_FORMAT_EXTENSIBLE), it lasts at most `MAX_ANNOUNCEMENT_S` and it is not silent.
Anything else raises `NoticeRejected`, whose `reason` names the rule (the portal shows
its own sentence for each) and whose message says the same in English.

Conversion: the channels are averaged, then the audio is resampled to 8 kHz by
`media.announce.resample`, a band-limited (FFT) resampler: everything above the new
Nyquist frequency is dropped before the rate changes, so a 16 kHz or 44.1 kHz notice
does not alias. The FFT treats the signal as periodic, so it is padded with silence
first: the end does not ring into the start. The result is what `read_prompt` loads
without another resampling, so callers hear exactly the stored file.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile

from media.announce import MAX_ANNOUNCEMENT_S, SAMPLE_RATE, AnnouncementError, resample

__all__ = [
    "MAX_NOTICE_BYTES",
    "ConvertedNotice",
    "NoticeRejected",
    "convert_notice",
]

MAX_NOTICE_BYTES: Final = 5 * 1024 * 1024
# WAVE format tags (RFC 2361): what a notice may hold.
_PCM: Final = 0x0001
_ALAW: Final = 0x0006
_MULAW: Final = 0x0007
_EXTENSIBLE: Final = 0xFFFE
_ACCEPTED: Final = {_PCM: "PCM", _ALAW: "A-law", _MULAW: "µ-law"}
_KNOWN_REFUSED: Final = {
    0x0002: "ADPCM",
    0x0003: "floating-point",
    0x0011: "IMA ADPCM",
    0x0055: "MP3",
}
_CHUNK: Final = struct.Struct("<4sI")
_FMT: Final = struct.Struct("<HHIIHH")
_PAD_S: Final = 0.1  # silence around the audio while resampling (see the module doc)
_SILENT_PEAK: Final = 1e-4  # below -80 dBFS everywhere: nothing a caller would hear


class NoticeRejected(AnnouncementError):
    """An uploaded notice breaks a rule: `reason` names it ("too-large", "not-wav",
    "encoding", "unreadable", "empty", "too-long", "silent"); `values` fill the
    portal's sentence (e.g. "seconds")."""

    def __init__(self, reason: str, message: str, **values: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.values = values


@dataclass(frozen=True)
class ConvertedNotice:
    """The notice as callrec keeps it: a WAV file's bytes (8 kHz, mono, 16-bit PCM),
    its length and what was uploaded."""

    wav: bytes
    seconds: float
    source_rate: int
    source_channels: int
    source_encoding: str
    samples: npt.NDArray[np.int16] = field(repr=False, compare=False)


def _format_tag(data: bytes) -> tuple[int, int]:
    """The WAVE format tag and the bits per sample of the file's `fmt ` chunk; raises
    NoticeRejected for a file that is not RIFF/WAVE or has no `fmt ` and `data`."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise NoticeRejected("not-wav", "the file is not a WAV file (RIFF/WAVE)")
    offset = 12
    tag: int | None = None
    bits = 0
    has_data = False
    while offset + _CHUNK.size <= len(data):
        chunk_id, size = _CHUNK.unpack_from(data, offset)
        body = offset + _CHUNK.size
        if chunk_id == b"fmt " and size >= _FMT.size and body + size <= len(data):
            tag, _, _, _, _, bits = _FMT.unpack_from(data, body)
            if tag == _EXTENSIBLE and size >= 40:
                # The sub-format GUID starts with the real format tag.
                (tag,) = struct.unpack_from("<H", data, body + 24)
        elif chunk_id == b"data":
            has_data = True
            break
        offset = body + size + (size & 1)  # chunks are padded to an even length
    if tag is None or not has_data:
        raise NoticeRejected("unreadable", "the WAV file is damaged or incomplete")
    return tag, bits


def convert_notice(data: bytes) -> ConvertedNotice:
    """Check an uploaded notice and convert it to 8 kHz mono 16-bit PCM WAV; raises
    NoticeRejected saying which rule it breaks."""
    if len(data) > MAX_NOTICE_BYTES:
        megabytes = len(data) / (1024 * 1024)
        raise NoticeRejected(
            "too-large",
            f"the file has {megabytes:.1f} MB; at most {MAX_NOTICE_BYTES // (1024 * 1024)} MB"
            " is allowed",
            megabytes=round(megabytes, 1),
        )
    tag, bits = _format_tag(data)
    if tag not in _ACCEPTED:
        encoding = _KNOWN_REFUSED.get(tag, f"format {tag:#06x}")
        raise NoticeRejected(
            "encoding",
            f"the WAV holds {encoding} audio; save it as PCM, A-law or µ-law",
            encoding=encoding,
        )
    try:
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        raise NoticeRejected("unreadable", "the WAV file is damaged or incomplete") from exc
    frames, channels = audio.shape
    if frames == 0 or rate <= 0:
        raise NoticeRejected("empty", "the file holds no audio")
    seconds = frames / rate
    if seconds > MAX_ANNOUNCEMENT_S:
        raise NoticeRejected(
            "too-long",
            f"the notice lasts {seconds:.1f} s; at most {MAX_ANNOUNCEMENT_S:.0f} s is allowed",
            seconds=round(seconds, 1),
            limit=round(MAX_ANNOUNCEMENT_S),
        )
    mono = audio.mean(axis=1)
    if float(np.max(np.abs(mono))) < _SILENT_PEAK:
        raise NoticeRejected("silent", "the notice is silent")
    pad = round(_PAD_S * rate)
    padded = np.concatenate([np.zeros(pad), mono, np.zeros(pad)])
    converted = resample(padded, int(rate), SAMPLE_RATE)
    keep = round(pad * SAMPLE_RATE / rate)
    body = converted[keep : keep + max(1, round(frames * SAMPLE_RATE / rate))]
    pcm = np.clip(np.round(body * 32767.0), -32768, 32767).astype(np.int16)
    out = io.BytesIO()
    soundfile.write(out, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return ConvertedNotice(
        wav=out.getvalue(),
        seconds=pcm.size / SAMPLE_RATE,
        source_rate=int(rate),
        source_channels=int(channels),
        source_encoding=_ACCEPTED[tag] if tag != _PCM else f"{bits}-bit PCM",
        samples=pcm,
    )
