from __future__ import annotations

import numpy as np
import pytest

from media.mixer import Mixer, interleave_stereo, mix_mono, other_leg


def test_mono_is_the_sum() -> None:
    a = np.array([1, -2, 300, 0], dtype=np.int16)
    b = np.array([10, 20, -300, 7], dtype=np.int16)
    assert mix_mono(a, b).tolist() == [11, 18, 0, 7]


def test_mono_saturates_instead_of_wrapping() -> None:
    a = np.array([30000, -30000, 32767, -32768], dtype=np.int16)
    b = np.array([10000, -10000, 1, -1], dtype=np.int16)
    mixed = mix_mono(a, b)
    assert mixed.dtype == np.int16
    assert mixed.tolist() == [32767, -32768, 32767, -32768]


@pytest.mark.parametrize("internal", ["a", "b"])
def test_stereo_puts_the_internal_user_left(internal: str) -> None:
    legs = {"a": np.full(5, 111, dtype=np.int16), "b": np.full(5, -222, dtype=np.int16)}
    frames = Mixer(2, internal).mix(legs)
    assert frames.shape == (5, 2)
    assert np.all(frames[:, 0] == legs[internal])
    assert np.all(frames[:, 1] == legs[other_leg(internal)])


def test_interleave_layout_is_left_right_pairs() -> None:
    frames = interleave_stereo(np.array([1, 2], np.int16), np.array([3, 4], np.int16))
    assert frames.tobytes() == np.array([1, 3, 2, 4], np.int16).tobytes()


def test_mono_mixer_ignores_which_leg_is_internal() -> None:
    legs = {"a": np.arange(4, dtype=np.int16), "b": np.arange(4, dtype=np.int16) * 2}
    assert Mixer(1, "a").mix(legs).tolist() == Mixer(1, "b").mix(legs).tolist() == [0, 3, 6, 9]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Mixer(3)
    with pytest.raises(ValueError):
        Mixer(1, "c")
    with pytest.raises(ValueError):
        Mixer(1).mix({"a": np.zeros(3, np.int16), "b": np.zeros(2, np.int16)})
