"""End-to-end: the on-demand feature code through a real `callrec serve`.

`*1` by RFC 4733, in-band tones and SIP INFO (with `callrec phone`, a pjsua2 softphone)
and by SIPp playing RFC 4733 packets at known times must start recording, and a second
`*1` must stop it. The file and its segments show the recorded span.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from callrec_phone.phone import PhoneProcess
from testkit.harness import CallrecServer, make_server
from testkit.sipp_runner import SippProcess, write_rtp_pcap

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"), sipp=True)
    srv.add_user("201", "Alice Martin", "pw-201", "--mode", "on-demand")
    srv.add_user("202", "Bob Always", "pw-202", "--mode", "always")
    srv.add_user("203", "Carol Never", "pw-203", "--mode", "never")
    yield from srv.serving()


def toggles(server: CallrecServer, recording_id: int) -> list[tuple[float, str, str]]:
    db = server.data_dir / "callrec.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT at, action, method FROM recording_toggles WHERE recording_id = ? ORDER BY at",
            (recording_id,),
        ).fetchall()
    return [(float(at), str(action), str(method)) for at, action, method in rows]


def start_trunk(server: CallrecServer, tmp_path: Path) -> SippProcess:
    return server.start_sipp_trunk(tmp_path / "uas", timeout_s=40)


@pytest.mark.parametrize("method", ["rfc2833", "inband", "info"])
def test_feature_code_by_each_method_starts_and_stops(
    server: CallrecServer, tmp_path: Path, method: str
) -> None:
    before = len(server.calls())
    trunk = start_trunk(server, tmp_path)
    phone = PhoneProcess(
        server.dial_args(
            "201",
            "pw-201",
            "--digits",
            "*1",
            "--dtmf-method",
            method,
            "--at",
            "1.0",
            "--at",
            "4.0",
            "--hangup-after",
            "6",
        )
    )
    result = phone.wait(40)
    assert result.returncode == 0, result.stderr[-2000:]
    assert trunk.wait().ok
    call = server.wait_for_calls(before + 1)[0]
    recording = server.wait_for_recording(call["id"])
    assert recording["status"] == "complete"
    # One span, from the first code to the second: each starts when its "1" is keyed
    # (the phone reports when it sent each digit, counted from its answer).
    keyed = [e["after_answer_s"] for e in result.named("dtmf_sent") if e["digit"] == "1"]
    assert len(keyed) == 2, result.events
    assert len(recording["segments"]) == 1, recording
    start, end = recording["segments"][0]
    assert abs(start - keyed[0]) <= 0.1, (recording["segments"], keyed)
    assert abs(end - keyed[1]) <= 0.1, (recording["segments"], keyed)
    audio, rate = sf.read(server.data_dir / recording["path"], dtype="int16")
    assert abs(len(audio) / rate - (end - start)) < 0.1
    logged = toggles(server, recording["id"])
    assert [action for _, action, _ in logged] == ["start", "stop"]
    expected = {"rfc2833": "rfc4733", "inband": "inband", "info": "info"}[method]
    assert {m for _, _, m in logged} == {expected}


def test_sipp_rfc4733_codes_at_known_times(server: CallrecServer, tmp_path: Path) -> None:
    """RTP with telephone-events at exact offsets: the span matches them within 100 ms."""
    before = len(server.calls())
    pcap = tmp_path / "codes.pcap"
    # A-law silence with `*1` at 1.0 s and again at 4.0 s of the stream.
    write_rtp_pcap(pcap, duration_s=6.0, digits=[(1.0, "*"), (1.2, "1"), (4.0, "*"), (4.2, "1")])
    trunk = start_trunk(server, tmp_path)
    phone = server.run_sipp_phone(
        tmp_path / "uac",
        caller="201",
        password="pw-201",
        pcap=pcap,
        call_length_ms=6500,
        timeout_s=40,
    )
    assert phone.ok, phone.summary()
    assert trunk.wait().ok
    call = server.wait_for_calls(before + 1)[0]
    recording = server.wait_for_recording(call["id"])
    [(start, end)] = recording["segments"]
    # SIPp starts the pcap right after its ACK, a few ms after callrec's answer.
    assert abs(start - 1.2) <= 0.1, recording["segments"]
    assert abs(end - 4.2) <= 0.1, recording["segments"]


def test_sipp_with_debian_dtmf_pcaps_starts_recording(
    server: CallrecServer, tmp_path: Path
) -> None:
    """SIPp's shipped RFC 4733 pcaps (`*` then `1`) start a recording that runs to the end."""
    before = len(server.calls())
    trunk = start_trunk(server, tmp_path)
    phone = server.run_sipp_phone(
        tmp_path / "uac",
        "uac_dtmf.xml",
        caller="201",
        password="pw-201",
        call_length_ms=2000,
        timeout_s=40,
    )
    assert phone.ok, phone.summary()
    assert trunk.wait().ok
    call = server.wait_for_calls(before + 1)[0]
    recording = server.wait_for_recording(call["id"])
    assert recording["status"] == "complete"
    assert len(recording["segments"]) == 1
    assert recording["duration_s"] > 1.0


