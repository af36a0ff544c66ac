"""`RecordingWriter` writes through libsndfile directly (`media.writer._write_frames`);
where soundfile does not expose libsndfile it falls back to `SoundFile.write`. Both give
the same file, mono and stereo, WAV and FLAC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from media import writer as writer_module
from media.writer import RecordingFormat, RecordingWriter


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_direct_and_fallback_writes_give_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channels: int, fmt: RecordingFormat
) -> None:
    rng = np.random.default_rng(3)
    blocks = [
        rng.normal(0, 5000, (size, channels) if channels == 2 else size).astype(np.int16)
        for size in (1, 1600, 2000, 7, 4000)
    ]
    assert writer_module._LIBSNDFILE is not None  # the direct path is the one in use here
    paths = []
    for name in ("direct", "fallback"):
        if name == "fallback":
            monkeypatch.setattr(writer_module, "_LIBSNDFILE", None)
        path = tmp_path / f"{name}.{fmt}"
        writer = RecordingWriter(path, channels, fmt)
        for block in blocks:
            writer.write(block)
        summary = writer.close()
        assert summary.frames == sum(len(b) for b in blocks)
        paths.append(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    audio, _ = soundfile.read(paths[0], dtype="int16")
    assert np.array_equal(audio, np.concatenate(blocks))


def test_a_non_contiguous_block_is_written_as_its_values(tmp_path: Path) -> None:
    stereo = np.arange(4000, dtype=np.int16).reshape(-1, 2)
    writer = RecordingWriter(tmp_path / "a.wav", 1, "wav")
    writer.write(stereo[:, 1])  # a strided view
    writer.close()
    audio, _ = soundfile.read(tmp_path / "a.wav", dtype="int16")
    assert np.array_equal(audio, stereo[:, 1])
