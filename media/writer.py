"""Recording files: streaming WAV/FLAC writer with crash repair, via soundfile.

Durability: libsndfile writes WAV sample data straight through to the file and FLAC data
one encoded block at a time, so audio reaches the OS as soon as it is written (WAV) or
within one FLAC block (1152 samples, see `_FLAC_COMPRESSION_LEVEL`). Against power loss
the data must also be fsynced; that can stall for long on a busy disk, so the writer does
not do it in `write()`: once `flush_interval_s` of audio is written, `claim_sync()` says
so and its owner runs `sync()` in a worker thread (`close()` syncs the finished file).
What a kill -9 leaves is an unfinished file: a WAV whose RIFF and data sizes were never
patched, or a FLAC whose STREAMINFO does not know its length. `repair` makes either
readable again. A closed or repaired file is made read-only.

A write that fails (disk full, a file-size limit, an I/O error) stops the file where it
is: `close()` then seals what was written (the WAV header is set from the file length,
a FLAC is cut at its last whole frame where the disk allows) and returns a summary whose
`partial` says why it stops early. The error names the cause, "disk full (ENOSPC)" for a
full disk, since libsndfile itself only says "System error".
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import soundfile

from media.rtp import MediaError

__all__ = [
    "RecordingFormat",
    "RecordingSummary",
    "RecordingWriter",
    "RepairResult",
    "WriteFailed",
    "file_sha256",
    "repair",
]

RecordingFormat = Literal["wav", "flac"]
RepairAction = Literal["intact", "header_fixed", "rewritten", "unreadable"]

READ_ONLY = 0o444
# libsndfile maps levels <= 0.3 to FLAC levels 0-2, whose block size is 1152 samples
# (0.144 s at 8 kHz) instead of 4096 (0.512 s): a kill -9 then loses at most one short
# block, for about 2.5% more bytes on speech.
_FLAC_COMPRESSION_LEVEL = 0.25
_SOUNDFILE_FORMATS: dict[str, str] = {"wav": "WAV", "flac": "FLAC"}
# libsndfile's frame count for a FLAC whose STREAMINFO total was never written.
_UNKNOWN_FRAMES = 1 << 62
# libsndfile's error code for a failed system call (its errno is in cffi's copy).
_SFE_SYSTEM = 2
_RIFF_HEADER = struct.Struct("<4sI4s")
_CHUNK_HEADER = struct.Struct("<4sI")


class WriteFailed(MediaError):
    """Writing a recording failed; `errno` is the OS error behind it when known
    (errno.ENOSPC: the disk is full), and the message names it."""

    def __init__(self, message: str, error_number: int | None) -> None:
        super().__init__(message)
        self.errno = error_number


def _cause(exc: BaseException, fd: int | None) -> tuple[int | None, str]:
    """The errno behind a failed write and how to say it. libsndfile reports any OS
    failure as "System error"; its errno is still in cffi's copy, and a file system with
    no free block is a full disk whatever the errno."""
    number = exc.errno if isinstance(exc, OSError) else None
    if number is None and getattr(exc, "code", None) == _SFE_SYSTEM:
        number = getattr(getattr(soundfile, "_ffi", None), "errno", 0) or None
    if number is None and fd is not None:
        with contextlib.suppress(OSError):
            if os.fstatvfs(fd).f_bfree == 0:
                number = errno.ENOSPC
    if number == errno.ENOSPC:
        return number, "disk full (ENOSPC)"
    if number == errno.EDQUOT:
        return number, "disk quota exceeded (EDQUOT)"
    if number == errno.EFBIG:
        return number, "file size limit reached (EFBIG)"
    if number is not None:
        return number, f"{os.strerror(number)} ({errno.errorcode.get(number, number)})"
    return None, str(exc) or type(exc).__name__


# libsndfile's own entry points, through soundfile's cffi handle: `SoundFile.write` seeks
# five times around each write to keep its `frames` attribute current, which cost more
# than the write itself at a recorder's 4 writes a second per call (bench/RESULTS.md,
# "Per-packet cost"). The writer counts its frames itself.
_LIBSNDFILE = getattr(soundfile, "_snd", None)
_FFI = getattr(soundfile, "_ffi", None)


def _write_frames(file: soundfile.SoundFile, frames: npt.NDArray[np.int16]) -> None:
    """Append int16 frames to `file` with one libsndfile call (or `SoundFile.write` where
    soundfile does not expose libsndfile); raises as `SoundFile.write` does."""
    data = np.ascontiguousarray(frames, dtype=np.int16)
    handle = getattr(file, "_file", None)
    if _LIBSNDFILE is None or _FFI is None or handle is None:
        file.write(data)
        return
    written = _LIBSNDFILE.sf_writef_short(handle, _FFI.from_buffer("short[]", data), len(data))
    code = _LIBSNDFILE.sf_error(handle)
    if code:
        raise soundfile.LibsndfileError(code)
    if written != len(data):
        raise RuntimeError(f"libsndfile wrote {written} of {len(data)} frames")


@dataclass(frozen=True)
class RecordingSummary:
    """What the store records about a finished file; `partial` says why the file stops
    before the recording did (None: it holds everything)."""

    path: Path
    frames: int
    duration_s: float
    sha256: str
    bytes: int
    channels: int
    sample_rate: int
    format: str
    partial: str | None = None


@dataclass(frozen=True)
class RepairResult:
    """Outcome of `repair`: `summary` is None only when the file stays unreadable."""

    path: Path
    action: RepairAction
    summary: RecordingSummary | None
    error: str | None = None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _summarise(
    path: Path, frames: int, channels: int, sample_rate: int, fmt: str
) -> RecordingSummary:
    return RecordingSummary(
        path=path,
        frames=frames,
        duration_s=frames / sample_rate,
        sha256=file_sha256(path),
        bytes=path.stat().st_size,
        channels=channels,
        sample_rate=sample_rate,
        format=fmt,
    )


class RecordingWriter:
    """Streams 16-bit PCM frames to a new WAV or FLAC file; `close` seals it read-only.

    Errors (disk full, I/O errors) are raised as `MediaError`. The file must not exist:
    a recording is never overwritten.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        channels: int,
        format: RecordingFormat = "wav",
        samplerate: int = 8000,
        *,
        flush_interval_s: float = 1.0,
    ) -> None:
        if format not in _SOUNDFILE_FORMATS:
            raise MediaError(f"recording format {format!r} is not one of wav, flac")
        if channels not in (1, 2):
            raise MediaError(f"recording channels must be 1 or 2, not {channels}")
        self.path = Path(path)
        self.channels = channels
        self.format: RecordingFormat = format
        self.sample_rate = samplerate
        self._flush_every = max(1, round(flush_interval_s * samplerate))
        self._frames = 0
        self._unflushed = 0
        self._summary: RecordingSummary | None = None
        extra = {"compression_level": _FLAC_COMPRESSION_LEVEL} if format == "flac" else {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = soundfile.SoundFile(
                self.path,
                mode="x",
                samplerate=samplerate,
                channels=channels,
                subtype="PCM_16",
                format=_SOUNDFILE_FORMATS[format],
                **extra,
            )
        except (OSError, RuntimeError) as exc:
            _, cause = _cause(exc, None)
            raise MediaError(f"cannot create recording {self.path}: {cause}") from exc
        self._failure: WriteFailed | None = None
        # A second descriptor of the same file for fsync from another thread (fsync
        # flushes the file, whichever descriptor wrote to it); the lock keeps close() and
        # sync() apart.
        self._sync_lock = threading.Lock()
        self._sync_error: str | None = None
        try:
            self._sync_fd: int | None = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            self._file.close()
            raise MediaError(f"cannot open recording {self.path} to sync: {exc}") from exc

    @property
    def frames_written(self) -> int:
        return self._frames

    @property
    def closed(self) -> bool:
        return self._summary is not None

    def write(self, frames: npt.NDArray[np.int16]) -> None:
        """Append int16 frames: shape (n,) or (n, 1) for mono, (n, 2) for stereo."""
        if self._summary is not None:
            raise MediaError(f"recording {self.path} is already closed")
        if len(frames) == 0:
            return
        expected_shape_ok = (frames.ndim == 1 and self.channels == 1) or (
            frames.ndim == 2 and frames.shape[1] == self.channels
        )
        if not expected_shape_ok:
            raise MediaError(f"frames of shape {frames.shape} for {self.channels} channel(s)")
        if self._failure is not None:
            raise self._failure
        if self._sync_error is not None:
            self._failure = WriteFailed(
                f"cannot sync recording {self.path}: {self._sync_error}", None
            )
            raise self._failure
        try:
            _write_frames(self._file, frames)
            self._frames += len(frames)
            self._unflushed += len(frames)
        except (OSError, RuntimeError) as exc:
            number, cause = _cause(exc, self._sync_fd)
            self._failure = WriteFailed(f"cannot write recording {self.path}: {cause}", number)
            raise self._failure from exc

    def claim_sync(self) -> bool:
        """True, once, when `flush_interval_s` of audio has been written since the last
        claim: the caller then runs `sync()` (in a worker thread)."""
        if self._summary is not None or self._unflushed < self._flush_every:
            return False
        self._unflushed = 0
        return True

    def sync(self) -> None:
        """fsync what has been written. Safe in another thread than `write()`; a no-op
        after `close()`. A failure is kept and raised by the next `write()`."""
        with self._sync_lock:
            if self._sync_fd is None:
                return
            try:
                os.fsync(self._sync_fd)
            except OSError as exc:
                self._sync_error = _cause(exc, None)[1]

    def close(self) -> RecordingSummary:
        """Finish and fsync the file, make it read-only and return its summary
        (idempotent)."""
        if self._summary is not None:
            return self._summary
        if self._failure is not None:
            return self._close_partial(self._failure)
        try:
            with self._sync_lock:
                sync_fd, self._sync_fd = self._sync_fd, None
                try:
                    self._file.close()
                    if sync_fd is not None:
                        os.fsync(sync_fd)
                finally:
                    if sync_fd is not None:
                        os.close(sync_fd)
            os.chmod(self.path, READ_ONLY)
            self._summary = _summarise(
                self.path, self._frames, self.channels, self.sample_rate, self.format
            )
        except (OSError, RuntimeError) as exc:
            raise MediaError(f"cannot close recording {self.path}: {_cause(exc, None)[1]}") from exc
        return self._summary

    def _close_partial(self, failure: WriteFailed) -> RecordingSummary:
        """Seal what a failed write left: the file as far as it is whole, read-only,
        with `partial` naming the failure. MediaError if nothing readable is left."""
        with self._sync_lock:
            sync_fd, self._sync_fd = self._sync_fd, None
            # libsndfile patches the header in place (no new blocks on a full disk); a
            # failure here is repaired below from the file itself.
            with contextlib.suppress(OSError, RuntimeError):
                self._file.close()
            if sync_fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(sync_fd)
                os.close(sync_fd)
        result = repair(self.path)
        summary = result.summary
        if summary is None:
            summary = _readable_as_is(self.path, self.format)
        if summary is None:
            raise MediaError(f"{failure}; nothing readable was left ({result.error})")
        self._summary = RecordingSummary(
            path=summary.path,
            frames=summary.frames,
            duration_s=summary.duration_s,
            sha256=summary.sha256,
            bytes=summary.bytes,
            channels=summary.channels,
            sample_rate=summary.sample_rate,
            format=summary.format,
            partial=str(failure),
        )
        return self._summary


def _readable_as_is(path: Path, fmt: str) -> RecordingSummary | None:
    """A FLAC that could not be rewritten (no room for the copy) keeps its frames: the
    ones that decode are counted and that count is set in STREAMINFO in place, so readers
    stop before the cut frame."""
    try:
        with soundfile.SoundFile(str(path)) as source:
            channels, sample_rate = source.channels, source.samplerate
            frames = 0
            # Small reads: the read that hits the cut raises and its block is not counted.
            read_size = max(1, sample_rate // 10)
            with contextlib.suppress(RuntimeError):
                while block := len(source.read(read_size, dtype="int16", always_2d=True)):
                    frames += block
        if frames == 0 or fmt != "flac":
            return None
        _make_writable(path)
        _set_flac_total_samples(path, frames)
        os.chmod(path, READ_ONLY)
        return _summarise(path, frames, channels, sample_rate, fmt)
    except (OSError, RuntimeError, MediaError):
        return None


# "fLaC", the 4-byte header of the STREAMINFO block, then its 36-bit total-samples
# field, which starts in the low nibble of STREAMINFO byte 13.
_STREAMINFO_TOTAL_AT = 4 + 4 + 13


def _set_flac_total_samples(path: Path, frames: int) -> None:
    with path.open("r+b") as file:
        head = file.read(_STREAMINFO_TOTAL_AT + 5)
        if len(head) < _STREAMINFO_TOTAL_AT + 5 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
            raise MediaError("FLAC without STREAMINFO first")
        high = head[_STREAMINFO_TOTAL_AT] & 0xF0 | (frames >> 32) & 0x0F
        file.seek(_STREAMINFO_TOTAL_AT)
        file.write(bytes([high]) + struct.pack(">I", frames & 0xFFFFFFFF))


def repair(path: str | os.PathLike[str]) -> RepairResult:
    """Make an unfinished recording (left by a crash) readable, then read-only.

    A WAV gets its RIFF and data sizes set from the file length (a trailing partial frame
    is cut). A FLAC is decoded up to the first undecodable frame and rewritten in place.
    A finished file is left as it is (`action="intact"`).
    """
    file_path = Path(path)
    try:
        with file_path.open("rb") as file:
            magic = file.read(4)
        if magic == b"RIFF":
            action = _repair_wav(file_path)
            fmt = "wav"
        elif magic == b"fLaC":
            action = _repair_flac(file_path)
            fmt = "flac"
        else:
            return RepairResult(file_path, "unreadable", None, "neither a WAV nor a FLAC file")
        info = soundfile.info(str(file_path))
        os.chmod(file_path, READ_ONLY)
        summary = _summarise(file_path, info.frames, info.channels, info.samplerate, fmt)
    except (OSError, RuntimeError, MediaError, struct.error) as exc:
        return RepairResult(file_path, "unreadable", None, str(exc))
    return RepairResult(file_path, action, summary)


def _repair_wav(path: Path) -> RepairAction:
    size = path.stat().st_size
    with path.open("rb") as file:
        header = file.read(65536)
    if len(header) < _RIFF_HEADER.size:
        raise MediaError("WAV header cut short")
    _, riff_size, wave = _RIFF_HEADER.unpack_from(header)
    if wave != b"WAVE":
        raise MediaError("RIFF file is not WAVE")
    offset = _RIFF_HEADER.size
    block_align = 0
    while offset + _CHUNK_HEADER.size <= len(header):
        chunk_id, chunk_size = _CHUNK_HEADER.unpack_from(header, offset)
        body = offset + _CHUNK_HEADER.size
        if chunk_id == b"fmt ":
            block_align = struct.unpack_from("<H", header, body + 12)[0]
        elif chunk_id == b"data":
            if block_align == 0:
                raise MediaError("WAV data chunk before its fmt chunk")
            if riff_size == size - 8 and body + chunk_size <= size:
                return "intact"
            data_size = (size - body) // block_align * block_align
            _make_writable(path)
            with path.open("r+b") as file:
                file.truncate(body + data_size)
                file.seek(4)
                file.write(struct.pack("<I", body + data_size - 8))
                file.seek(offset + 4)
                file.write(struct.pack("<I", data_size))
            return "header_fixed"
        offset = body + chunk_size + (chunk_size & 1)
    raise MediaError("WAV has no data chunk")


def _repair_flac(path: Path) -> RepairAction:
    with soundfile.SoundFile(str(path)) as source:
        if source.frames < _UNKNOWN_FRAMES:
            return "intact"
        channels, sample_rate = source.channels, source.samplerate
        blocks: list[npt.NDArray[np.int16]] = []
        # Small reads: the read that hits the cut raises and its block is lost.
        read_size = max(1, sample_rate // 10)
        try:
            while True:
                block = source.read(read_size, dtype="int16", always_2d=True)
                if len(block) == 0:
                    break
                blocks.append(block)
        except RuntimeError:
            pass
    audio = np.concatenate(blocks) if blocks else np.zeros((0, channels), dtype=np.int16)
    temporary = path.with_name(path.name + ".repair")
    temporary.unlink(missing_ok=True)
    try:
        with soundfile.SoundFile(
            str(temporary),
            mode="x",
            samplerate=sample_rate,
            channels=channels,
            subtype="PCM_16",
            format="FLAC",
            compression_level=_FLAC_COMPRESSION_LEVEL,
        ) as target:
            target.write(audio)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk must not keep half a copy
        raise
    os.replace(temporary, path)
    return "rewritten"


def _make_writable(path: Path) -> None:
    mode = path.stat().st_mode
    if not mode & 0o200:
        os.chmod(path, mode | 0o200)
