"""Mix two legs' call-time samples into recording frames: mono sum or stereo pair."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

__all__ = ["LEGS", "Mixer", "interleave_stereo", "mix_mono", "other_leg"]

Int16Array = npt.NDArray[np.int16]

LEGS = ("a", "b")


def other_leg(leg: str) -> str:
    """The leg opposite `leg` ("a" <-> "b"); ValueError for anything else."""
    if leg not in LEGS:
        raise ValueError(f"unknown leg {leg!r}, expected 'a' or 'b'")
    return "b" if leg == "a" else "a"


def mix_mono(first: Int16Array, second: Int16Array) -> Int16Array:
    """Sum two equally long int16 signals, saturating at the int16 limits."""
    total = np.add(first, second, dtype=np.int32)
    # minimum/maximum in place: np.clip's checks cost more than the clipping itself.
    np.minimum(total, 32767, out=total)
    np.maximum(total, -32768, out=total)
    return total.astype(np.int16)


def interleave_stereo(left: Int16Array, right: Int16Array) -> Int16Array:
    """Frames of shape (n, 2): column 0 is `left`, column 1 is `right`."""
    frames = np.empty((len(left), 2), dtype=np.int16)
    frames[:, 0] = left
    frames[:, 1] = right
    return frames


class Mixer:
    """Turns both legs' samples into frames for a 1- or 2-channel recording.

    In stereo the internal user's leg (the one callrec records for) is always the left
    channel and the other party the right, whoever spoke first.
    """

    def __init__(self, channels: int, internal_leg: str = "a") -> None:
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels}")
        self.channels = channels
        self.internal_leg = internal_leg
        self.external_leg = other_leg(internal_leg)

    def mix(self, legs: Mapping[str, Int16Array]) -> Int16Array:
        """Frames from both legs' samples (equal lengths): shape (n,) mono, (n, 2) stereo."""
        internal = legs[self.internal_leg]
        external = legs[self.external_leg]
        if len(internal) != len(external):
            raise ValueError(f"leg lengths differ: {len(internal)} and {len(external)}")
        if self.channels == 1:
            return mix_mono(internal, external)
        return interleave_stereo(internal, external)
