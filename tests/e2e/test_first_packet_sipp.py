"""End-to-end, issue 14: every sample the caller sends after the answer is in the file.

The issue's case: SIPp plays its shipped `g711a.pcap` (236 packets of 30 ms A-law,
continuous timestamps) right after its ACK, stereo recording, no announcement. The
caller's channel must hold the pcap's decoded payloads sample for sample, from the
first packet's first sample, with nothing before it but silence.

Tolerance: none on the samples (the recorder places packets by RTP timestamp and
G.711 decoding is a table lookup, so the file must equal the decoded pcap exactly).
Where the first packet starts in the file depends on when it arrived after the answer,
so the test finds that offset and only bounds it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from media import g711
from testkit.harness import CallrecServer, make_server
from testkit.sipp_runner import G711A_PCAP

pytestmark = pytest.mark.e2e

RATE = 8000


def pcap_payloads(path: Path) -> list[bytes]:
    """The RTP payloads of a pcap of one RTP stream (Ethernet, IPv4, UDP), in order."""
    data = path.read_bytes()
    assert (
        struct.unpack_from("<I", data, 0)[0] == 0xA1B2C3D4
        and struct.unpack_from("<I", data, 20)[0] == 1
    ), "a little-endian Ethernet pcap"
    offset = 24
    packets: list[tuple[int, bytes]] = []
    while offset < len(data):
        length = struct.unpack_from("<I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ip = 14
        udp = ip + (frame[ip] & 0x0F) * 4
        rtp = frame[udp + 8 :]
        sequence = struct.unpack_from("!H", rtp, 2)[0]
        packets.append((sequence, rtp[12:]))
    sequences = [s for s, _ in packets]
    assert sequences == list(range(sequences[0], sequences[0] + len(packets))), "in order"
    return [payload for _, payload in packets]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(
        tmp_path_factory.mktemp("callrec-first-packet"),
        extra_config='[recording]\nannouncement = "none"\nchannels = "stereo"\n',
        sipp=True,
    )
    srv.add_user("202", "Bob Always", "pw-202", "--mode", "always")
    yield from srv.serving()


def first_match(haystack: npt.NDArray[np.int16], needle: npt.NDArray[np.int16]) -> int:
    """Where `needle` first occurs exactly in `haystack` (-1 if nowhere)."""
    windows = np.lib.stride_tricks.sliding_window_view(haystack, needle.size)
    hits = np.flatnonzero((windows == needle).all(axis=1))
    return int(hits[0]) if hits.size else -1


@pytest.mark.parametrize("attempt", range(3))
def test_the_file_holds_the_callers_audio_from_its_first_packet_sample_for_sample(
    server: CallrecServer, tmp_path: Path, attempt: int
) -> None:
    before = len(server.calls())
    payloads = pcap_payloads(G711A_PCAP)
    assert {len(p) for p in payloads} == {240}  # 30 ms packets, as in the issue
    expected = g711.decode("PCMA", b"".join(payloads))
    trunk = server.start_sipp_trunk(tmp_path / "uas", timeout_s=40)
    phone = server.run_sipp_phone(
        tmp_path / "uac", caller="202", password="pw-202", call_length_ms=7500, timeout_s=40
    )
    assert phone.ok, phone.summary()
    assert trunk.wait().ok
    call = server.wait_for_calls(before + 1)[0]
    recording = server.wait_for_recording(int(call["id"]))
    assert recording["status"] == "complete", recording
    audio, rate = sf.read(server.data_dir / recording["path"], dtype="int16", always_2d=True)
    assert rate == RATE
    caller = np.asarray(audio[:, 0])
    start = first_match(caller, expected[:240])
    assert start >= 0, "the first packet's audio is not in the file"
    # Nothing but silence before it, and at most the time SIPp took to start playing.
    assert not caller[:start].any()
    assert start <= 0.25 * RATE, f"the first packet starts {start / RATE:.3f} s into the file"
    held = caller[start : start + expected.size]
    assert held.size == expected.size, "the file ends before the caller's last packet"
    differ = np.flatnonzero(held != expected)
    assert differ.size == 0, (
        f"{differ.size} samples differ, first at {differ[0]}; "
        f"where each packet was found: {packet_offsets(caller, expected, start)}"
    )


def packet_offsets(caller: npt.NDArray[np.int16], expected: npt.NDArray[np.int16],
                   start: int) -> dict[str, int]:  # fmt: skip
    """For a failure message: each distinct 30 ms packet's offset from where it belongs
    (a shift says the stream was re-anchored; `missing` counts packets not found)."""
    offsets: dict[str, int] = {}
    for index in range(expected.size // 240):
        chunk = expected[index * 240 : (index + 1) * 240]
        if np.unique(chunk).size < 8:
            continue  # silence: found anywhere
        found = first_match(caller, chunk)
        key = "missing" if found < 0 else str(found - start - index * 240)
        offsets[key] = offsets.get(key, 0) + 1
    return offsets
