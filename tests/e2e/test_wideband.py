"""End-to-end, issue 14: wideband calls recorded at 16 kHz, and the feature code and SIP
INFO interworking through a trunk that answers without telephone-event.

The trunk is SIPp (`testkit/sipp/uas_media_keys.xml`) whose SDP names a raw UDP socket
of this test (`UdpMedia`), which echoes and keeps every RTP packet, so the test can
count payload types at the trunk. The Opus phone is SIPp (`uac_media_keys.xml`) for the
signalling and a raw UDP socket that encodes with PyAV for the media.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from callrec_phone.phone import PhoneProcess
from media.codecs import encode_payloads
from testkit.audio import best_correlation
from testkit.harness import CallrecServer, make_server
from testkit.sipp_runner import SippProcess, free_port, start_sipp, write_rtp_pcap
from testkit.waiting import wait_until

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
RATE = 16000
TELEPHONE_EVENT = 101


class UdpMedia:
    """A raw RTP socket on loopback: keeps what arrives (and, as a trunk, echoes it
    back to where it came from); `send` sends from the same socket."""

    def __init__(self, *, echo: bool) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.echo = echo
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append(data)
            if self.echo:
                self.sock.sendto(data, source)

    def payload_types(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for data in self.received:
            if len(data) >= 12:
                counts[data[1] & 0x7F] = counts.get(data[1] & 0x7F, 0) + 1
        return counts

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def media() -> Iterator[list[UdpMedia]]:
    made: list[UdpMedia] = []
    yield made
    for endpoint in made:
        endpoint.close()


def start_trunk(
    server: CallrecServer, work: Path, rtp: UdpMedia, *, formats: str, pt: int, rtpmap: str
) -> SippProcess:
    return start_sipp(
        "uas_media_keys.xml",
        work_dir=work,
        timeout_s=40,
        ready_wait_s=10,
        local_port=server.trunk_port,
        media_port=free_port(even=True, span=4),
        keys={"rtp_port": str(rtp.port), "formats": formats, "pt": str(pt), "rtpmap": rtpmap},
        trace_messages=True,
    )


def infos_received(work: Path) -> list[bytes]:
    """The bodies of the INFO requests the SIPp trunk received (its -trace_msg)."""
    text = (work / "uas_media_keys.messages").read_bytes()
    bodies = []
    for block in text.split(b"INFO sip:")[1:]:
        headers, _, rest = block.partition(b"\r\n\r\n")
        if b"Content-Type: application/dtmf-relay" in headers:
            bodies.append(rest[: rest.find(b"\r\n", rest.find(b"Duration")) + 2])
    return bodies


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(
        tmp_path_factory.mktemp("callrec-wideband"),
        extra_config='[recording]\nannouncement = "none"\nchannels = "stereo"\n',
        media_config='dtmf_interworking = "info"\n',
        sipp=True,
    )
    srv.add_user("201", "Alice On-demand", "pw-201", "--mode", "on-demand")
    srv.add_user("202", "Bob Always", "pw-202", "--mode", "always")
    yield from srv.serving()


def recorded(server: CallrecServer, before: int) -> tuple[dict[str, object], npt.NDArray[np.int16]]:
    call = server.wait_for_calls(before + 1)[0]
    recording = server.wait_for_recording(int(call["id"]))
    audio, rate = sf.read(server.data_dir / str(recording["path"]), dtype="int16")
    assert rate == recording["sample_rate"] == RATE, (rate, recording)
    return recording, np.asarray(audio)


def wide_chirp(
    seconds: float, low: float = 300.0, high: float = 6500.0, rate: int = RATE
) -> npt.NDArray[np.int16]:
    """A sweep into the upper band that only wideband carries (G.711 stops at 3.4 kHz),
    sampled at `rate`."""
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * (low * t + (high - low) * t * t / (2 * seconds))
    return (0.4 * 32767 * np.sin(phase)).astype(np.int16)


def test_a_g722_pjsua_call_is_recorded_at_16_khz(
    server: CallrecServer, tmp_path: Path, media: list[UdpMedia]
) -> None:
    before = len(server.calls())
    trunk_rtp = UdpMedia(echo=True)
    media.append(trunk_rtp)
    trunk = start_trunk(
        server, tmp_path / "uas", trunk_rtp, formats="9 101", pt=9, rtpmap="G722/8000"
    )
    played = wide_chirp(3.0)
    sf.write(tmp_path / "chirp.wav", played, RATE, subtype="PCM_16")
    phone = PhoneProcess(
        server.dial_args(
            "202",
            "pw-202",
            "--codec",
            "g722",
            "--play",
            str(tmp_path / "chirp.wav"),
            "--hangup-after",
            "4",
        )
    )
    result = phone.wait(40)
    assert result.returncode == 0, result.events
    [media_event] = [e for e in result.named("media") if e.get("codec")][:1] or [{}]
    assert "G722" in str(media_event.get("codec", "")), result.events
    assert trunk.wait().ok
    assert set(trunk_rtp.payload_types()) == {9}, trunk_rtp.payload_types()
    recording, audio = recorded(server, before)
    assert recording["status"] == "complete", recording
    # The phone's leg (channel 0): the sweep it played, correlated over one period.
    score, _ = best_correlation(played[RATE // 2 : 5 * RATE // 2], audio[:, 0])
    assert score >= 0.9, f"G.722 recording correlates {score:.3f} with what the phone played"


def test_an_opus_call_from_a_raw_udp_phone_is_recorded_at_16_khz(
    server: CallrecServer, tmp_path: Path, media: list[UdpMedia]
) -> None:
    before = len(server.calls())
    trunk_rtp = UdpMedia(echo=True)
    phone_rtp = UdpMedia(echo=False)
    media += [trunk_rtp, phone_rtp]
    opus = {"formats": "111 101", "pt": 111, "rtpmap": "opus/48000/2"}
    trunk = start_trunk(server, tmp_path / "uas", trunk_rtp, **opus)  # type: ignore[arg-type]
    port_file = tmp_path / "callrec_port"
    phone = server.start_sipp_phone(
        tmp_path / "uac",
        "uac_media_keys.xml",
        caller="202",
        password="pw-202",
        call_length_ms=4500,
        timeout_s=40,
        ready_wait_s=0,
        keys={
            "rtp_port": str(phone_rtp.port),
            "port_file": str(port_file),
            **{k: str(v) for k, v in opus.items()},
        },
    )
    callrec_port = wait_until(
        lambda: (
            port_file.exists()
            and port_file.read_text().strip().isdigit()
            and int(port_file.read_text())
        ),
        timeout=15,
        what="the answer's RTP port",
        interval=0.02,
    )
    spoken = wide_chirp(3.0)
    pcm48 = np.repeat(spoken, 3)  # 48 kHz for the encoder (the recorder filters it)
    payloads = encode_payloads("OPUS", pcm48, 48000)
    # Paced at 20 ms on the wall clock: the relay records by timestamp, but a burst
    # would overrun the recorder's reorder window.
    ticker = threading.Event()
    for index, payload in enumerate(payloads):
        header = struct.pack(
            "!BBHII", 0x80, 111 | (0x80 if index == 0 else 0), index, 960 * index, 0x0905
        )
        phone_rtp.sock.sendto(header + payload, (HOST, callrec_port))
        ticker.wait(0.02)
    assert phone.wait().ok
    assert trunk.wait().ok
    echoed = [d for d in trunk_rtp.received if d[1] & 0x7F == 111]
    assert len(echoed) >= len(payloads) - 2  # the trunk got the phone's Opus
    recording, audio = recorded(server, before)
    assert recording["status"] == "complete", recording
    score, _ = best_correlation(spoken[RATE // 2 : 5 * RATE // 2], audio[:, 0])
    assert score >= 0.9, f"Opus recording correlates {score:.3f} with what the phone sent"


def test_rfc4733_code_through_a_trunk_without_telephone_event_and_keys_as_info(
    server: CallrecServer, tmp_path: Path, media: list[UdpMedia]
) -> None:
    """The phone (SIPp playing RFC 4733 events) keys `*1`, then `5`; the trunk answered
    PCMA only. callrec records from the code, the trunk gets no event packet, and `5`
    (only `5`) reaches it as SIP INFO (`[media] dtmf_interworking = "info"`)."""
    before = len(server.calls())
    trunk_rtp = UdpMedia(echo=True)
    media.append(trunk_rtp)
    trunk = start_trunk(server, tmp_path / "uas", trunk_rtp, formats="8", pt=8, rtpmap="PCMA/8000")
    pcap = tmp_path / "keys.pcap"
    write_rtp_pcap(pcap, duration_s=5.0, digits=[(1.0, "*"), (1.2, "1"), (3.0, "5")])
    phone = server.run_sipp_phone(
        tmp_path / "uac",
        caller="201",
        password="pw-201",
        pcap=pcap,
        call_length_ms=5500,
        timeout_s=40,
    )
    assert phone.ok, phone.summary()
    assert trunk.wait().ok
    counts = trunk_rtp.payload_types()
    assert TELEPHONE_EVENT not in counts and counts.get(8, 0) > 200, counts
    assert infos_received(tmp_path / "uas") == [b"Signal=5\r\nDuration=160\r\n"]
    call = server.wait_for_calls(before + 1)[0]
    recording = server.wait_for_recording(int(call["id"]))
    [(start, _end)] = recording["segments"]
    assert abs(start - 1.2) <= 0.1, recording["segments"]  # from the code's `1`
