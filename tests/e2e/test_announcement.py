"""End-to-end: the legal notice reaches both parties while the far end's RTP stays continuous."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from callrec_phone.phone import PhoneProcess
from media.announce import load_announcement
from media.rtp import RtpPacket
from testkit.audio import peak_correlation, tone_wav
from testkit.harness import CallrecServer, free_port, make_server
from testkit.rtp_counter import RtpCounter

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"))
    srv.add_user("202", "Bob Always", "pw-202", "--mode", "always")
    yield from srv.serving()


def continuity_breaks(packets: list[bytes]) -> list[str]:
    """Every place where the stream a receiver sees is not one continuous RTP stream."""
    parsed = [RtpPacket.parse(p) for p in packets if len(p) >= 12 and p[0] >> 6 == 2]
    audio = [p for p in parsed if p.payload_type in (0, 8)]
    problems: list[str] = []
    if len({p.ssrc for p in audio}) != 1:
        problems.append(f"SSRCs {sorted({p.ssrc for p in audio})}")
    for before, after in itertools.pairwise(audio):
        if (after.sequence - before.sequence) % 65536 != 1:
            problems.append(f"sequence {before.sequence} -> {after.sequence}")
        step = (after.timestamp - before.timestamp) % (1 << 32)
        if step != 160:
            problems.append(f"timestamp step {step} at sequence {after.sequence}")
    return problems


def test_both_parties_hear_the_notice_and_rtp_stays_continuous(
    server: CallrecServer, tmp_path: Path
) -> None:
    prompt = load_announcement("default")
    assert prompt is not None
    talk = tone_wav(tmp_path / "talk.wav", 500.0, seconds=6.0, amplitude=0.03)
    trunk_rtp = free_port(even=True, span=4)
    counter = RtpCounter(range(trunk_rtp, trunk_rtp + 1), keep_payloads=True).start()
    trunk = PhoneProcess(
        server.trunk_phone_args(
            "--rtp-port",
            str(trunk_rtp),
            "--play",
            str(talk),
            "--record-heard",
            str(tmp_path / "trunk-heard.wav"),
        )
    )
    trunk.wait_for("started", 15)
    phone = PhoneProcess(
        server.dial_args(
            "202",
            "pw-202",
            "--play",
            str(talk),
            "--record-heard",
            str(tmp_path / "phone-heard.wav"),
            "--hangup-after",
            "5",
        )
    )
    assert phone.wait(40).returncode == 0
    assert trunk.wait(30).named("confirmed")
    counter.stop()
    # The prompt starts right at the answer, when pjsua2's jitter buffer is still
    # filling and may drop its first packets: a clipped prompt correlates 0.7-0.9, the
    # tone the phones play without it stays below 0.1.
    for side in ("phone", "trunk"):
        heard, _ = sf.read(tmp_path / f"{side}-heard.wav", dtype="int16")
        assert peak_correlation(prompt, heard[: 8000 * 4]) > 0.6, side
        assert peak_correlation(prompt, heard[8000 * 3 :]) < 0.3, side
    packets = counter.payloads.get(trunk_rtp, [])
    assert len(packets) > 150, len(packets)
    assert continuity_breaks(packets) == []
    # The notice is in the recording too, right at its start.
    call = server.wait_for_calls(1)[0]
    recording = server.wait_for_recording(call["id"])
    assert recording["status"] == "complete"
    recorded, _ = sf.read(server.data_dir / recording["path"], dtype="int16")
    assert peak_correlation(prompt, recorded[: 8000 * 3]) > 0.5
