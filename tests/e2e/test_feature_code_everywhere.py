"""End-to-end, issue 14 ("Done when"): the on-demand code works from each kind of phone,
whatever the trunk negotiates, and a real softphone's Opus call is recorded wideband.

One `callrec serve` with SIP over TLS and `[trunk] srtp = "offer"` (`tls_srtp_server`),
its default digest (one MD5 challenge), an on-demand user 201 and an always user 202:
- baresip over TLS with SRTP mandatory keys `*1` on its keypad (RFC 4733 events, sent
  inside SRTP: callrec must decrypt them to see them), to a trunk that takes SRTP and
  telephone-event (baresip) and to one that answers plain PCMA without telephone-event
  (SIPp `sipp/uas_pcma_only.xml`), which gets not one event packet;
- pjsua2 in G.722 keys `*1` as RFC 4733 through a G.722 trunk without telephone-event,
  and in-band (tones mixed into its wideband audio) through one with it;
- baresip (Debian, `opus.so`) calls in Opus only, and the recording at 16 kHz holds
  what it played.
Each on-demand recording has one span, starting when the code's `1` was keyed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from callrec_phone.phone import PhoneProcess
from testkit.audio import best_correlation
from testkit.baresip import (
    CALL_ESTABLISHED,
    CALL_TERMINATED,
    MODULES,
    Baresip,
    account,
    registered_over,
)
from testkit.harness import HOST, TRUNK_NUMBER, CallrecServer, free_port
from testkit.sipp_runner import start_sipp
from testkit.waiting import wait_until
from tests.e2e.test_baresip_feature_code import PCMA_ONLY
from tests.e2e.test_on_demand import toggles
from tests.e2e.test_tls import Pki, TlsCallrec, pki  # noqa: F401  (pki: fixture)
from tests.e2e.test_tls_srtp_baresip import SRTP_ENABLED, srtp_trunk, tls_srtp_server
from tests.e2e.test_wideband import (  # noqa: F401  (media: fixture)
    RATE,
    TELEPHONE_EVENT,
    UdpMedia,
    media,
    start_trunk,
    wide_chirp,
)

pytestmark = pytest.mark.e2e
needs_baresip = pytest.mark.skipif(shutil.which("baresip") is None, reason="no baresip")

ON_DEMAND, ON_DEMAND_PASSWORD = "201", "pw-code-201"
ALWAYS, ALWAYS_PASSWORD = "202", "pw-code-202"


@pytest.fixture(scope="module")
def callrec(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsCallrec]:  # noqa: F811
    tls = tls_srtp_server(tmp_path_factory.mktemp("callrec-code-everywhere"), pki)
    tls.server.add_user(ON_DEMAND, "Alice On-demand", ON_DEMAND_PASSWORD, "--mode", "on-demand")
    tls.server.add_user(ALWAYS, "Bob Always", ALWAYS_PASSWORD, "--mode", "always")
    yield from (tls for _ in tls.server.serving())


def recorded_from_the_code(
    server: CallrecServer, before: int, keyed: float, slack: float
) -> dict[str, Any]:
    """The call's recording is one span from the code (keyed `keyed` s after the answer
    by the phone's count, give or take `slack`) to the end of the call; its row."""
    call = server.wait_for_calls(before + 1)[0]
    assert call["disposition"] == "answered", call
    recording = server.wait_for_recording(int(call["id"]))
    assert recording["status"] == "complete", recording
    [(start, end)] = recording["segments"]
    assert keyed - 0.1 <= start <= keyed + slack, (recording["segments"], keyed)
    assert end - start > 1.0, recording["segments"]
    audio, rate = sf.read(server.data_dir / str(recording["path"]), dtype="int16")
    assert abs(len(audio) / rate - (end - start)) < 0.2
    return recording


def key_star_1_from_baresip(phone: Baresip, media_flowing: Callable[[], bool]) -> float:
    """Start `phone` (it dials the trunk), key `*1` once the trunk gets its media, and
    wait for the call to end; how long after baresip saw the call up the code was keyed."""
    try:
        phone.start()
        phone.wait_for(registered_over("tls"), timeout=10)
        phone.wait_for(CALL_ESTABLISHED, timeout=10)
        established = time.monotonic()
        phone.wait_for(SRTP_ENABLED, timeout=5)
        wait_until(media_flowing, timeout=5, what="the phone's media at the trunk")
        keyed = time.monotonic() - established
        # One key at a time: `sndcode` presses each of its keys and releases only the
        # last, as a keypad that is never let go.
        phone.command("sndcode", "*")
        phone.command("sndcode", "1")
        phone.wait_for(CALL_TERMINATED, timeout=10)
    finally:
        phone.stop()
    return keyed


