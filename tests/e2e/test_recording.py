"""End-to-end: `always` calls recorded by a real `callrec serve`, checked sample by sample.

Every call here goes through a real `callrec serve` subprocess and real SIP peers (SIPp
or pjsua2 phones in their own processes). The file is then read back with soundfile and
compared with what was sent.

Where the audio must be in the file (the "true offset"): the recorder's contract is that
call time 0 is the answer and that a leg's audio sits at the instant it passed through
callrec (a packet's last sample at its arrival; loopback adds well under a millisecond).
pjsua2 phones give no wall-clock time for what they play, and what a phone records with
--record-heard has gone through its jitter buffer and conference bridge (tens of ms of
unknown delay), so neither can prove a 20 ms bound. Instead the test sniffs loopback
(AF_PACKET, kernel receive timestamps) and rebuilds from the wire, independently of
callrec, where each party's audio belongs: every captured RTP payload is decoded and
placed by its RTP timestamp, the stream anchored on its least delayed packet (network
delay only ever adds to an arrival). The file's channel must line up with that track
within 20 ms, and must correlate with the WAV the phone played at >= 0.95. File time 0
is the CDR's `answered_at` (the recorder starts in the same instant, stored to the ms).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from callrec_phone.phone import PhoneProcess
from media import g711
from media.rtp import MediaError, RtpPacket
from testkit.audio import (
    RATE,
    Int16Array,
    best_correlation,
    chirp,
    lag_between,
    rms,
)
from testkit.harness import CallrecServer, make_server
from testkit.rtp_counter import PACKET_IGNORE_OUTGOING, PACKET_OUTGOING, SOL_PACKET
from testkit.sipp_runner import G711A_PCAP, environment_ok, write_rtp_pcap
from testkit.waiting import WaitTimeout, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok())),
]

# The announcement is checked elsewhere; here it would sit on top of the audio compared.
NO_ANNOUNCEMENT = 'announcement = "none"\n'
PASSWORD = "pw-201"
LENGTH_TOLERANCE_S = 0.1
OFFSET_TOLERANCE_S = 0.02
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


# ------------------------------------------------------------------------ servers
def recording_server(root: Path, *, channels: str, fmt: str) -> CallrecServer:
    server = make_server(
        root,
        f'[recording]\nchannels = "{channels}"\nformat = "{fmt}"\n{NO_ANNOUNCEMENT}',
        sipp=True,
    )
    server.add_user("201", "Alice Martin", PASSWORD, "--mode", "always")
    return server


@contextlib.contextmanager
def running(server: CallrecServer) -> Iterator[CallrecServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for_new_recording(
    server: CallrecServer, known_ids: set[int], timeout: float = 10.0
) -> dict[str, Any]:
    """The one recording row added since `known_ids`, once it is no longer in progress."""

    def new_rows() -> list[dict[str, Any]]:
        return [r for r in server.recordings() if r["id"] not in known_ids]

    with contextlib.suppress(WaitTimeout):
        wait_until(
            lambda: (rows := new_rows()) and all(r["status"] != "recording" for r in rows),
            timeout=timeout,
            what="a finished new recording",
            interval=0.2,
        )
    rows = new_rows()
    assert len(rows) == 1, f"expected exactly one new recording, got {rows}\n{server.log()}"
    assert rows[0]["status"] != "recording", f"{rows[0]}\n{server.log()[-3000:]}"
    return rows[0]


def recording_files(server: CallrecServer) -> set[Path]:
    return {p for p in (server.data_dir / "recordings").rglob("*") if p.is_file()}


def wall_time(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class RecordedCall:
    """A finished call: its recording row, the audio read back and the file's path."""

    row: dict[str, Any]
    path: Path
    audio: Int16Array  # (frames, channels)
    new_files: set[Path]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def answered(self) -> float:
        return wall_time(self.row["call"]["answered_at"])

    @property
    def media_time_s(self) -> float:
        return wall_time(self.row["call"]["ended_at"]) - self.answered


def collect(server: CallrecServer, known_ids: set[int], files_before: set[Path]) -> RecordedCall:
    row = wait_for_new_recording(server, known_ids)
    path = server.data_dir / row["path"]
    audio, rate = sf.read(path, dtype="int16", always_2d=True)
    assert rate == RATE
    return RecordedCall(row, path, audio, recording_files(server) - files_before)


