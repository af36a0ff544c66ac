"""End-to-end SRTP: a pjsua2 phone with SRTP mandatory (SDES over plain UDP SIP) calls
through a real `callrec serve` to a trunk that is a second pjsua2 endpoint, plain RTP
(`[trunk] srtp = "off"`) or SRTP (`[trunk] srtp = "require"`); and to a SIPp trunk that
answers plain, which a required trunk may not do.

Each call is captured on `lo` with tshark. The capture shows that the phone leg's RTP
never carries the phone's G.711 audio in the clear (while the plain trunk leg does: the
check can fail), and gives the SDES keys that were on the wire, which must not be in
callrec's log (at DEBUG), its database or the recording.
"""

from __future__ import annotations

import base64
import re
import shutil
import signal
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from callrec_phone.phone import PhoneProcess, PhoneResult
from media import g711
from testkit.audio import best_correlation, chirp
from testkit.harness import CallrecServer, make_server
from testkit.rtp_counter import udp_datagram
from testkit.waiting import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
]

PASSWORD = "pw-201"
WINDOW = 24  # bytes of G.711 that would betray the audio in a packet
CRYPTO_KEY = re.compile(rb"a=crypto:\d+ \w+ inline:([A-Za-z0-9+/=]+)")


def srtp_server(root: Path, trunk_srtp: str) -> CallrecServer:
    server = make_server(root, '[recording]\nannouncement = "none"\n')
    server.extra_env["CALLREC_LOG_LEVEL"] = "DEBUG"  # keys must not appear even there
    text = server.config_path.read_text()
    server.config_path.write_text(text.replace("[trunk]\n", f'[trunk]\nsrtp = "{trunk_srtp}"\n'))
    server.add_user("201", "Alice Martin", PASSWORD, "--mode", "always")
    return server


@pytest.fixture(scope="module")
def plain_trunk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    yield from srtp_server(tmp_path_factory.mktemp("srtp-off"), "off").serving()


@pytest.fixture(scope="module")
def srtp_trunk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    yield from srtp_server(tmp_path_factory.mktemp("srtp-require"), "require").serving()


