"""End-to-end, issue 14: softphones set to SIP over TLS and SDES-SRTP register and call
through a real `callrec serve` (`[trunk] srtp = "offer"`), and the calls are recorded.
The matrix: each phone, baresip (`;transport=tls;mediaenc=srtp-mand`) and pjsua2 (the
`callrec[phone]` wheel, pjsip 2.15; `callrec phone --transport tls --srtp mandatory`),
calls each trunk, one that answers plain RTP (SIPp, echoing) and one that takes SRTP
(baresip with `mediaenc=srtp`, playing a chirp of its own).

What the test checks, on a tshark capture of loopback:
- the recording holds what the phone played (callrec decrypted it), and what the trunk
  sent reached the phone (callrec encrypted toward it with keys the phone accepted);
- the phone leg's RTP never carries the played audio in the clear, while the plain
  trunk leg's does (the control: the check can fail); with the SRTP trunk, neither leg;
- no SIP in the clear on the TLS leg. callrec writes its TLS secrets to a key log
  (`SSLKEYLOGFILE`, `b2bua.tls`), so tshark decrypts the TLS leg: the SIP inside is
  RTP/SAVP with `a=crypto`, and those SDES keys (the phone's and callrec's answer), with
  those on the trunk's SIP, are not in callrec's log (at DEBUG), its database or the
  recording.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from callrec_phone.phone import PhoneProcess
from media import g711
from testkit.audio import best_correlation, chirp, peak_correlation
from testkit.baresip import CALL_ESTABLISHED, Baresip, account, registered_over
from testkit.harness import HOST, TRUNK_NUMBER, free_port, phone_dial_args
from testkit.waiting import wait_until
from tests.e2e.test_srtp_pjsua import capture, clear_audio_packets, udp_packets
from tests.e2e.test_tls import Pki, TlsCallrec, pki, tls_server  # noqa: F401  (pki: fixture)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
    pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed"),
]

PASSWORD = "pw-tls-101"
INLINE_KEY = re.compile(r"inline:([A-Za-z0-9+/=]{20,})")


def tls_srtp_server(root: Path, pki: Pki) -> TlsCallrec:  # noqa: F811
    """`tls_server` (not started) offering SRTP to the trunk (`[trunk] srtp = "offer"`),
    recording stereo (the phone on channel 0) without an announcement."""
    tls = tls_server(root, pki)
    server = tls.server
    text = server.config_path.read_text()
    assert "[trunk]\n" in text
    text = text.replace("[trunk]\n", '[trunk]\nsrtp = "offer"\n')
    server.config_path.write_text(
        text + '[recording]\nannouncement = "none"\nchannels = "stereo"\n'
    )
    return tls


@pytest.fixture(scope="module")
def callrec(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsCallrec]:  # noqa: F811
    tls = tls_srtp_server(tmp_path_factory.mktemp("callrec-tls-srtp"), pki)
    server = tls.server
    server.extra_env["CALLREC_LOG_LEVEL"] = "DEBUG"  # keys must not appear even there
    server.extra_env["SSLKEYLOGFILE"] = str(server.root / "tls-keys.log")
    server.add_user("101", "Sam Secure", PASSWORD, "--mode", "always")
    yield from (tls for _ in server.serving())


PROBE = b"capture-probe"


@contextmanager
def capturing(pcap: Path, callrec: TlsCallrec, trunk_media: int | None) -> Iterator[None]:
    """`capture` of this call's packets, entered once the capture is seen to work: tshark
    says "Capturing on" a moment before packets reach its file, and a TLS handshake
    it misses cannot be decrypted. So probes go to a port of the filter until one is in
    the file."""
    probe_port = free_port()
    with capture(pcap, capture_filter(callrec, trunk_media) + f" or udp port {probe_port}"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:

            def seen() -> bool:
                probe.sendto(PROBE, (HOST, probe_port))
                return pcap.exists() and PROBE in pcap.read_bytes()

            wait_until(seen, timeout=10, what="the capture's first probe", interval=0.1)
        yield


def capture_filter(callrec: TlsCallrec, trunk_media: int | None) -> str:
    """This call's packets only (other tests may be loading loopback): the TLS leg, the
    UDP SIP ports, callrec's RTP range (each leg has a relay port on one side) and the
    trunk's media port."""
    server = callrec.server
    return (
        f"tcp port {callrec.tls_port} or udp portrange {server.rtp_first}-{server.rtp_last}"
        f" or udp port {server.sip_port} or udp port {server.trunk_port}"
        + (f" or udp port {trunk_media}" if trunk_media is not None else "")
    )


