"""In-band DTMF detection on decoded PCM, streaming and vectorised (sans-IO).

Two stages. A bank of Goertzel filters (one matrix product over Hann-windowed 10 ms
frames, 5 ms hop) proposes a digit per frame with loose level, twist and energy checks;
that gives the timing. When the same digit holds over `MIN_TONE_FRAMES` frames and a
pause came before it, the last 30 ms are validated precisely: each tone's frequency is
measured on a fine grid (±1.5% must pass, ±3.5% must not, and 10 ms frames cannot tell
them apart at 697 Hz), then the two tones and their second harmonics are fitted by least
squares, which gives exact twist and level, the share of the frame's energy in the two
tones (speech is seldom two pure tones for 30 ms) and the second-harmonic share. A digit
counts once per pause, however long its tone lasts.

Levels are in dBm0 per tone. Reference: G.711 µ-law reaches +3.17 dBm0 at its full
scale of 8159 (14-bit), i.e. 32636 on the int16 scale used here, so a 0 dBm0 sine has a
peak of 32636 * 10**(-3.17/20) = 22662 and a -3 dBm0 per-tone digit just fits int16.
Twist follows the Bellcore / spandsp usage: normal twist is the low group louder than the
high group, reverse twist the high group louder. Measured limits: 8.5 dB normal and
4.5 dB reverse twist always pass, 9.5 and 5.5 dB never; tones of 33 ms pass, 25 ms never;
2% frequency error passes, 3% never; -35 dBm0 per tone passes, -37 dBm0 never.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from dtmf.events import DigitEvent

FloatArray = npt.NDArray[np.float64]

ROW_FREQUENCIES: Final = (697.0, 770.0, 852.0, 941.0)
COLUMN_FREQUENCIES: Final = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD: Final = ("123A", "456B", "789C", "*0#D")

ZERO_DBM0_PEAK: Final = 32636.0 * 10.0 ** (-3.17 / 20.0)


def dbm0_to_peak(level_dbm0: float) -> float:
    """Peak int16 amplitude of a sine at `level_dbm0` (the reference of this module)."""
    return float(ZERO_DBM0_PEAK * 10.0 ** (level_dbm0 / 20.0))


def _tone_power(level_dbm0: float) -> float:
    return dbm0_to_peak(level_dbm0) ** 2 / 2.0


# Accepted per-tone level: the spec asks down to -29 dBm0; 7 dB of margin below that.
MIN_TONE_LEVEL_DBM0: Final = -36.0
# Twist limits (dB): the spec accepts 8 dB normal and 4 dB reverse.
NORMAL_TWIST_DB: Final = 9.0
REVERSE_TWIST_DB: Final = 5.0
# Frequency deviation limit, halfway between the 1.5% accept and 3.5% reject points.
MAX_FREQUENCY_DEVIATION: Final = 0.025
# Share of the validated segment's energy that the two fitted tones must hold.
MIN_TONE_PURITY: Final = 0.90
# Largest second-harmonic energy relative to its fundamental. Q.23 lets a sender put
# extraneous frequencies 20 dB under the tones, so the limit sits 5 dB above that.
MAX_SECOND_HARMONIC: Final = 10.0 ** (-15.0 / 10.0)

FRAME_SECONDS: Final = 0.010
HOP_SECONDS: Final = 0.005
# Consecutive frames with the same digit before validation: a 40 ms tone gives at
# least 6 (its 320 samples hold 6 hops plus most of a frame), a 20 ms tone at most 4.
MIN_TONE_FRAMES: Final = 6
# Frames without a digit that make a pause, so the next digit may count (~20 ms).
PAUSE_FRAMES: Final = 4
# Frame-stage checks are looser than the validation so that noise does not split a run.
_FRAME_TWIST_MARGIN_DB: Final = 4.0
_FRAME_MIN_TONE_SHARE: Final = 0.60
# Validation retries per run: a tone may start badly (a click) and become clean.
_MAX_VALIDATIONS: Final = 8
# Half-width and resolution of the fine frequency search, as fractions of the nominal.
_SEARCH_SPAN: Final = 0.05
_SEARCH_STEPS: Final = 41
# A gap in the stream larger than this resets the analysis.
_MAX_TIME_SLIP: Final = 0.050


class InbandDetector:
    """Finds DTMF digits in one leg's decoded audio, fed in chunks of any size."""

    def __init__(self, sample_rate: int = 8000, *, leg: str = "a") -> None:
        self.sample_rate = sample_rate
        self.leg = leg
        self.frame = round(FRAME_SECONDS * sample_rate)
        self.hop = round(HOP_SECONDS * sample_rate)
        # The validated segment drops a quarter frame at each end of the run, where the
        # frames only partly cover the tone.
        self._edge = self.frame // 4
        self._segment = (MIN_TONE_FRAMES - 1) * self.hop + self.frame - 2 * self._edge

        window = np.hanning(self.frame + 2)[1:-1]
        frequencies = np.array(ROW_FREQUENCIES + COLUMN_FREQUENCIES)
        n = np.arange(self.frame)
        basis = np.exp(-2j * np.pi * np.outer(n, frequencies) / sample_rate)
        self._frame_basis = window[:, None] * basis
        self._window = window
        # Power of a sine of amplitude A is A**2/2 both from the bins and the frame.
        self._bin_scale = 2.0 / float(window.sum()) ** 2
        self._frame_scale = 1.0 / float((window**2).sum())
        self._min_power = _tone_power(MIN_TONE_LEVEL_DBM0)

        offsets = np.linspace(-_SEARCH_SPAN, _SEARCH_SPAN, _SEARCH_STEPS)
        self._search_offsets = offsets
        segment_n = np.arange(self._segment)
        segment_window = np.hanning(self._segment + 2)[1:-1]
        self._search_basis: dict[float, npt.NDArray[np.complex128]] = {}
        for f in frequencies:
            phase = 2.0 * np.pi * np.outer(segment_n, f * (1.0 + offsets)) / sample_rate
            basis_f: npt.NDArray[np.complex128] = segment_window[:, None] * np.exp(-1j * phase)
            self._search_basis[float(f)] = basis_f

        self._buffer: FloatArray = np.zeros(0)
        self._buffer_start = 0  # absolute index of _buffer[0]
        self._next_frame = 0  # absolute index of the next frame to analyse, in hops
        self._anchor_index = 0
        self._anchor_time: float | None = None
        self._run_digit = -1
        self._run_length = 0
        self._run_first_frame = 0
        self._run_validations = 0
        self._frames_without_digit = PAUSE_FRAMES
        # Set by a pause, cleared by a detection: one digit per pause, however the
        # frames flicker at the tone's edges.
        self._armed = True

    def feed(self, pcm: npt.NDArray[np.int16], start_time: float) -> list[DigitEvent]:
        """Analyse the next chunk, whose first sample is at `start_time` (seconds)."""
        samples = np.asarray(pcm, dtype=np.float64).ravel()
        end_index = self._buffer_start + self._buffer.size
        if self._anchor_time is not None:
            expected = self._anchor_time + (end_index - self._anchor_index) / self.sample_rate
            if abs(start_time - expected) > _MAX_TIME_SLIP:
                self._restart(end_index, long_gap=start_time > expected)
        self._anchor_index = end_index
        self._anchor_time = start_time
        self._buffer = np.concatenate([self._buffer, samples])
        events = self._analyse()
        # Keep enough audio to validate a run that ends in the next chunk.
        keep_from = (self._next_frame - MIN_TONE_FRAMES) * self.hop
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :]
            self._buffer_start = keep_from
        return events

    def _restart(self, at_index: int, *, long_gap: bool) -> None:
        """Forget the audio before a discontinuity; the gap counts as a pause if long."""
        self._buffer = np.zeros(0)
        self._buffer_start = at_index
        self._next_frame = -(-at_index // self.hop)
        self._run_digit = -1
        self._run_length = 0
        if long_gap:
            self._frames_without_digit = PAUSE_FRAMES
            self._armed = True

    def _analyse(self) -> list[DigitEvent]:
        first = self._next_frame * self.hop - self._buffer_start
        count = (self._buffer.size - first - self.frame) // self.hop + 1
        if count <= 0:
            return []
        frames = np.lib.stride_tricks.sliding_window_view(self._buffer[first:], self.frame)
        frames = frames[: count * self.hop : self.hop]
        digits = self._frame_digits(frames)
        events: list[DigitEvent] = []
        for offset, digit in enumerate(digits.tolist()):
            event = self._step(self._next_frame + offset, digit)
            if event is not None:
                events.append(event)
        self._next_frame += count
        return events

    def _frame_digits(self, frames: FloatArray) -> npt.NDArray[np.int64]:
        """Candidate digit (0-15, keypad order row*4+column) per frame, -1 for none."""
        powers = np.abs(frames @ self._frame_basis) ** 2 * self._bin_scale
        total = np.einsum("ij,ij->i", frames * self._window, frames * self._window)
        total *= self._frame_scale
        rows = powers[:, :4].argmax(axis=1)
        columns = powers[:, 4:].argmax(axis=1)
        index = np.arange(len(frames))
        row_power = powers[index, rows]
        column_power = powers[index, 4 + columns]
        normal = 10.0 ** ((NORMAL_TWIST_DB + _FRAME_TWIST_MARGIN_DB) / 10.0)
        reverse = 10.0 ** ((REVERSE_TWIST_DB + _FRAME_TWIST_MARGIN_DB) / 10.0)
        valid = (
            (row_power >= self._min_power * 0.5)
            & (column_power >= self._min_power * 0.5)
            & (row_power <= column_power * normal)
            & (column_power <= row_power * reverse)
            & (row_power + column_power >= _FRAME_MIN_TONE_SHARE * total)
        )
        return np.where(valid, rows * 4 + columns, -1)

    def _step(self, frame_index: int, digit: int) -> DigitEvent | None:
        if digit < 0:
            self._frames_without_digit += 1
            if self._frames_without_digit >= PAUSE_FRAMES:
                self._armed = True
            self._run_digit = -1
            self._run_length = 0
            return None
        if digit != self._run_digit:
            self._run_digit = digit
            self._run_length = 0
            self._run_first_frame = frame_index
            self._run_validations = 0
        self._frames_without_digit = 0
        self._run_length += 1
        if (
            not self._armed
            or self._run_length < MIN_TONE_FRAMES
            or self._run_validations >= _MAX_VALIDATIONS
        ):
            return None
        self._run_validations += 1
        start = (frame_index - MIN_TONE_FRAMES + 1) * self.hop + self._edge
        offset = start - self._buffer_start
        segment = self._buffer[offset : offset + self._segment]
        if segment.size < self._segment or not self._validate(segment, digit):
            return None
        self._armed = False
        # A frame passes once about three quarters of it holds the tone.
        tone_start = self._run_first_frame * self.hop + self._edge
        return DigitEvent(
            KEYPAD[digit // 4][digit % 4], "inband", self.leg, self._time_of(tone_start)
        )

    def _time_of(self, index: int) -> float:
        assert self._anchor_time is not None
        return self._anchor_time + (index - self._anchor_index) / self.sample_rate

    def _measure_frequency(self, segment: FloatArray, nominal: float) -> float | None:
        """Frequency of the strongest component within ±5% of `nominal`, or None."""
        spectrum = np.abs(segment @ self._search_basis[nominal])
        peak = int(spectrum.argmax())
        if peak in (0, len(spectrum) - 1):
            return None  # the energy lies outside the searched band
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        curvature = left - 2.0 * centre + right
        shift = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        step = self._search_offsets[1] - self._search_offsets[0]
        return float(nominal * (1.0 + self._search_offsets[peak] + shift * step))

    def _validate(self, segment: FloatArray, digit: int) -> bool:
        segment = segment - segment.mean()
        nominal_row = ROW_FREQUENCIES[digit // 4]
        nominal_column = COLUMN_FREQUENCIES[digit % 4]
        row = self._measure_frequency(segment, nominal_row)
        column = self._measure_frequency(segment, nominal_column)
        if row is None or column is None:
            return False
        if (
            abs(row / nominal_row - 1.0) > MAX_FREQUENCY_DEVIATION
            or abs(column / nominal_column - 1.0) > MAX_FREQUENCY_DEVIATION
        ):
            return False
        n = np.arange(segment.size)[:, None]
        phases = 2.0 * np.pi * n * np.array([row, column, 2 * row, 2 * column]) / self.sample_rate
        basis = np.hstack([np.cos(phases), np.sin(phases)])
        coefficients, *_ = np.linalg.lstsq(basis, segment, rcond=None)
        parts = basis * coefficients
        # Columns k and k+4 are the cosine and sine of the same frequency.
        energies = ((parts[:, :4] + parts[:, 4:]) ** 2).sum(axis=0)
        row_energy, column_energy, row_harmonic, column_harmonic = energies.tolist()
        total = float(segment @ segment)
        min_energy = self._min_power * segment.size
        return bool(
            row_energy >= min_energy
            and column_energy >= min_energy
            and row_energy <= column_energy * 10.0 ** (NORMAL_TWIST_DB / 10.0)
            and column_energy <= row_energy * 10.0 ** (REVERSE_TWIST_DB / 10.0)
            and row_energy + column_energy >= MIN_TONE_PURITY * total
            and row_harmonic <= MAX_SECOND_HARMONIC * row_energy
            and column_harmonic <= MAX_SECOND_HARMONIC * column_energy
        )