def dump_seconds(side: Baresip) -> float:
    """Seconds of audio `side` has decoded so far (its sndfile dump, 8 kHz 16-bit)."""
    dumps = side.heard()
    return max(0, dumps[-1].stat().st_size - 44) / 16000 if dumps else 0.0


@needs_baresip
@pytest.mark.parametrize("trunk_kind", ["srtp-trunk", "trunk-without-telephone-event"])
def test_baresip_over_tls_with_srtp_keys_the_code(
    callrec: TlsCallrec,
    pki: Pki,  # noqa: F811
    tmp_path: Path,
    trunk_kind: str,
) -> None:
    """The on-demand user on baresip (TLS, SRTP mandatory) keys `*1` by `sndcode` once
    its media reaches the trunk: the trunk is baresip taking SRTP and answering with
    telephone-event, or SIPp answering plain PCMA without it (and getting no event)."""
    server = callrec.server
    before = len(server.calls())
    # 3 s of a 440 Hz tone: baresip hangs up when it ends.
    tone = 6000 * np.sin(2 * np.pi * 440 * np.arange(3 * 8000) / 8000)
    sf.write(tmp_path / "tone.wav", tone.astype(np.int16), 8000, subtype="PCM_16")
    phone = Baresip(
        tmp_path / "phone",
        account=account(
            ON_DEMAND,
            ON_DEMAND_PASSWORD,
            HOST,
            callrec.tls_port,
            transport="tls",
            mediaenc="srtp-mand",
        ),
        ca=pki.ca,
        modules=["srtp.so"],
        commands=[f"/dial {TRUNK_NUMBER}"],
        play=tmp_path / "tone.wav",
        time_limit_s=10,
        control=True,
    )
    with ExitStack() as stack:
        if trunk_kind == "srtp-trunk":
            trunk = stack.enter_context(srtp_trunk(callrec, tmp_path))
            keyed = key_star_1_from_baresip(phone, lambda: dump_seconds(trunk) >= 0.5)
        else:
            trunk_rtp = UdpMedia(echo=False)
            stack.callback(trunk_rtp.close)
            sipp = start_sipp(
                PCMA_ONLY,
                work_dir=tmp_path / "uas",
                timeout_s=30,
                local_port=server.trunk_port,
                media_port=free_port(even=True, span=4),
                keys={"rtp_port": str(trunk_rtp.port)},
            )
            try:
                keyed = key_star_1_from_baresip(phone, lambda: len(trunk_rtp.received) >= 25)
            except BaseException:
                sipp.stop(grace_s=1.0)
                raise
            assert sipp.wait().ok
            counts = trunk_rtp.payload_types()
            # It answered PCMA only: it got the phone's audio, and not one event packet.
            assert TELEPHONE_EVENT not in counts and counts.get(8, 0) > 100, counts
    # The code's `1` follows `*` by one ctrl_tcp round trip; baresip says the call is
    # up a little after callrec answered.
    recording = recorded_from_the_code(server, before, keyed, slack=0.6)
    logged = toggles(server, int(recording["id"]))
    assert [(action, method) for _, action, method in logged] == [("start", "rfc4733")]


