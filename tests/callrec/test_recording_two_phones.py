"""An internal call between on-demand users: the feature code works from both phones
(`CallRecording(feature_code_legs=...)`), each leg with its own watcher and swallower;
with only the internal leg watched, the other phone's code does nothing."""

from __future__ import annotations

from pathlib import Path

from callrec.config import RecordingConfig
from callrec.policy import FeatureCode, RecordingMode
from callrec.recording.session import CallRecording, RecordingFile, Toggle
from tests.dtmf.test_interworking import PHONE, START, events


def on_demand(tmp_path: Path, legs: tuple[str, ...]) -> tuple[CallRecording, list[Toggle]]:
    config = RecordingConfig(
        channels="mono",
        format="wav",
        feature_code=FeatureCode.parse("*1"),
        announcement="none",
        swallow_feature_code=True,
    )
    toggles: list[Toggle] = []
    recording = CallRecording(
        config,
        RecordingFile("x.wav", tmp_path / "x.wav"),
        internal_leg="a",
        start_time=START,
        mode=RecordingMode.ON_DEMAND,
        feature_code="*1",
        on_toggle=toggles.append,
        now=lambda: START + 60,
        feature_code_legs=legs,
    )
    released: list[tuple[str, bytes]] = []
    recording.release = lambda leg, packet: released.append((leg, packet))
    recording.learn_sdp("a", PHONE)
    recording.learn_sdp("b", PHONE)
    return recording, toggles


def dial_code(recording: CallRecording, leg: str, at: float, seq: int) -> int:
    """Key *1 on `leg` at `at`; how many of its packets went on to the other phone."""
    forwarded = 0
    for n, digit in enumerate("*1"):
        for packet in events(digit, 1000 * seq + 800 * n, 100 * seq + 10 * n):
            forwarded += recording.rtp_filter(leg, packet, at + 0.3 * n)
            recording.on_packet(leg, "rtp", packet, at + 0.3 * n)
    return forwarded


def test_either_phone_starts_and_stops_the_recording(tmp_path: Path) -> None:
    recording, toggles = on_demand(tmp_path, ("a", "b"))
    assert set(recording.watchers) == {"a", "b"}
    assert dial_code(recording, "b", START + 1, 1) == 0  # the callee's code is kept back
    assert [t.action for t in toggles] == ["start"] and toggles[0].first_start
    assert not recording.paused
    dial_code(recording, "a", START + 5, 2)  # and the caller stops it
    assert [t.action for t in toggles] == ["start", "stop"]
    assert recording.paused


def test_only_the_watched_phone_toggles(tmp_path: Path) -> None:
    recording, toggles = on_demand(tmp_path, ("a",))
    assert dial_code(recording, "b", START + 1, 1) == 6  # passed on untouched
    assert toggles == []
    dial_code(recording, "a", START + 5, 2)
    assert [t.action for t in toggles] == ["start"]
