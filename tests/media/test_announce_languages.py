"""The shipped spoken notice in each language, and what "default" plays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from callrec.policy import LANGUAGES
from media.announce import (
    SAMPLE_RATE,
    SHIPPED_NOTICES,
    AnnouncementError,
    load_announcement,
    read_prompt,
    shipped_notice,
)

ROOT = Path(__file__).resolve().parents[2]


def test_every_language_has_a_shipped_notice() -> None:
    # media may not import the policy; this is where the two lists are held together.
    assert sorted(SHIPPED_NOTICES) == sorted(LANGUAGES)


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_notice_is_8khz_mono_16_bit_speech(language: str) -> None:
    info = soundfile.info(str(shipped_notice(language)))
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    assert 1.0 < info.duration < 5.0
    pcm = load_announcement("default", language)
    assert pcm is not None
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert rms > 1000  # normalised speech, not silence


def test_default_plays_the_notice_of_the_language_in_force() -> None:
    dutch = load_announcement("default", "nl")
    english = load_announcement("default", "en")
    assert dutch is not None and english is not None
    assert np.array_equal(dutch, read_prompt(ROOT / "media/prompts/recorded-nl.wav"))
    assert np.array_equal(english, read_prompt(ROOT / "media/prompts/recorded.wav"))
    assert dutch.size != english.size or not np.array_equal(dutch, english)
    # Without a language: English, as before languages existed.
    default = load_announcement("default")
    assert default is not None and np.array_equal(default, english)


def test_a_file_and_the_beep_play_whatever_the_language() -> None:
    notice = ROOT / "media/prompts/recorded-nl.wav"
    from_file = load_announcement(str(notice), "en")
    assert from_file is not None and np.array_equal(from_file, read_prompt(notice))
    beep_nl, beep_en = load_announcement("beep", "nl"), load_announcement("beep", "en")
    assert beep_nl is not None and beep_en is not None
    assert np.array_equal(beep_nl, beep_en)


def test_a_language_without_a_notice_is_refused() -> None:
    with pytest.raises(AnnouncementError, match="no shipped notice in language 'fr'"):
        load_announcement("default", "fr")


def test_the_regenerating_script_makes_both_notices() -> None:
    script = (ROOT / "scripts/make_prompt.sh").read_text()
    for language, path in SHIPPED_NOTICES.items():
        assert f"{language})" in script
        assert str(path.relative_to(ROOT)) in script
    assert 'espeak-ng -v "$VOICE"' in script and "VOICE=nl" in script