@contextmanager
def capture(path: Path, capture_filter: str = "udp") -> Iterator[None]:
    """tshark on lo (UDP only, unless `capture_filter` says otherwise), into a classic
    pcap; stopped by its PID."""
    process = subprocess.Popen(
        ["tshark", "-i", "lo", "-f", capture_filter, "-F", "pcap", "-w", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        seen: list[str] = []

        def capturing() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"tshark exited: {''.join(seen)}{process.stderr.read()}")
            seen.append(process.stderr.readline())
            return "Capturing on" in seen[-1]

        wait_until(capturing, timeout=20, what="tshark capturing", interval=0)
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def udp_packets(path: Path) -> list[tuple[int, int, bytes]]:
    """(source port, destination port, payload) of each UDP packet in a classic pcap."""
    data = path.read_bytes()
    magic = data[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    (link,) = struct.unpack_from(order + "I", data, 20)
    packets = []
    offset = 24
    while offset + 16 <= len(data):
        _, _, captured, _ = struct.unpack_from(order + "IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        if link == 113:  # Linux cooked capture: make it look like Ethernet
            frame = bytes(12) + frame[14:16] + frame[16:]
        datagram = udp_datagram(frame)
        if datagram is not None:
            packets.append(datagram)
    return packets


def rtp_port(result: PhoneResult) -> int:
    media = [e for e in result.events if e["event"] == "media" and e.get("local_rtp")]
    assert media, result.events
    return int(str(media[-1]["local_rtp"]).rsplit(":", 1)[1])


def clear_audio_packets(packets: list[tuple[int, int, bytes]], port: int, audio: bytes) -> int:
    """How many RTP packets to or from `port` carry a run of `audio` in the clear."""
    windows = {audio[i : i + WINDOW] for i in range(0, len(audio) - WINDOW)}
    found = 0
    for source, destination, payload in packets:
        if port not in (source, destination) or len(payload) < 12 + WINDOW:
            continue
        body = payload[12:]
        if any(body[i : i + WINDOW] in windows for i in range(0, len(body) - WINDOW, 4)):
            found += 1
    return found


def keys_on_the_wire(packets: list[tuple[int, int, bytes]]) -> set[bytes]:
    return {key for *_, payload in packets for key in CRYPTO_KEY.findall(payload)}


def assert_keys_kept_secret(server: CallrecServer, keys: set[bytes], recording: Path) -> None:
    places = {
        "the log": server.log().encode(),
        "the recording": recording.read_bytes(),
        **{
            path.name: path.read_bytes()
            for path in server.data_dir.rglob("*")
            if path.is_file() and path.suffix != ".wav"
        },
    }
    for key in keys:
        material = base64.b64decode(key)
        for name, content in places.items():
            for shown in (key, material, material.hex().encode()):
                assert shown not in content, f"an SRTP key is in {name}"


def call_through(
    server: CallrecServer, tmp_path: Path, trunk_srtp: str
) -> tuple[PhoneResult, PhoneResult, list[tuple[int, int, bytes]], np.ndarray]:  # type: ignore[type-arg]
    source = chirp(tmp_path / "chirp.wav")
    before = len(server.calls())
    trunk = PhoneProcess(
        server.trunk_phone_args(
            "--srtp", trunk_srtp, "--record-heard", str(tmp_path / "trunk-heard.wav")
        )
    )
    trunk.wait_for("started", 15)
    pcap = tmp_path / "lo.pcap"
    with capture(pcap):
        phone = PhoneProcess(
            server.dial_args(
                "201",
                PASSWORD,
                "--srtp",
                "mandatory",
                "--play",
                str(tmp_path / "chirp.wav"),
                "--hangup-after",
                "3.5",
            )
        )
        dialled = phone.wait(40)
        answered = trunk.wait(40)
    assert dialled.returncode == 0, dialled.stderr[-3000:] + server.log()[-3000:]
    assert answered.returncode == 0, answered.stderr[-3000:]
    cdr = server.wait_for_calls(before + 1)[0]
    row = server.wait_for_recording(int(cdr["id"]))
    assert row["status"] == "complete", row
    recording = server.data_dir / row["path"]
    audio, rate = sf.read(recording, dtype="int16", always_2d=True)
    assert rate == 8000
    # What the phone played is in the recording (mono: the trunk phone sends silence).
    # The reference starts 0.5 s into the chirp: the phone starts playing as its media
    # starts, a little before the recording's first sample (the answer).
    correlation, _ = best_correlation(source[4000:20000], audio[:, 0])
    assert correlation >= 0.9, correlation
    # ...and reached the trunk, decrypted by callrec (and re-encrypted for an SRTP trunk).
    # What a pjsua2 phone hears went through its jitter buffer, which may stretch or
    # conceal a frame here and there: a quarter second of the chirp heard intact is
    # the proof (noise, as audio still encrypted or under a wrong key, stays near 0).
    heard, _ = sf.read(tmp_path / "trunk-heard.wav", dtype="int16")
    pieces = [source[start : start + 2000] for start in range(4000, 20000, 2000)]
    assert max(best_correlation(piece, heard)[0] for piece in pieces) >= 0.9
    packets = udp_packets(pcap)
    encoded = g711.ulaw_encode(source).tobytes()
    phone_port = rtp_port(dialled)
    assert sum(1 for s, d, _ in packets if phone_port in (s, d)) > 100
    # The phone leg never carries the played audio in the clear.
    assert clear_audio_packets(packets, phone_port, encoded) == 0
    ours = {server.sip_port, server.trunk_port}
    keys = keys_on_the_wire([p for p in packets if ours & {p[0], p[1]}])
    assert len(keys) >= 4  # the phone's (4 suites), callrec's answer to it, ...
    assert_keys_kept_secret(server, keys, recording)
    return dialled, answered, packets, source


def test_srtp_phone_to_a_plain_trunk(plain_trunk: CallrecServer, tmp_path: Path) -> None:
    _, answered, packets, source = call_through(plain_trunk, tmp_path, "off")
    # The control: the plain trunk leg carries the phone's audio in the clear, so the
    # check that finds none on the phone leg can find it.
    trunk_port = rtp_port(answered)
    assert clear_audio_packets(packets, trunk_port, g711.ulaw_encode(source).tobytes()) > 50
    sip = b"".join(p for s, d, p in packets if plain_trunk.trunk_port in (s, d))
    assert b"a=crypto" not in sip and b"RTP/AVP" in sip  # nothing of SRTP toward this trunk


def test_srtp_phone_to_an_srtp_trunk(srtp_trunk: CallrecServer, tmp_path: Path) -> None:
    _, answered, packets, source = call_through(srtp_trunk, tmp_path, "mandatory")
    trunk_port = rtp_port(answered)
    assert clear_audio_packets(packets, trunk_port, g711.ulaw_encode(source).tobytes()) == 0
    sip = b"".join(p for s, d, p in packets if srtp_trunk.trunk_port in (s, d))
    assert b"RTP/SAVP" in sip
    # Each leg has keys of its own: none offered to the trunk is one the phone saw.
    phone_sip = b"".join(
        p
        for s, d, p in packets
        if srtp_trunk.sip_port in (s, d) and srtp_trunk.trunk_port not in (s, d)
    )
    assert keys_on_the_wire([(0, 0, sip)]).isdisjoint(keys_on_the_wire([(0, 0, phone_sip)]))


def test_a_required_trunk_that_answers_plain_fails_the_call_with_488(
    srtp_trunk: CallrecServer, tmp_path: Path
) -> None:
    before = len(srtp_trunk.calls())
    trunk = srtp_trunk.start_sipp_trunk(tmp_path / "uas", timeout_s=20)
    try:
        phone = PhoneProcess(
            srtp_trunk.dial_args("201", PASSWORD, "--srtp", "mandatory", "--expect-status", "488")
        )
        result = phone.wait(30)
        assert result.returncode == 0, result.stderr[-3000:] + srtp_trunk.log()[-3000:]
    finally:
        trunk.stop(grace_s=2.0)
    cdr = srtp_trunk.wait_for_calls(before + 1)[0]
    assert cdr["disposition"] == "failed" and cdr["sip_status"] == 488
    assert "the trunk answered without SRTP" in srtp_trunk.log()