def sipp_call(
    server: CallrecServer,
    work: Path,
    *,
    pcap: Path = G711A_PCAP,
    call_length_ms: int = 3000,
    trunk_echo: bool = False,
) -> RecordedCall:
    """One SIPp phone (201, playing `pcap`) to a SIPp trunk through callrec."""
    known = {r["id"] for r in server.recordings()}
    files = recording_files(server)
    trunk = server.start_sipp_trunk(work / "uas", rtp_echo=trunk_echo, timeout_s=30)
    with trunk:
        phone = server.run_sipp_phone(
            work / "uac",
            caller="201",
            password=PASSWORD,
            pcap=pcap,
            call_length_ms=call_length_ms,
            timeout_s=30,
        )
        assert phone.ok, phone.summary()
        trunk_result = trunk.wait()
        assert trunk_result.ok, trunk_result.summary()
    return collect(server, known, files)


def assert_one_sealed_file(call: RecordedCall, *, channels: int, fmt: str) -> None:
    """The common contract of every finished recording."""
    row = call.row
    assert row["status"] == "complete", row
    assert call.new_files == {call.path}, call.new_files
    assert row["format"] == fmt and call.path.suffix == f".{fmt}"
    assert sf.info(str(call.path)).format == fmt.upper()
    assert row["channels"] == channels == call.audio.shape[1]
    assert row["sample_rate"] == RATE
    length_s = len(call.audio) / RATE
    assert abs(length_s - call.media_time_s) <= LENGTH_TOLERANCE_S, (
        length_s,
        call.media_time_s,
    )
    assert abs(row["duration_s"] - length_s) <= 0.01, (row["duration_s"], length_s)
    assert hashlib.sha256(call.path.read_bytes()).hexdigest() == row["sha256"]
    assert row["bytes"] == call.path.stat().st_size
    # Tests run as root, who may write anything: look at the mode bits themselves.
    assert call.path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0


# ------------------------------------------------------------------------ signals
def exact_windows(
    recorded: Int16Array, source: Int16Array, start: int, max_shift: int = 16
) -> float:
    """Fraction of `source`'s 100 ms windows found sample for sample in `recorded`.

    `source` is expected from `recorded[start]` on; each window may be off by up to
    `max_shift` samples (2 ms), as when the recorder re-anchors a stream on a less
    delayed packet, which leaves one window broken at the seam.
    """
    window = RATE // 10
    found = 0
    total = 0
    for offset in range(0, len(source) - window + 1, window):
        total += 1
        part = source[offset : offset + window]
        for shift in range(-max_shift, max_shift + 1):
            at = start + offset + shift
            if at >= 0 and np.array_equal(recorded[at : at + window], part):
                found += 1
                break
    return found / max(total, 1)


