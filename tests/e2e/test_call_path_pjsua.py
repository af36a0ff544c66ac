"""End-to-end: real pjsua2 phones through a real `callrec serve`, SIPp as the trunk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from callrec_phone.phone import PhoneProcess
from testkit.audio import chirp, peak_correlation, rms
from testkit.harness import CallrecServer, make_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"))
    srv.add_user("201", "Alice Martin", "pw-201", "--device", "sip:201-mobile@callrec.test")
    srv.cli("users", "set-password", "201", "pw-201")
    yield from srv.serving()


def test_phone_to_trunk_audio_goes_both_ways(server: CallrecServer, tmp_path: Path) -> None:
    before = len(server.calls())
    source = chirp(tmp_path / "chirp.wav")
    trunk = server.start_sipp_trunk(tmp_path / "uas", timeout_s=40)
    phone = PhoneProcess(
        server.dial_args(
            "201",
            "pw-201",
            "--play",
            str(tmp_path / "chirp.wav"),
            "--record-heard",
            str(tmp_path / "heard.wav"),
            "--hangup-after",
            "4",
        )
    )
    result = phone.wait(40)
    assert result.returncode == 0, result.stderr[-3000:]
    assert trunk.wait().ok
    heard, rate = sf.read(tmp_path / "heard.wav", dtype="int16")
    assert rate == 8000
    # The phone hears its own chirp, echoed by the trunk through callrec's relay.
    assert peak_correlation(source[:8000], heard) > 0.8
    cdr = server.wait_for_calls(before + 1)[0]
    assert cdr["direction"] == "outbound" and cdr["disposition"] == "answered"
    assert cdr["caller"]["extension"] == "201" and cdr["callee"]["extension"] == "300"


def test_trunk_to_registered_phone(server: CallrecServer, tmp_path: Path) -> None:
    before = len(server.calls())
    source = chirp(tmp_path / "chirp.wav")
    phone = PhoneProcess(
        server.registered_phone_args(
            "201",
            "pw-201",
            "--play",
            str(tmp_path / "chirp.wav"),
            "--record-heard",
            str(tmp_path / "heard.wav"),
        )
    )
    phone.wait_for("registered", 15)
    trunk = server.run_sipp_from_trunk(
        tmp_path / "trunk", callee="201", caller="0612345678", call_length_ms=3000, timeout_s=30
    )
    assert trunk.ok, trunk.summary()
    result = phone.wait(30)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.named("incoming"), result.events
    heard, _ = sf.read(tmp_path / "heard.wav", dtype="int16")
    # SIPp plays g711a.pcap (speech-like audio) towards the phone.
    assert rms(heard) > 300
    cdr = server.wait_for_calls(before + 1)[0]
    assert cdr["direction"] == "inbound" and cdr["disposition"] == "answered"
    assert cdr["callee"] == {"extension": "201", "name": "Alice Martin"}
    assert cdr["caller"]["extension"] == "0612345678"
    assert source.size  # the phone played its chirp back to the trunk


def test_call_forks_to_all_devices_first_answer_wins(server: CallrecServer, tmp_path: Path) -> None:
    before = len(server.calls())
    desk = PhoneProcess(
        server.registered_phone_args("201", "pw-201", "--answer-after", "0.5", timeout_s=20)
    )
    mobile = PhoneProcess(
        server.registered_phone_args("201-mobile", "pw-201", "--answer-after", "5", timeout_s=12)
    )
    desk.wait_for("registered", 15)
    mobile.wait_for("registered", 15)
    trunk = server.run_sipp_from_trunk(
        tmp_path / "trunk", callee="201", caller="0612345678", call_length_ms=1500, timeout_s=30
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