@pytest.mark.parametrize(
    ("method", "trunk_formats"),
    [("rfc2833", "9"), ("inband", f"9 {TELEPHONE_EVENT}")],
    ids=["rfc4733-trunk-without-telephone-event", "inband-trunk-with-telephone-event"],
)
def test_a_g722_phone_keys_the_code(
    callrec: TlsCallrec,
    tmp_path: Path,
    media: list[UdpMedia],  # noqa: F811
    method: str,
    trunk_formats: str,
) -> None:
    """pjsua2 in G.722 (16 kHz) keys `*1` 1 s after the answer; the trunk (SIPp
    `uas_media_keys.xml`, its media a socket of this test that echoes) answers G.722,
    with a stray `a=rtpmap:101 telephone-event` even when its m= line has no 101."""
    server = callrec.server
    before = len(server.calls())
    trunk_rtp = UdpMedia(echo=True)
    media.append(trunk_rtp)
    trunk = start_trunk(
        server, tmp_path / "uas", trunk_rtp, formats=trunk_formats, pt=9, rtpmap="G722/8000"
    )
    sweep = tmp_path / "sweep.wav"
    sf.write(sweep, wide_chirp(3.0), RATE, subtype="PCM_16")
    # In-band keys are keyed over silence: the loud sweep (-8 dBFS, in the DTMF band's
    # neighbourhood at 1 s) masks pjsua's tones for the detector at 8 kHz as at 16 kHz.
    play = ["--play", str(sweep)] if method == "rfc2833" else []
    phone = PhoneProcess(
        server.dial_args(
            ON_DEMAND,
            ON_DEMAND_PASSWORD,
            "--codec",
            "g722",
            *play,
            "--digits",
            "*1",
            "--dtmf-method",
            method,
            "--at",
            "1.0",
            "--hangup-after",
            "3",
        )
    )
    result = phone.wait(40)
    assert result.returncode == 0, result.stderr[-2000:]
    codecs = [str(e["codec"]) for e in result.named("media") if e.get("codec")]
    assert codecs and "G722" in codecs[0], result.events
    assert trunk.wait().ok
    counts = trunk_rtp.payload_types()
    # The trunk got the phone's G.722 and no event packet (it asked for none, or the
    # phone sent none).
    assert set(counts) == {9} and counts[9] > 100, counts
    [keyed] = [e["after_answer_s"] for e in result.named("dtmf_sent") if e["digit"] == "1"]
    recording = recorded_from_the_code(server, before, float(keyed), slack=0.1)
    assert recording["sample_rate"] == RATE, recording
    logged = toggles(server, int(recording["id"]))
    expected = {"rfc2833": "rfc4733", "inband": "inband"}[method]
    assert [(action, how) for _, action, how in logged] == [("start", expected)]


@needs_baresip
@pytest.mark.skipif(not (Path(MODULES) / "opus.so").exists(), reason="no baresip opus.so")
def test_a_baresip_opus_call_is_recorded_at_16_khz(
    callrec: TlsCallrec,
    tmp_path: Path,
    media: list[UdpMedia],  # noqa: F811
) -> None:
    """Debian baresip with `opus.so`, offering Opus only (`audio_codecs=opus/48000/2`),
    calls a trunk that answers Opus and echoes; the phone's channel of the recording,
    at 16 kHz, holds the sweep (to 6.5 kHz, beyond G.711) it played."""
    server = callrec.server
    before = len(server.calls())
    trunk_rtp = UdpMedia(echo=True)
    media.append(trunk_rtp)
    trunk = start_trunk(
        server, tmp_path / "uas", trunk_rtp, formats="111", pt=111, rtpmap="opus/48000/2"
    )
    played = wide_chirp(3.0)
    # The same sweep at Opus's 48 kHz, stereo, as baresip's aufile wants it.
    source = wide_chirp(3.0, rate=48000)
    sf.write(tmp_path / "sweep.wav", np.stack([source, source], axis=1), 48000, subtype="PCM_16")
    phone = Baresip(
        tmp_path / "phone",
        account=account(
            ALWAYS, ALWAYS_PASSWORD, HOST, server.sip_port, audio_codecs="opus/48000/2"
        ),
        modules=["opus.so"],
        commands=[f"/dial {TRUNK_NUMBER}"],
        play=tmp_path / "sweep.wav",
        time_limit_s=10,
    )
    try:
        phone.start()
        phone.wait_for(registered_over("udp"), timeout=10)
        phone.wait_for(CALL_ESTABLISHED, timeout=10)
        phone.wait_for(CALL_TERMINATED, timeout=10)  # the sweep played to its end
    finally:
        phone.stop()
    assert trunk.wait().ok
    counts = trunk_rtp.payload_types()
    assert set(counts) == {111} and counts[111] > 100, counts
    call = server.wait_for_calls(before + 1)[0]
    recording = server.wait_for_recording(int(call["id"]))
    assert recording["status"] == "complete", recording
    audio, rate = sf.read(server.data_dir / str(recording["path"]), dtype="int16")
    assert rate == recording["sample_rate"] == RATE, (rate, recording)
    score, _ = best_correlation(played[RATE // 2 : 5 * RATE // 2], audio[:, 0])
    assert score >= 0.9, f"Opus recording correlates {score:.3f} with what baresip played"
