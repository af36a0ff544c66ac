from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile

from media.rtp import MediaError
from media.writer import RecordingFormat, RecordingWriter, WriteFailed, repair
from tests.media.stream_builder import RATE, noise

REPO = Path(__file__).resolve().parents[2]


def stereo(seconds: float) -> np.ndarray:
    return np.column_stack([noise(seconds, seed=1), noise(seconds, seed=2)])


@pytest.mark.parametrize("fmt", ["wav", "flac"])
@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip_summary_and_read_only(
    tmp_path: Path, fmt: RecordingFormat, channels: int
) -> None:
    audio = noise(3.0, seed=3) if channels == 1 else stereo(3.0)
    path = tmp_path / "2024" / "05" / f"call.{fmt}"
    writer = RecordingWriter(path, channels, fmt)
    for start in range(0, len(audio), 1600):
        writer.write(audio[start : start + 1600])
    summary = writer.close()
    assert writer.close() is summary

    data, rate = soundfile.read(path, dtype="int16")
    assert rate == RATE and np.array_equal(data, audio)
    assert summary.frames == len(audio) and summary.duration_s == pytest.approx(3.0)
    assert summary.channels == channels and summary.sample_rate == RATE
    assert summary.format == fmt and summary.path == path
    assert summary.bytes == path.stat().st_size
    assert summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    with pytest.raises(MediaError):
        writer.write(audio[:10])
    if fmt == "flac":
        assert summary.bytes < len(audio) * channels * 2 * 0.95


def test_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    path.write_bytes(b"precious")
    with pytest.raises(MediaError):
        RecordingWriter(path, 1)
    assert path.read_bytes() == b"precious"


def test_wrong_frame_shape_is_refused(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "call.wav", 2)
    with pytest.raises(MediaError):
        writer.write(noise(0.1, seed=1))
    writer.close()


