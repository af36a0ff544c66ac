"""End-to-end: real pjsua2 phones through a real `callrec serve`, SIPp as the trunk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from b2bua.phone import PhoneProcess
from tests.e2e.harness import HOST, CallrecServer, free_port, make_server
from tests.e2e.sipp_runner import run_sipp, start_sipp

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"))
    srv.add_user("201", "Alice Martin", "pw-201", "--device", "sip:201-mobile@callrec.test")
    srv.cli("users", "set-password", "201", "pw-201")
    srv.start()
    yield srv
    srv.stop()


def chirp(path: Path, seconds: float = 3.0) -> np.ndarray:
    """A 300-3000 Hz sweep, loud enough to survive G.711 and easy to correlate."""
    t = np.arange(int(8000 * seconds)) / 8000
    signal = 0.4 * np.sin(2 * np.pi * (300 * t + (2700 / (2 * seconds)) * t**2))
    pcm = (signal * 32767).astype(np.int16)
    sf.write(path, pcm, 8000, subtype="PCM_16")
    return pcm


def best_correlation(reference: np.ndarray, heard: np.ndarray) -> float:
    """Peak normalised cross-correlation of `reference` inside `heard` (any offset)."""
    ref = reference.astype(np.float64)
    sig = heard.astype(np.float64)
    size = len(ref) + len(sig)
    spectrum = np.fft.rfft(sig, size) * np.conj(np.fft.rfft(ref, size))
    corr = np.fft.irfft(spectrum, size)[: len(sig)]
    window = np.convolve(sig**2, np.ones(len(ref)), mode="full")[
        len(ref) - 1 : len(ref) - 1 + len(sig)
    ]
    norm = np.sqrt(np.maximum(window, 1e-9) * np.sum(ref**2))
    return float(np.max(np.abs(corr) / norm))


def test_phone_to_trunk_audio_goes_both_ways(server: CallrecServer, tmp_path: Path) -> None:
    before = len(server.calls())
    source = chirp(tmp_path / "chirp.wav")
    trunk = start_sipp(
        "uas_echo.xml",
        local_port=server.trunk_port,
        media_port=free_port(even=True, span=4),
        rtp_echo=True,
        timeout_s=40,
        work_dir=tmp_path / "uas",
    )
    phone = PhoneProcess(
        [
            "dial",
            "300",
            "--via",
            f"{HOST}:{server.sip_port}",
            "--as",
            "201",
            "--password",
            "pw-201",
            "--play",
            str(tmp_path / "chirp.wav"),
            "--record-heard",
            str(tmp_path / "heard.wav"),
            "--hangup-after",
            "4",
            "--timeout",
            "30",
        ]
    )
    result = phone.wait(40)
    assert result.returncode == 0, result.stderr[-3000:]
    assert trunk.wait().ok
    heard, rate = sf.read(tmp_path / "heard.wav", dtype="int16")
    assert rate == 8000
    # The phone hears its own chirp, echoed by the trunk through callrec's relay.
    assert best_correlation(source[:8000], heard) > 0.8
    cdr = server.wait_for_calls(before + 1)[0]
    assert cdr["direction"] == "outbound" and cdr["disposition"] == "answered"
    assert cdr["caller_ext"] == "201" and cdr["callee_ext"] == "300"


def test_trunk_to_registered_phone(server: CallrecServer, tmp_path: Path) -> None:
    before = len(server.calls())
    source = chirp(tmp_path / "chirp.wav")
    phone = PhoneProcess(
        [
            "answer",
            "--register",
            "--via",
            f"{HOST}:{server.sip_port}",
            "--as",
            "201",
            "--password",
            "pw-201",
            "--calls",
            "1",
            "--timeout",
            "30",
            "--play",
            str(tmp_path / "chirp.wav"),
            "--record-heard",
            str(tmp_path / "heard.wav"),
        ]
    )
    phone.wait_for("registered", 15)
    trunk = run_sipp(
        "uac_auth_pcap.xml",
        remote=f"{HOST}:{server.sip_port}",
        local_port=server.trunk_port,
        media_port=free_port(even=True, span=4),
        callee="201",
        caller="0612345678",
        call_length_ms=3000,
        timeout_s=30,
        work_dir=tmp_path / "trunk",
    )
    assert trunk.ok, trunk.summary()
    result = phone.wait(30)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.named("incoming"), result.events
    heard, _ = sf.read(tmp_path / "heard.wav", dtype="int16")
    # SIPp plays g711a.pcap (speech-like audio) towards the phone.
    assert np.sqrt(np.mean(heard.astype(np.float64) ** 2)) > 300
    cdr = server.wait_for_calls(before + 1)[0]
    assert cdr["direction"] == "inbound" and cdr["disposition"] == "answered"
    assert cdr["callee_ext"] == "201" and cdr["callee_name"] == "Alice Martin"
    assert cdr["caller_ext"] == "0612345678"
    assert source.size  # the phone played its chirp back to the trunk


def test_call_forks_to_all_devices_first_answer_wins(server: CallrecServer, tmp_path: Path) -> None:
    before = len(server.calls())
    common = ["--via", f"{HOST}:{server.sip_port}", "--password", "pw-201", "--calls", "1"]
    desk = PhoneProcess(
        [
            "answer",
            "--register",
            "--as",
            "201",
            "--answer-after",
            "0.5",
            "--timeout",
            "20",
            *common,
        ]
    )
    mobile = PhoneProcess(
        [
            "answer",
            "--register",
            "--as",
            "201-mobile",
            "--answer-after",
            "5",
            "--timeout",
            "12",
            *common,
        ]
    )
    desk.wait_for("registered", 15)
    mobile.wait_for("registered", 15)
    time.sleep(0.2)
    trunk = run_sipp(
        "uac_auth_pcap.xml",
        remote=f"{HOST}:{server.sip_port}",
        local_port=server.trunk_port,
        media_port=free_port(even=True, span=4),
        callee="201",
        caller="0612345678",
        call_length_ms=1500,
        timeout_s=30,
        work_dir=tmp_path / "trunk",
    )
    assert trunk.ok, trunk.summary()
    desk_result = desk.wait(30)
    mobile_result = mobile.wait(30)
    # Both devices rang; the desk phone answered, the mobile was cancelled.
    assert desk_result.named("incoming") and mobile_result.named("incoming")
    assert desk_result.named("confirmed")
    assert not mobile_result.named("confirmed")
    ends = mobile_result.named("disconnected")
    assert ends and ends[0].get("status") == 487, mobile_result.events
    cdr = server.wait_for_calls(before + 1)[0]
    assert cdr["disposition"] == "answered"