def decrypted_tls(pcap: Path, tls_port: int, display_filter: str, key_log: Path) -> str:
    """The verbose dissection of the frames `display_filter` picks, the TLS port read as
    SIP over TLS and decrypted with `key_log`."""
    command = ["tshark", "-r", str(pcap), "-d", f"tcp.port=={tls_port},tls"]
    command += ["-o", f"sip.tls.port:{tls_port}", "-o", f"tls.keylog_file:{key_log}"]
    command += ["-Y", display_filter, "-V"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def tcp_payloads(pcap: Path) -> list[tuple[int, int, bytes]]:
    """(source port, destination port, payload) of each TCP segment with data."""
    command = ["tshark", "-r", str(pcap), "-Y", "tcp.len > 0", "-T", "fields"]
    command += ["-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.payload"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    segments = []
    for line in out.stdout.splitlines():
        source, destination, data = line.split("\t")
        segments.append((int(source), int(destination), bytes.fromhex(data.replace(":", ""))))
    return segments


def heard_well(reference: npt.NDArray[np.int16], heard: Path) -> bool:
    """A quarter second of `reference` (from 0.5 s in) intact in the WAV `heard`: the
    proof the audio crossed both legs' keys (noise, as audio under a wrong key, stays
    near 0; a phone's jitter buffer may slip a frame, so no longer piece is asked)."""
    audio, _ = sf.read(heard, dtype="int16")
    pieces = [reference[start : start + 2000] for start in range(4000, 16000, 2000)]
    return max(peak_correlation(piece, audio) for piece in pieces) > 0.8


def trunk_answer(packets: list[tuple[int, int, bytes]], trunk_port: int) -> bytes:
    """The trunk's 200 to callrec's first INVITE."""
    return next(
        payload
        for source, _, payload in packets
        if source == trunk_port
        and payload.startswith(b"SIP/2.0 200 ")
        and b" INVITE\r\n" in payload
    )


def check_call(
    callrec: TlsCallrec,
    before: int,
    source: npt.NDArray[np.int16],
    pcap: Path,
    trunk_media: int | None,
) -> set[str]:
    """The checks of the module docstring on one call whose phone played `source`; the
    trunk's media is on `trunk_media` (plain RTP, the control) or None (an SRTP trunk).
    Returns the SDES keys seen (in the TLS and the trunk's SIP)."""
    server, tls_port = callrec.server, callrec.tls_port
    cdr = server.wait_for_calls(before + 1, timeout=20)[0]
    assert (cdr["direction"], cdr["disposition"]) == ("outbound", "answered")
    row = server.wait_for_recording(int(cdr["id"]))
    assert row["status"] == "complete", row
    recording = server.data_dir / row["path"]
    audio, rate = sf.read(recording, dtype="int16", always_2d=True)
    assert rate == 8000 and audio.shape[1] == 2
    # Leg A (the phone) is channel 0: what the phone played, decrypted by callrec. The
    # reference starts 0.5 s in: the phone plays from its media start, a little before
    # the answer (the recording's first sample).
    score, _ = best_correlation(source[4000:16000], audio[:, 0])
    assert score >= 0.9, f"the recording correlates {score:.3f} with what the phone played"

    packets = udp_packets(pcap)
    sip_to_trunk = b"".join(p for s, d, p in packets if server.trunk_port in (s, d))
    encoded = {g711.ulaw_encode(source).tobytes(), g711.alaw_encode(source).tobytes()}
    signalling = {server.sip_port, server.trunk_port}
    media = [p for p in packets if not signalling & {p[0], p[1]} and p[2] != PROBE]
    if trunk_media is not None:
        trunk_leg = [p for p in media if trunk_media in (p[0], p[1])]
        phone_leg = [p for p in media if trunk_media not in (p[0], p[1])]
        assert len(phone_leg) > 100 and len(trunk_leg) > 100
        # Control: the plain trunk leg carries the phone's audio in the clear (PCMA or
        # PCMU, as negotiated); the phone leg, both ways, never does.
        assert sum(clear_audio_packets(trunk_leg, trunk_media, audio) for audio in encoded) > 50
        answer = trunk_answer(packets, server.trunk_port)
        assert b"m=audio" in answer and b"a=crypto" not in answer  # the trunk took plain
    else:
        phone_leg = media  # both legs are SRTP: no audio in the clear anywhere
        assert len(phone_leg) > 200
    for port in {p[0] for p in phone_leg} | {p[1] for p in phone_leg}:
        assert all(clear_audio_packets(phone_leg, port, audio) == 0 for audio in encoded)

    # The TLS leg: nothing of SIP in the clear ...
    tls_leg = f"tcp.port == {tls_port}"
    payload = b"".join(p for s, d, p in tcp_payloads(pcap) if tls_port in (s, d))
    assert len(payload) > 2000
    for clear_text in (b"SIP/2.0", b"INVITE ", b"Digest ", b"m=audio", b"a=crypto", b"inline:"):
        assert clear_text not in payload
    # ... and, decrypted with callrec's key log, RTP/SAVP offered and answered with SDES keys.
    key_log = server.root / "tls-keys.log"
    decrypted = decrypted_tls(pcap, tls_port, f"{tls_leg} and sdp", key_log)
    assert "RTP/SAVP" in decrypted, decrypted[-3000:]
    keys = set(INLINE_KEY.findall(decrypted))
    assert len(keys) >= 2, decrypted[-3000:]  # the phone's offer and callrec's answer
    trunk_keys = set(INLINE_KEY.findall(sip_to_trunk.decode(errors="replace")))
    assert keys.isdisjoint(trunk_keys)  # each leg has keys of its own
    keys |= trunk_keys
    places = {
        "the log": server.log().encode(),
        "the recording": recording.read_bytes(),
        **{
            str(path.relative_to(server.data_dir)): path.read_bytes()
            for path in server.data_dir.rglob("*")
            if path.is_file()
        },
    }
    for key in keys:
        material = base64.b64decode(key)
        for name, content in places.items():
            for shown in (key.encode(), material, material.hex().encode()):
                assert shown not in content, f"an SRTP key is in {name}"
    return keys


SRTP_ENABLED = r"srtp: .*SRTP is Enabled"


@contextmanager
def srtp_trunk(callrec: TlsCallrec, work: Path) -> Iterator[Baresip]:
    """The trunk as baresip over UDP with SRTP (`mediaenc=srtp`), auto-answering and
    playing a falling chirp longer than the call (it would hang up at its end)."""
    chirp(work / "answer.wav", 3000.0, 300.0, seconds=6.0)
    trunk = Baresip(
        work / "trunk",
        account=account(TRUNK_NUMBER, None, HOST, 5060, register=False, mediaenc="srtp"),
        listen=f"{HOST}:{callrec.server.trunk_port}",
        modules=["srtp.so"],
        play=work / "answer.wav",
        time_limit_s=12,
    )
    try:
        trunk.start()
        trunk.wait_for("baresip is ready", timeout=10)
        yield trunk
        trunk.wait_for(SRTP_ENABLED, timeout=5)
    finally:
        trunk.stop()


def baresip_call(callrec: TlsCallrec, pki: Pki, work: Path, before: int) -> Path:  # noqa: F811
    """User 101 on baresip over TLS with SRTP mandatory calls the trunk, playing
    `work/chirp.wav` (the call ends with it); what it heard."""
    phone = Baresip(
        work / "phone",
        account=account(
            "101", PASSWORD, HOST, callrec.tls_port, transport="tls", mediaenc="srtp-mand"
        ),
        ca=pki.ca,
        modules=["srtp.so"],
        commands=[f"/dial {TRUNK_NUMBER}"],
        time_limit_s=8,
        play=work / "chirp.wav",
    )
    try:
        phone.start()
        phone.wait_for(registered_over("tls"), timeout=10)
        phone.wait_for(CALL_ESTABLISHED, timeout=10)
        phone.wait_for(SRTP_ENABLED, timeout=5)
        callrec.server.wait_for_calls(before + 1, timeout=20)
    finally:
        phone.stop()
    return phone.heard()[-1]


def pjsua2_call(callrec: TlsCallrec, pki: Pki, work: Path, before: int) -> Path:  # noqa: F811
    """User 101 on pjsua2 (`callrec phone --transport tls --srtp mandatory`) calls the
    trunk, playing `work/chirp.wav`, and hangs up 2.5 s after the answer; what it heard."""
    server = callrec.server
    phone = PhoneProcess(
        phone_dial_args(
            f"{HOST}:{callrec.tls_port}",
            "101",
            "--password",
            PASSWORD,
            "--transport",
            "tls",
            "--tls-ca",
            str(pki.ca),
            "--srtp",
            "mandatory",
            "--play",
            str(work / "chirp.wav"),
            "--record-heard",
            str(work / "heard.wav"),
            "--hangup-after",
            "2.5",
            "--timeout",
            "20",
        )
    )
    result = phone.wait(30)
    assert result.returncode == 0, result.stderr[-3000:] + server.log()[-3000:]
    server.wait_for_calls(before + 1, timeout=20)
    return work / "heard.wav"


PHONES = {"baresip": baresip_call, "pjsua2": pjsua2_call}


@pytest.mark.parametrize("trunk_kind", ["srtp-trunk", "plain-trunk"])
@pytest.mark.parametrize("phone_kind", sorted(PHONES))
def test_a_phone_over_tls_with_srtp_is_recorded(
    callrec: TlsCallrec,
    pki: Pki,  # noqa: F811
    tmp_path: Path,
    phone_kind: str,
    trunk_kind: str,
) -> None:
    """The phone calls over TLS with SRTP mandatory. The SRTP trunk (baresip) is offered
    keys of callrec's own in the order of `[media] srtp_suites` and takes the first,
    AEAD_AES_256_GCM; each side hears the other's chirp through both legs' keys. The
    plain trunk (SIPp) answers callrec's offer (RTP/AVP with keys) plain and echoes:
    the phone hears its own chirp, and that trunk leg is the capture check's control."""
    server = callrec.server
    before = len(server.calls())
    source = chirp(tmp_path / "chirp.wav", seconds=3.0)
    call = PHONES[phone_kind]
    pcap = tmp_path / "lo.pcap"
    if trunk_kind == "srtp-trunk":
        with capturing(pcap, callrec, None), srtp_trunk(callrec, tmp_path) as trunk:
            heard = call(callrec, pki, tmp_path, before)
        keys = check_call(callrec, before, source, pcap, None)
        answer = trunk_answer(udp_packets(pcap), server.trunk_port)
        assert re.search(rb"a=crypto:4 AEAD_AES_256_GCM inline:", answer), answer
        answer_audio, _ = sf.read(tmp_path / "answer.wav", dtype="int16")
        assert heard_well(answer_audio, heard)  # the trunk's chirp reached the phone
        assert heard_well(source, trunk.heard()[-1])  # and the phone's, the trunk
    else:
        trunk_media = free_port(even=True, span=4)
        with capturing(pcap, callrec, trunk_media):
            sipp = server.start_sipp_trunk(tmp_path / "uas", media_port=trunk_media, timeout_s=30)
            try:
                heard = call(callrec, pki, tmp_path, before)
            except BaseException:
                sipp.stop(grace_s=1.0)
                raise
            result = sipp.wait()
            assert result.ok, result.summary()
        keys = check_call(callrec, before, source, pcap, trunk_media)
        assert heard_well(source, heard)  # the SIPp trunk echoes
    if phone_kind == "pjsua2":
        assert len(keys) >= 3  # pjsua2 offers several suites, each with its key
