"""scripts/screenshots.py keeps working: run as people run it, into a temporary folder,
it writes every page in English and in Dutch, each a real PNG of the expected width and
of a size fit to commit; and the Dutch pages are Dutch."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

from tests.portal.chromium import requires_chromium

pytestmark = requires_chromium

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "screenshots.py"
MAX_PNG_BYTES = 400 * 1024


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_screenshots_script_writes_each_page_in_both_languages(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import screenshots
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {f"{shot.name}.png" for shot in screenshots.SHOTS}
    assert len(expected) >= 10
    for language in ("en", "nl"):
        written = {path.name for path in (tmp_path / language).glob("*.png")}
        assert written == expected, language
        for name in expected:
            path = tmp_path / language / name
            width, height = png_size(path)
            assert width == (390 if name.endswith("-phone.png") else 1280), name
            assert height >= 400, name
            assert path.stat().st_size <= MAX_PNG_BYTES, (name, path.stat().st_size)
    # The languages differ on every page that has words the catalogue translates.
    for name in ("settings.png", "reports.png", "remove-confirm.png", "login.png"):
        assert (tmp_path / "en" / name).read_bytes() != (tmp_path / "nl" / name).read_bytes()
    assert str(tmp_path) in done.stdout