@pytest.mark.parametrize(("user", "recorded"), [("202", True), ("203", False)])
def test_feature_code_does_nothing_for_always_and_never(
    server: CallrecServer, tmp_path: Path, user: str, recorded: bool
) -> None:
    before = len(server.calls())
    trunk = start_trunk(server, tmp_path)
    phone = PhoneProcess(
        server.dial_args(
            user,
            f"pw-{user}",
            "--digits",
            "*1",
            "--dtmf-method",
            "rfc2833",
            "--at",
            "1.0",
            "--hangup-after",
            "3",
        )
    )
    assert phone.wait(40).returncode == 0
    assert trunk.wait().ok
    call = server.wait_for_calls(before + 1)[0]
    if recorded:
        recording = server.wait_for_recording(call["id"])
        # Recorded from the answer to the end, uninterrupted by the code.
        assert recording["segments"][0][0] == 0.0
        assert len(recording["segments"]) == 1
        assert abs(recording["duration_s"] - 3.0) < 0.2
    else:
        # A recording is filed when it starts, long before the call's end (whose CDR
        # update was awaited above): none by now means none at all.
        assert server.recordings_of_call(call["id"]) == []
        assert not call["recorded"]


@pytest.fixture(scope="module")
def swallowing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(
        tmp_path_factory.mktemp("callrec-swallow"),
        extra_config="[recording]\nswallow_feature_code = true\n",
        sipp=True,
    )
    srv.add_user("201", "Alice Martin", "pw-201", "--mode", "on-demand")
    yield from srv.serving()


def test_swallowed_code_never_reaches_the_far_end(
    swallowing_server: CallrecServer, tmp_path: Path
) -> None:
    server = swallowing_server
    pcap = tmp_path / "codes.pcap"
    write_rtp_pcap(pcap, duration_s=5.0, digits=[(1.0, "*"), (1.2, "1"), (3.0, "5")])
    # The trunk is a pjsua2 phone that reports every digit it receives.
    trunk = PhoneProcess(server.trunk_phone_args())
    trunk.wait_for("started", 15)
    phone = server.run_sipp_phone(
        tmp_path / "uac",
        caller="201",
        password="pw-201",
        pcap=pcap,
        call_length_ms=5500,
        timeout_s=40,
    )
    assert phone.ok, phone.summary()
    far_end = trunk.wait(30)
    assert far_end.named("confirmed"), far_end.events
    heard = [e["digit"] for e in far_end.named("dtmf_received")]
    assert heard == ["5"], far_end.events
    call = server.wait_for_calls(1)[0]
    recording = server.wait_for_recording(call["id"])
    assert len(recording["segments"]) == 1
    assert abs(recording["segments"][0][0] - 1.2) <= 0.1
