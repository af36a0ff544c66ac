"""Tests of the test tools themselves, without callrec in the middle.

SIPp UAC against SIPp UAS, and `callrec phone` (callrec_phone.phone) against `callrec phone` or
SIPp, all on 127.0.0.1. Each phone runs in its own process (one pjsua2 Endpoint per
process). RTP is counted on `lo` with an AF_PACKET socket, which needs root.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callrec_phone.phone import PhoneProcess, PhoneResult, parse_options, split_host_port
from testkit.audio import tone_wav
from testkit.harness import phone_answer_args, phone_dial_args
from testkit.rtp_counter import RtpCounter, count_pcap_rtp_packets, udp_ports
from testkit.sipp_runner import (
    DTMF_ONE_PCAP,
    DTMF_STAR_PCAP,
    G711A_PCAP,
    SippResult,
    environment_ok,
    free_port,
    run_sipp,
    start_sipp,
    write_rtp_pcap,
)

G711A_PCAP_PACKETS = 236  # RTP packets in sip-tester's g711a.pcap (7.05 s of 30 ms frames)
DTMF_FREQUENCIES = {"*": (941, 1209), "1": (697, 1209)}


@pytest.fixture(autouse=True)
def _tools_installed() -> None:
    problem = environment_ok()
    # A missing tool is a failure, never a silent skip (issue 5).
    assert problem is None, problem


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path


def sipp_pair(
    uas: str,
    uac: str,
    work_dir: Path,
    *,
    call_length_ms: int = 1000,
    uas_call_length_ms: int = 500,
    pcap: Path | None = None,
    counter_ports: int = 0,
) -> tuple[SippResult, SippResult, int, int, RtpCounter | None]:
    """Run one call from a SIPp UAC to a SIPp UAS (with -rtp_echo) on loopback."""
    uas_port, uac_port = free_port(), free_port()
    uas_media, uac_media = free_port(even=True, span=4), free_port(even=True, span=4)
    counter = None
    if counter_ports:
        counter = RtpCounter(range(min(uas_media, uac_media), max(uas_media, uac_media) + 4))
        counter.start()
    server = start_sipp(
        uas,
        work_dir=work_dir / "uas",
        local_port=uas_port,
        media_port=uas_media,
        rtp_echo=True,
        call_length_ms=uas_call_length_ms,
        timeout_s=20,
        user="201",
        password="secret",
    )
    try:
        client = run_sipp(
            uac,
            work_dir=work_dir / "uac",
            remote=f"127.0.0.1:{uas_port}",
            local_port=uac_port,
            media_port=uac_media,
            callee="300",
            caller="201",
            password="secret",
            call_length_ms=call_length_ms,
            pcap=pcap,
            timeout_s=20,
            trace_messages=True,
        )
        # SIPp's echo answers from the media port; give the last echoes time to land.
        server_result = server.wait(timeout_s=25)
    finally:
        server.__exit__(None, None, None)
        if counter is not None:
            counter.stop()
    return client, server_result, uas_media, uac_media, counter


# ---------------------------------------------------------------- RTP counting


def test_pcap_counter_reads_sipp_pcaps() -> None:
    assert count_pcap_rtp_packets(str(G711A_PCAP)) == G711A_PCAP_PACKETS
    assert count_pcap_rtp_packets(str(DTMF_STAR_PCAP)) == 10
    assert count_pcap_rtp_packets(str(DTMF_ONE_PCAP)) == 10


def test_udp_ports_parses_only_udp() -> None:
    frame = b"\x00" * 12 + b"\x08\x00" + bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0])
    frame += b"\x7f\x00\x00\x01" * 2 + struct.pack("!HHHH", 4000, 5000, 8, 0)
    assert udp_ports(frame) == (4000, 5000)
    tcp = frame[:23] + b"\x06" + frame[24:]
    assert udp_ports(tcp) is None
    assert udp_ports(frame[:20]) is None


def test_rtp_counter_counts_what_a_socket_sends() -> None:
    import socket

    port = free_port(even=True, span=2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", port))
        with (
            RtpCounter(range(port, port + 1)) as counter,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        ):
            for _ in range(57):
                sender.sendto(b"\x80" + b"\x00" * 171, ("127.0.0.1", port))
            # Not in the range: must not be counted.
            sender.sendto(b"x", ("127.0.0.1", port + 1))
    assert counter.destination_counts == {port: 57}
    assert counter.kernel_drops == 0


def test_sipp_pcap_playback_arrives_whole_at_the_uas(work_dir: Path) -> None:
    client, server, uas_media, uac_media, counter = sipp_pair(
        "uas_echo", "uac_auth_pcap", work_dir, call_length_ms=7300, counter_ports=4
    )
    assert client.ok, client.summary()
    assert server.ok, server.summary()
    assert counter is not None
    sent = count_pcap_rtp_packets(str(G711A_PCAP))
    # Everything the UAC played arrived at the UAS media port...
    assert counter.destination_counts.get(uas_media) == sent
    # ...and SIPp's echo read every one of them (it answers each from that port).
    assert counter.source_counts.get(uas_media) == sent
    assert counter.destination_counts.get(uac_media) == sent
    assert client.response_times_ms, "rtd INVITE->200 was traced"


# ---------------------------------------------------------------- SIPp scenarios


def test_sipp_uac_answers_a_407_challenge(work_dir: Path) -> None:
    client, server, *_ = sipp_pair("uas_auth_echo", "uac_auth_pcap", work_dir)
    assert client.ok, client.summary()
    assert server.ok, server.summary()
    messages = (work_dir / "uac" / "uac_auth_pcap.messages").read_text()
    assert "Proxy-Authorization: Digest" in messages
    assert "CSeq: 2 INVITE" in messages


def test_sipp_uac_cancel_gets_487(work_dir: Path) -> None:
    client, server, *_ = sipp_pair("uas_ringing", "uac_cancel", work_dir, call_length_ms=300)
    assert client.ok, client.summary()
    assert server.ok, server.summary()
    messages = (work_dir / "uac" / "uac_cancel.messages").read_text()
    assert "SIP/2.0 487 Request Terminated" in messages


def test_sipp_busy_and_its_failure_when_answered(work_dir: Path) -> None:
    client, server, *_ = sipp_pair("uas_busy", "uac_busy", work_dir / "busy")
    assert client.ok, client.summary()
    assert server.ok, server.summary()
    # The same UAC fails against a callee that answers: the scenario does check.
    client, _server, *_ = sipp_pair("uas_echo", "uac_busy", work_dir / "answered")
    assert not client.ok
    assert client.failed_calls == 1


def test_sipp_hold_and_resume(work_dir: Path) -> None:
    client, server, *_ = sipp_pair("uas_echo", "uac_hold", work_dir, call_length_ms=500)
    assert client.ok, client.summary()
    assert server.ok, server.summary()
    messages = (work_dir / "uac" / "uac_hold.messages").read_text()
    assert "a=sendonly" in messages and "a=recvonly" in messages


def test_sipp_early_media(work_dir: Path) -> None:
    client, server, *_ = sipp_pair("uas_early_media", "uac_auth_pcap", work_dir)
    assert client.ok, client.summary()
    assert server.ok, server.summary()
    assert "183 Session Progress" in (work_dir / "uac" / "uac_auth_pcap.messages").read_text()
    assert client.response_times_ms and client.response_times_ms[0] >= 400


def test_sipp_rfc4733_digits_arrive(work_dir: Path) -> None:
    client, server, uas_media, _uac_media, counter = sipp_pair(
        "uas_echo", "uac_dtmf", work_dir, call_length_ms=300, counter_ports=4
    )
    assert client.ok, client.summary()
    assert server.ok, server.summary()
    assert counter is not None
    assert counter.destination_counts.get(uas_media) == 20  # 10 packets per digit pcap


def test_generated_stream_with_two_feature_codes(work_dir: Path) -> None:
    pcap = work_dir / "stream.pcap"
    digits = [(0.5, "*"), (0.8, "1"), (2.0, "*"), (2.3, "1")]
    packets = write_rtp_pcap(pcap, duration_s=3.0, digits=digits)
    assert count_pcap_rtp_packets(str(pcap)) == packets
    # Audio and events share one SSRC, one sequence (end packets repeated 3x) and clock.
    data = pcap.read_bytes()
    offset, rows = 24, []
    while offset < len(data):
        _s, _us, length, _orig = struct.unpack_from("<IIII", data, offset)
        rtp = data[offset + 16 + 42 : offset + 16 + length]
        offset += 16 + length
        _b0, b1, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", rtp)
        rows.append((b1 & 0x7F, sequence, timestamp, ssrc, rtp[12:13]))
    assert {row[3] for row in rows} == {0x43414C4C}
    events = [row for row in rows if row[0] == 101]
    assert {row[2] for row in events} == {4000, 6400, 16000, 18400}
    assert next(row[4] for row in events if row[2] in (4000, 16000)) == b"\x0a"
    sequences = sorted({row[1] for row in rows})
    assert sequences == list(range(len(sequences)))
    client, server, uas_media, _uac_media, counter = sipp_pair(
        "uas_echo", "uac_auth_pcap", work_dir, call_length_ms=3300, pcap=pcap, counter_ports=4
    )
    assert client.ok and server.ok, client.summary()
    assert counter is not None
    assert counter.destination_counts.get(uas_media) == packets


# ---------------------------------------------------------------- callrec phone


def test_phone_options() -> None:
    options = parse_options(["dial", "300", "--via", "127.0.0.1:5070", "--as", "201"])
    assert options.target_uri() == "sip:300@127.0.0.1:5070"
    options = parse_options(
        [
            "dial",
            "300",
            "--via",
            "127.0.0.1:5070",
            "--as",
            "201",
            "--transport",
            "tcp",
            "--digits",
            "*1",
            "--cancel-after",
            "1",
        ]
    )
    assert options.target_uri() == "sip:300@127.0.0.1:5070;transport=tcp"
    assert options.digits_at == [1.0] and options.expect_status == 487
    assert split_host_port("[::1]:5062") == ("::1", 5062)
    with pytest.raises(SystemExit):
        parse_options(["dial", "300", "--via", "x", "--as", "1", "--resume-at", "2"])


def band_levels(path: Path, frequencies: list[float], block_ms: int = 40) -> np.ndarray:
    """Per block of the WAV, the amplitude at each frequency (blocks x frequencies)."""
    audio, rate = soundfile.read(path, dtype="float64")
    assert rate == 8000
    block = rate * block_ms // 1000
    blocks = audio[: len(audio) // block * block].reshape(-1, block)
    t = np.arange(block) / rate
    basis = np.exp(-2j * np.pi * np.outer(t, frequencies))
    levels: np.ndarray = np.abs(blocks @ basis) * 2 / block
    return levels


def detected_digits(path: Path) -> str:
    """DTMF digits heard in a WAV (both tones of a pair clearly above the rest)."""
    rows = [697.0, 770.0, 852.0, 941.0]
    columns = [1209.0, 1336.0, 1477.0, 1633.0]
    keys = ["123A", "456B", "789C", "*0#D"]
    levels = band_levels(path, rows + columns)
    row = levels[:, :4].argmax(axis=1)
    column = levels[:, 4:].argmax(axis=1)
    strong = (levels[:, :4].max(axis=1) > 0.02) & (levels[:, 4:].max(axis=1) > 0.02)
    digits, previous = [], ""
    for index in range(len(levels)):
        digit = keys[row[index]][column[index]] if strong[index] else ""
        if digit and digit != previous:
            digits.append(digit)
        previous = digit
    return "".join(digits)


def run_phone_pair(
    answer_args: list[str], dial_args: list[str], timeout_s: float = 20.0
) -> tuple[PhoneResult, PhoneResult]:
    port = free_port()
    callee = PhoneProcess(
        phone_answer_args(
            "127.0.0.1:5060",
            "bob",
            "--local-port",
            str(port),
            "--timeout",
            str(timeout_s),
            *answer_args,
        )
    )
    try:
        callee.wait_for("started")
        caller = PhoneProcess(
            phone_dial_args(
                f"127.0.0.1:{port}",
                "alice",
                "--timeout",
                str(timeout_s),
                *dial_args,
                callee="bob",
            )
        )
        dialled = caller.wait(timeout_s + 10)
        answered = callee.wait(timeout_s + 10)
    finally:
        callee.kill()
    return dialled, answered


@pytest.fixture
def tone(tmp_path: Path) -> Iterator[Path]:
    yield tone_wav(tmp_path / "tone.wav")


@pytest.mark.parametrize("method", ["rfc2833", "info", "inband"])
def test_phone_to_phone_audio_and_digits(method: str, tmp_path: Path, tone: Path) -> None:
    heard = tmp_path / "heard.wav"
    play = [] if method == "inband" else ["--play", str(tone)]
    dialled, answered = run_phone_pair(
        ["--record-heard", str(heard)],
        [*play, "--digits", "*1", "--dtmf-method", method, "--at", "0.5", "--hangup-after", "2"],
    )
    assert dialled.returncode == 0, dialled
    assert answered.returncode == 0, answered
    assert dialled.named("disconnected")[0]["status"] == 200
    if method == "inband":
        # pjsua2 has no in-band detector: the tones must be in what the callee heard.
        assert answered.named("dtmf_received") == []
        assert detected_digits(heard) == "*1"
    else:
        received = [(e["digit"], e["method"]) for e in answered.named("dtmf_received")]
        assert received == [("*", method), ("1", method)]
        levels = band_levels(heard, [1000.0, 1500.0])
        assert np.median(levels[:, 0]) > 0.1  # the played 1 kHz tone (0.3 peak)
        assert np.median(levels[:, 1]) < 0.01


def test_phone_hold_and_resume(tmp_path: Path, tone: Path) -> None:
    dialled, answered = run_phone_pair(
        [],
        ["--play", str(tone), "--hold-at", "0.5", "--resume-at", "1.2", "--hangup-after", "2"],
    )
    assert dialled.returncode == 0, dialled
    assert [e["state"] for e in dialled.named("media")] == ["active", "hold", "active"]
    assert [e["state"] for e in answered.named("media")] == ["active", "remote_hold", "active"]


def test_phone_busy(tmp_path: Path) -> None:
    dialled, answered = run_phone_pair(["--busy"], ["--expect-status", "486"])
    assert dialled.returncode == 0, dialled
    assert answered.returncode == 0, answered
    assert dialled.named("disconnected")[0]["status"] == 486
    # Without --expect-status a refused call is a failure.
    dialled, _answered = run_phone_pair(["--busy"], [])
    assert dialled.returncode == 1


def test_phone_cancel_before_answer(tmp_path: Path) -> None:
    dialled, answered = run_phone_pair(["--answer-after", "10"], ["--cancel-after", "0.5"])
    assert dialled.returncode == 0, dialled
    assert [e["status"] for e in dialled.named("progress")][:1] == [180]
    assert dialled.named("disconnected")[0]["status"] == 487
    assert answered.named("confirmed") == []
    assert answered.returncode == 1  # the callee was asked for an answered call


def test_phone_over_tcp(tmp_path: Path, tone: Path) -> None:
    dialled, answered = run_phone_pair(
        ["--transport", "tcp"], ["--transport", "tcp", "--hangup-after", "0.5"]
    )
    assert dialled.returncode == 0, dialled
    assert answered.returncode == 0, answered
    assert answered.named("started")[0]["transport"] == "tcp"


def test_phone_registers_and_takes_a_sipp_call(work_dir: Path) -> None:
    registrar_port, phone_port = free_port(), free_port()
    registrar = start_sipp(
        "uas_registrar",
        work_dir=work_dir / "registrar",
        local_port=registrar_port,
        timeout_s=20,
        user="201",
        password="secret",
    )
    phone = PhoneProcess(
        phone_answer_args(
            f"127.0.0.1:{registrar_port}",
            "201",
            "--register",
            "--password",
            "secret",
            "--local-port",
            str(phone_port),
            "--timeout",
            "15",
        )
    )
    try:
        phone.wait_for("registered", 10)
        client = run_sipp(
            "uac_auth_pcap",
            work_dir=work_dir / "uac",
            remote=f"127.0.0.1:{phone_port}",
            local_port=free_port(),
            media_port=free_port(even=True, span=4),
            callee="201",
            caller="300",
            call_length_ms=1000,
            timeout_s=15,
        )
        result = phone.wait(25)
        registrar_result = registrar.wait(25)
    finally:
        phone.kill()
        registrar.__exit__(None, None, None)
    assert client.ok, client.summary()
    assert result.returncode == 0, result
    assert [e["event"] for e in result.events][-3:] == ["disconnected", "unregistered", "done"]
    assert registrar_result.ok, registrar_result.summary()


def test_phone_rtp_reaches_a_sipp_trunk_and_echo_comes_back(work_dir: Path, tone: Path) -> None:
    trunk_port, trunk_media = free_port(), free_port(even=True, span=4)
    heard = work_dir / "heard.wav"
    with RtpCounter(range(trunk_media, trunk_media + 1)) as counter:
        trunk = start_sipp(
            "uas_echo",
            work_dir=work_dir / "trunk",
            local_port=trunk_port,
            media_port=trunk_media,
            rtp_echo=True,
            timeout_s=20,
        )
        phone = PhoneProcess(
            phone_dial_args(
                f"127.0.0.1:{trunk_port}",
                "201",
                "--play",
                str(tone),
                "--record-heard",
                str(heard),
                "--hangup-after",
                "2",
            )
        )
        result = phone.wait(25)
        trunk_result = trunk.wait(25)
    assert result.returncode == 0, result
    assert trunk_result.ok, trunk_result.summary()
    arrived = counter.destination_counts.get(trunk_media, 0)
    echoed = counter.source_counts.get(trunk_media, 0)
    # 20 ms packets for ~2 s of call, silence included (VAD is off).
    assert 90 <= arrived <= 115, counter.destination_counts
    assert echoed == arrived
    assert np.median(band_levels(heard, [1000.0])[10:, 0]) > 0.1


def test_phone_answers_a_407_from_the_far_end(work_dir: Path) -> None:
    trunk_port = free_port()
    trunk = start_sipp(
        "uas_auth_echo",
        work_dir=work_dir / "trunk",
        local_port=trunk_port,
        media_port=free_port(even=True, span=4),
        rtp_echo=True,
        timeout_s=20,
        trace_messages=True,
    )
    phone = PhoneProcess(
        phone_dial_args(
            f"127.0.0.1:{trunk_port}", "201", "--password", "secret", "--hangup-after", "0.5"
        )
    )
    result = phone.wait(25)
    trunk_result = trunk.wait(25)
    assert result.returncode == 0, result
    assert trunk_result.ok, trunk_result.summary()
    messages = (work_dir / "trunk" / "uas_auth_echo.messages").read_text()
    assert 'Proxy-Authorization: Digest username="201"' in messages