def pcap_audio(path: Path) -> Int16Array:
    """The G.711 audio of a SIPp pcap, decoded and laid out by RTP timestamp."""
    data = path.read_bytes()
    offset = 24
    packets: list[RtpPacket] = []
    while offset + 16 <= len(data):
        captured = struct.unpack_from("<I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        ip = 14
        udp = ip + (frame[ip] & 0x0F) * 4
        with contextlib.suppress(MediaError):
            packets.append(RtpPacket.parse(frame[udp + 8 :]))
    audio = [p for p in packets if p.payload_type in (0, 8)]
    first = audio[0].timestamp
    end = max(p.timestamp - first + len(p.payload) for p in audio)
    track = np.zeros(end, dtype=np.int16)
    for packet in audio:
        start = packet.timestamp - first
        codec = "PCMA" if packet.payload_type == 8 else "PCMU"
        track[start : start + len(packet.payload)] = g711.decode(codec, packet.payload)
    return track


# ------------------------------------------------------------------------ the wire
@dataclass(frozen=True)
class WirePacket:
    """A UDP datagram seen on loopback, with the kernel's receive time (wall clock)."""

    at: float
    source: int
    destination: int
    payload: bytes


class WireCapture:
    """Sniffs UDP datagrams to a port range on `lo` (AF_PACKET, root) in a thread."""

    def __init__(self, ports: range, max_seconds: float = 60.0) -> None:
        self.ports = ports
        self.packets: list[WirePacket] = []
        self._stop = threading.Event()
        self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        with contextlib.suppress(OSError):
            self._socket.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        self._socket.bind(("lo", 3))
        self._socket.settimeout(0.05)
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        space = socket.CMSG_SPACE(16)
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                frame, ancillary, _flags, address = self._socket.recvmsg(65535, space)
            except TimeoutError:
                continue
            if len(address) > 2 and address[2] == PACKET_OUTGOING:
                continue
            if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
                continue
            udp = 14 + (frame[14] & 0x0F) * 4
            source, destination = struct.unpack_from("!HH", frame, udp)
            if destination not in self.ports:
                continue
            at = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = struct.unpack("qq", value[:16])
                    at = seconds + nanoseconds / 1e9
            self.packets.append(WirePacket(at, source, destination, frame[udp + 8 :]))

    def stop(self) -> list[WirePacket]:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()
        return self.packets


def track_from_wire(
    packets: list[WirePacket], *, source: int, destination: int, start: float, length: int
) -> Int16Array:
    """Where one party's audio belongs in the file, rebuilt from the wire (see module doc).

    Samples go by RTP timestamp; the stream is anchored on its least delayed packet,
    whose last sample is taken to be at its arrival.
    """
    stream: list[tuple[float, RtpPacket]] = []
    for wire in packets:
        if wire.source == source and wire.destination == destination:
            with contextlib.suppress(MediaError):
                packet = RtpPacket.parse(wire.payload)
                if packet.payload_type in (0, 8):
                    stream.append((wire.at, packet))
    assert stream, f"no RTP from port {source} to {destination} on the wire"
    first = stream[0][1].timestamp
    relative = [(p.timestamp - first) % (1 << 32) for _, p in stream]
    anchor = min(
        (at - start) * RATE - len(p.payload) - ts
        for (at, p), ts in zip(stream, relative, strict=True)
    )
    track = np.zeros(length, dtype=np.int16)
    for (_, packet), ts in zip(stream, relative, strict=True):
        position = round(ts + anchor)
        pcm = g711.decode("PCMA" if packet.payload_type == 8 else "PCMU", packet.payload)
        lo, hi = max(position, 0), min(position + len(pcm), length)
        if lo < hi:
            track[lo:hi] = pcm[lo - position : hi - position]
    return track


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def mono_wav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    server = recording_server(tmp_path_factory.mktemp("mono"), channels="mono", fmt="wav")
    with running(server):
        yield server


@pytest.fixture(scope="module")
def stereo_wav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    server = recording_server(tmp_path_factory.mktemp("stereo"), channels="stereo", fmt="wav")
    with running(server):
        yield server


@pytest.fixture(scope="module")
def mono_call(mono_wav: CallrecServer, tmp_path_factory: pytest.TempPathFactory) -> RecordedCall:
    """SIPp plays g711a.pcap from the phone; the trunk sends nothing back."""
    return sipp_call(mono_wav, tmp_path_factory.mktemp("mono-call"), call_length_ms=4000)


@pytest.fixture(scope="module")
def stereo_call(
    stereo_wav: CallrecServer, tmp_path_factory: pytest.TempPathFactory
) -> RecordedCall:
    """pjsua2 on both sides: the phone (201) plays chirp A, the trunk (300) chirp B."""
    server = stereo_wav
    work = tmp_path_factory.mktemp("stereo-call")
    phone_signal = chirp(work / "a.wav", 300, 1500)
    trunk_signal = chirp(work / "b.wav", 1900, 3400)
    known = {r["id"] for r in server.recordings()}
    files = recording_files(server)
    capture = WireCapture(range(server.rtp_first, server.rtp_last + 1))
    try:
        trunk = PhoneProcess(server.trunk_phone_args("--play", str(work / "b.wav")))
        trunk.wait_for("started", 15)
        phone = PhoneProcess(
            server.dial_args("201", PASSWORD, "--play", str(work / "a.wav"), "--hangup-after", "4")
        )
        phone_result = phone.wait(40)
        trunk_result = trunk.wait(40)
    finally:
        wire = capture.stop()
    assert phone_result.returncode == 0, phone_result.stderr[-3000:]
    assert trunk_result.returncode == 0, trunk_result.stderr[-3000:]
    call = collect(server, known, files)
    call.extra.update(
        wire=wire,
        phone_media=phone_result.named("media")[0],
        trunk_media=trunk_result.named("media")[0],
        phone_signal=phone_signal,
        trunk_signal=trunk_signal,
    )
    return call


# ------------------------------------------------------------------------ tests
def test_mono_wav_is_one_sealed_file_of_the_call_length(mono_call: RecordedCall) -> None:
    assert_one_sealed_file(mono_call, channels=1, fmt="wav")


def test_stereo_wav_is_one_sealed_file_of_the_call_length(stereo_call: RecordedCall) -> None:
    assert_one_sealed_file(stereo_call, channels=2, fmt="wav")


def test_flac_is_one_sealed_file_of_the_call_length(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("flac")
    server = recording_server(root, channels="mono", fmt="flac")
    with running(server):
        call = sipp_call(server, root, call_length_ms=3000)
    assert_one_sealed_file(call, channels=1, fmt="flac")
    # Lossless: the pcap's audio is in the FLAC sample for sample. (Its first second is
    # near silence, and its first packet may sit a little before call time 0.)
    excerpt = pcap_audio(G711A_PCAP)[RATE : 2 * RATE]
    score, start = best_correlation(excerpt, call.audio[:, 0])
    assert score >= 0.99, score
    assert exact_windows(call.audio[:, 0], excerpt, start) >= 0.9


def test_sipp_pcap_audio_is_in_the_mono_file(mono_call: RecordedCall) -> None:
    source = pcap_audio(G711A_PCAP)
    recorded = mono_call.audio[:, 0]
    # The pcap's first second is near silence: correlate seconds 1-3.
    score, start = best_correlation(source[RATE : 3 * RATE], recorded)
    assert score >= 0.95, score
    # SIPp plays from its ACK on, so the pcap starts at call time 0 (give or take the
    # 20 ms of the first packet's audio, which precede its arrival).
    assert abs(start - RATE) / RATE < 0.1, (start - RATE) / RATE
    # The trunk sent nothing, so the mono mix is the phone's audio unchanged (G.711
    # decoding is exact).
    assert exact_windows(recorded, source[RATE : 3 * RATE], start) >= 0.9


def test_stereo_channels_hold_each_party_at_the_right_time(stereo_call: RecordedCall) -> None:
    """Left = the phone's chirp A, right = the trunk's chirp B, each where the wire says.

    Checked per 100 ms window. pjsua2's player inserts a pad when its WAV loops, and
    the recorder re-anchors a stream by a sample or two when a less delayed packet
    arrives; at 3 kHz even one sample turns the phase by 135 degrees, so a single
    correlation over seconds would measure those sub-millisecond shifts, not fidelity.
    """
    audio = stereo_call.audio
    left, right = audio[:, 0], audio[:, 1]
    phone_signal = stereo_call.extra["phone_signal"]
    trunk_signal = stereo_call.extra["trunk_signal"]
    wire = stereo_call.extra["wire"]
    max_lag = RATE // 2
    channels = {
        "left (phone 201)": (left, phone_signal, trunk_signal, stereo_call.extra["phone_media"]),
        "right (trunk)": (right, trunk_signal, phone_signal, stereo_call.extra["trunk_media"]),
    }
    for name, (channel, own, other, media) in channels.items():
        expected = track_from_wire(
            wire,
            source=port_of(media["local_rtp"]),
            destination=port_of(media["remote_rtp"]),
            start=stereo_call.answered,
            length=len(channel),
        )
        windows = audible_windows(expected, channel)
        assert len(windows) >= 30, f"{name}: only {len(windows)} audible windows"
        # The party's own signal, at any point of its loop (the internal user is left).
        own_scores = [best_correlation(channel[w], np.tile(own, 3))[0] for w in windows]
        other_scores = [best_correlation(channel[w], np.tile(other, 3))[0] for w in windows]
        assert np.mean(own_scores) >= 0.95, (name, own_scores)
        assert np.mean(np.asarray(own_scores) >= 0.95) >= 0.9, (name, own_scores)
        assert max(other_scores) < 0.5, (name, other_scores)
        # Where the wire says it passed callrec: every window, and the file as a whole.
        lags = [window_lag(expected, channel, w, max_lag) for w in windows]
        worst = max(lags, key=abs)
        assert abs(worst) / RATE <= OFFSET_TOLERANCE_S, (
            f"{name}: {1000 * worst / RATE:+.1f} ms off the wire; lags {lags}"
        )
        overall = lag_between(expected, channel, max_lag)
        assert abs(overall) / RATE <= OFFSET_TOLERANCE_S, (name, overall)


WINDOW = RATE // 10


def audible_windows(expected: Int16Array, channel: Int16Array) -> list[slice]:
    """100 ms windows where the wire carried audio (not the call's first/last packets)."""
    return [
        slice(start, start + WINDOW)
        for start in range(WINDOW, len(channel) - 2 * WINDOW, WINDOW)
        if rms(expected[start - WINDOW : start + 2 * WINDOW]) > 1000
    ]


def window_lag(expected: Int16Array, channel: Int16Array, window: slice, max_lag: int) -> int:
    """How late (samples) the file's `window` is against the wire track."""
    first: int = window.start
    lo = max(0, first - max_lag)
    region = expected[lo : window.stop + max_lag]
    _, position = best_correlation(channel[window], region)
    return first - (lo + position)


def test_one_way_audio_leaves_silence_on_the_mute_side(
    stereo_wav: CallrecServer, tmp_path: Path
) -> None:
    call = sipp_call(stereo_wav, tmp_path, call_length_ms=2500, trunk_echo=False)
    assert_one_sealed_file(call, channels=2, fmt="wav")
    left, right = call.audio[:, 0], call.audio[:, 1]
    assert rms(left) > 300, rms(left)
    assert not right.any(), "the trunk sent no RTP: its channel must be pure silence"


def test_call_without_rtp_is_silence_of_the_call_length_and_warned(
    stereo_wav: CallrecServer, tmp_path: Path
) -> None:
    silent = tmp_path / "no-rtp.pcap"
    assert write_rtp_pcap(silent, duration_s=0) == 0
    log_before = len(stereo_wav.log())
    call = sipp_call(stereo_wav, tmp_path, pcap=silent, call_length_ms=2000)
    assert_one_sealed_file(call, channels=2, fmt="wav")
    assert len(call.audio) >= 1.5 * RATE
    assert not call.audio.any()
    new_log = stereo_wav.log()[log_before:]
    warnings = [line for line in new_log.splitlines() if "WARNING" in line and "RTP" in line]
    assert warnings, new_log


def test_kill_9_mid_call_loses_at_most_a_second(tmp_path: Path) -> None:
    server = recording_server(tmp_path / "crash", channels="mono", fmt="wav")
    server.start()
    try:
        trunk, phone, call = server.start_answered_call(
            tmp_path, caller="201", password=PASSWORD, seconds=20
        )
        with trunk, phone:
            answered = wall_time(call["answered_at"])
            # The scenario: the server dies four seconds into the call. Not a wait on a
            # state (the file's size): that would time the kill to the writer's flushes
            # and hide what a kill at any moment loses.
            time.sleep(max(0.0, answered + 4.0 - time.time()))
            assert server.process is not None
            killed_at = time.time()
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
        server.stop()
        server.start()
        row = wait_for_new_recording(server, set())
    finally:
        server.stop()
    assert row["status"] == "recovered", row
    path = server.data_dir / row["path"]
    audio, rate = sf.read(path, dtype="int16", always_2d=True)
    media_until_kill = killed_at - answered
    kept = len(audio) / rate
    assert media_until_kill - 1.0 <= kept <= media_until_kill + 0.1, (kept, media_until_kill)
    assert rms(audio[: int((kept - 0.5) * rate)]) > 300, "the audio before the kill is kept"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
    assert path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0


def test_sigterm_mid_call_hangs_up_and_files_a_complete_recording(tmp_path: Path) -> None:
    """Shutdown in order: the call is ended (a BYE to each side, its CDR closed) and
    its recording sealed and filed before the process exits; nothing is left for the
    crash repair of the next start."""
    server = recording_server(tmp_path / "term", channels="mono", fmt="wav")
    server.start()
    try:
        trunk, phone, _ = server.start_answered_call(
            tmp_path, caller="201", password=PASSWORD, seconds=20
        )
        with trunk, phone:
            assert server.process is not None
            process = server.process
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0, server.log()[-3000:]
            # Both SIPp ends were hung up on: each ends long before its 20 s call.
            assert trunk.wait(timeout_s=10).elapsed_s < 15
            assert phone.wait(timeout_s=10).elapsed_s < 15
        log = server.log()
        assert "shutting down" in log and "Traceback" not in log, log[-3000:]
        [call] = server.calls()
        assert call["ended_at"] and call["disposition"] == "answered", call
        [row] = server.recordings()
    finally:
        server.stop()
    assert row["status"] == "complete", row
    audio, _ = sf.read(server.data_dir / row["path"], dtype="int16", always_2d=True)
    assert len(audio) > 0