def snapshot_after(
    tmp_path: Path, fmt: RecordingFormat, channels: int, seconds: float
) -> tuple[Path, np.ndarray]:
    """Write `seconds` in 250 ms ticks, copy the file as a kill -9 would leave it."""
    audio = noise(seconds, seed=4) if channels == 1 else stereo(seconds)
    path = tmp_path / f"live.{fmt}"
    writer = RecordingWriter(path, channels, fmt)
    for start in range(0, len(audio), RATE // 4):
        writer.write(audio[start : start + RATE // 4])
    crashed = tmp_path / f"crashed.{fmt}"
    shutil.copyfile(path, crashed)
    writer.close()
    return crashed, audio


@pytest.mark.parametrize("fmt", ["wav", "flac"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("seconds", [0.25, 3.5, 7.75])
def test_unfinished_file_is_repaired_losing_under_a_second(
    tmp_path: Path, fmt: RecordingFormat, channels: int, seconds: float
) -> None:
    crashed, audio = snapshot_after(tmp_path, fmt, channels, seconds)
    result = repair(crashed)
    assert result.error is None and result.summary is not None
    assert result.action == ("header_fixed" if fmt == "wav" else "rewritten")
    data, _ = soundfile.read(crashed, dtype="int16")
    assert len(data) >= len(audio) - RATE
    assert np.array_equal(data, audio[: len(data)])
    assert result.summary.frames == len(data)
    assert result.summary.sha256 == hashlib.sha256(crashed.read_bytes()).hexdigest()
    assert stat.S_IMODE(crashed.stat().st_mode) == 0o444
    again = repair(crashed)
    assert again.action == "intact" and again.summary == result.summary


def test_unpatched_wav_header_reads_as_empty_before_repair(tmp_path: Path) -> None:
    """The failure repair exists for: other readers see no audio in a crashed WAV."""
    crashed, _ = snapshot_after(tmp_path, "wav", 1, 2.0)
    raw = crashed.read_bytes()
    assert int.from_bytes(raw[40:44], "little") != len(raw) - 44
    repair(crashed)
    raw = crashed.read_bytes()
    assert int.from_bytes(raw[40:44], "little") == len(raw) - 44 == 2 * RATE * 2
    assert int.from_bytes(raw[4:8], "little") == len(raw) - 8


def test_wav_cut_mid_frame_is_trimmed_to_whole_frames(tmp_path: Path) -> None:
    crashed, audio = snapshot_after(tmp_path, "wav", 2, 1.0)
    with crashed.open("ab") as file:
        file.write(b"\x01\x02\x03")  # half a stereo frame
    repair(crashed)
    data, _ = soundfile.read(crashed, dtype="int16")
    assert np.array_equal(data, audio)


def test_closed_files_are_intact(tmp_path: Path) -> None:
    for fmt in ("wav", "flac"):
        writer = RecordingWriter(tmp_path / f"ok.{fmt}", 1, fmt)
        writer.write(noise(1.0, seed=5))
        summary = writer.close()
        result = repair(summary.path)
        assert result.action == "intact" and result.summary == summary


def test_garbage_is_reported_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "junk.wav"
    path.write_bytes(b"not audio at all")
    result = repair(path)
    assert result.action == "unreadable" and result.summary is None and result.error


# The child writes a block, reports the total and waits for the parent's go-ahead, so the
# parent knows how much was written when it kills the child (no timing involved).
_WRITER_CHILD = """
import sys
import numpy as np
from media.writer import RecordingWriter
path, fmt = sys.argv[1], sys.argv[2]
writer = RecordingWriter(path, 1, fmt)
rng = np.random.default_rng(7)
written = 0
while True:
    writer.write((rng.normal(0, 4000, 2000)).astype(np.int16))
    written += 2000
    print(written, flush=True)
    sys.stdin.readline()
"""


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_kill_minus_nine_then_repair(tmp_path: Path, fmt: RecordingFormat) -> None:
    path = tmp_path / f"killed.{fmt}"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WRITER_CHILD), str(path), fmt],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    written = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        written = int(child.stdout.readline())
        if written >= 3 * RATE:
            break  # killed while it waits, with `written` samples handed to the writer
        child.stdin.write("\n")
        child.stdin.flush()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    child.stdin.close()
    child.stdout.close()
    assert written >= 3 * RATE
    result = repair(path)
    assert result.summary is not None, result.error
    expected = np.random.default_rng(7).normal(0, 4000, written).astype(np.int16)
    data, _ = soundfile.read(path, dtype="int16")
    # The OS keeps what was written, short of a FLAC block still being encoded (bounded
    # loosely here at a second); nothing beyond what was reported was written.
    assert written - RATE <= len(data) <= written
    assert np.array_equal(data[: min(len(data), written)], expected[: min(len(data), written)])


_DISK_FULL_CHILD = """
import resource, signal, sys
import numpy as np
from media.rtp import MediaError
from media.writer import RecordingWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
writer = RecordingWriter(sys.argv[1], 1, sys.argv[2])
try:
    rng = np.random.default_rng(1)
    for _ in range(100):
        writer.write(rng.normal(0, 4000, 8000).astype(np.int16))
except MediaError as exc:
    print("MediaError", exc)
"""


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_disk_full_raises_media_error(tmp_path: Path, fmt: RecordingFormat) -> None:
    output = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_DISK_FULL_CHILD), str(tmp_path / f"f.{fmt}"), fmt],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert output.stdout.startswith("MediaError"), output.stdout + output.stderr


def test_a_sync_is_claimed_once_per_second_of_audio(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "a.wav", channels=1)
    writer.write(noise(0.5, seed=1))
    assert not writer.claim_sync()
    writer.write(noise(0.51, seed=2))
    assert writer.claim_sync()
    assert not writer.claim_sync()  # claimed: the next one needs another second
    writer.write(noise(1.0, seed=3))
    writer.close()
    assert not writer.claim_sync()  # close() synced the finished file itself


def test_sync_runs_in_another_thread_while_writing_and_is_a_no_op_after_close(
    tmp_path: Path,
) -> None:
    writer = RecordingWriter(tmp_path / "a.wav", channels=1)
    blocks = [noise(0.1, seed=i) for i in range(30)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = []
        for block in blocks:
            writer.write(block)
            if writer.claim_sync():
                pending.append(pool.submit(writer.sync))
        for future in pending:
            future.result()
        assert len(pending) == 3
        summary = writer.close()
        pool.submit(writer.sync).result()
    audio, _ = soundfile.read(tmp_path / "a.wav", dtype="int16")
    assert np.array_equal(audio, np.concatenate(blocks))
    assert summary.frames == len(audio)


def test_a_failed_sync_fails_the_next_write(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "a.wav", channels=1)
    writer.write(noise(1.0, seed=1))
    # fsync of a pipe fails (EINVAL), as an I/O error on the disk would.
    read_end, write_end = os.pipe()
    real_fd, writer._sync_fd = writer._sync_fd, read_end
    try:
        writer.sync()
        with pytest.raises(MediaError, match="cannot sync recording"):
            writer.write(noise(1.0, seed=1))
    finally:
        writer._sync_fd = real_fd
        os.close(read_end)
        os.close(write_end)
    writer.close()
    assert soundfile.info(str(tmp_path / "a.wav")).frames == RATE


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root only): a real ENOSPC, not a file-size limit."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_a_full_disk_keeps_what_was_written_as_partial(
    tiny_disk: Path, fmt: RecordingFormat
) -> None:
    path = tiny_disk / f"a.{fmt}"
    writer = RecordingWriter(path, channels=1, format=fmt)
    blocks: list[np.ndarray] = []
    with pytest.raises(WriteFailed) as failed:
        for index in range(200):  # 200 s: far more than 256 KiB
            block = noise(1.0, seed=index)
            blocks.append(block)
            writer.write(block)
    assert failed.value.errno == errno.ENOSPC
    assert "disk full (ENOSPC)" in str(failed.value)
    with pytest.raises(WriteFailed):  # it stays failed
        writer.write(noise(0.1, seed=1))
    summary = writer.close()
    assert summary.partial is not None and "disk full (ENOSPC)" in summary.partial
    audio, _ = soundfile.read(path, dtype="int16")
    written = np.concatenate(blocks)
    # Everything the file holds is what was sent, from the start, and it holds most of it.
    assert summary.frames == len(audio) > 0
    assert len(audio) >= len(written) - 2 * RATE - 8000, (len(audio), len(written))
    assert np.array_equal(audio, written[: len(audio)])
    assert summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0
