"""DTMF interworking by SIP INFO: `Call.send_dtmf_info` sends a key in the dialog toward
the far end, one INFO at a time, and the worker's `dtmf` event reaches it through
`RemoteMedia` and the recording manager."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from b2bua.call import CallState
from b2bua.message import SipRequest, make_response
from callrec.policy import RecordingMode
from callrec.recording.manager import RecordingManager
from callrec.workers.remote import RemoteMedia
from tests.b2bua.test_call import DESK, PHONE, SDP, forked_call
from tests.storage.recording_factory import make_config


def answered_call() -> tuple[Any, Any]:
    call, wire = forked_call()
    desk = wire.requests("INVITE", DESK)[0]
    wire.answer(desk, 200, "desk", SDP)
    assert call.state == CallState.CONFIRMED
    return call, wire


def reply(wire: Any, request: SipRequest, status: int) -> None:
    wire.handlers[_branch(request) + "INFO"](make_response(request, status))


def _branch(request: SipRequest) -> str:
    return request.headers.get_all("Via")[0].split("branch=")[1].split(";")[0]


def test_a_key_goes_as_info_in_leg_bs_dialog() -> None:
    call, wire = answered_call()
    assert call.send_dtmf_info("b", "5", 160)
    [info] = wire.requests("INFO", DESK)
    assert info.headers.get("Content-Type") == "application/dtmf-relay"
    assert info.body == b"Signal=5\r\nDuration=160\r\n"
    assert info.headers.get("Call-ID") == call.b_call_id  # leg B's dialog, not the caller's
    assert info.headers.get("CSeq") == "2 INFO"  # after the INVITE's 1
    assert info.uri == "sip:device-desk@127.0.0.1"  # the remote target
    assert not wire.requests("INFO", PHONE)


def test_keys_go_one_info_at_a_time_in_order() -> None:
    call, wire = answered_call()
    for digit in "*2#":
        assert call.send_dtmf_info("b", digit)
    sent = wire.requests("INFO", DESK)
    assert len(sent) == 1  # the next waits for the answer
    reply(wire, sent[0], 100)
    assert len(wire.requests("INFO", DESK)) == 1  # a provisional answer is not the end
    reply(wire, sent[0], 200)
    reply(wire, wire.requests("INFO", DESK)[1], 415)  # refused: logged, the next goes
    bodies = [r.body for r in wire.requests("INFO", DESK)]
    assert bodies == [b"Signal=*\r\nDuration=160\r\n", b"Signal=2\r\nDuration=160\r\n",
                      b"Signal=#\r\nDuration=160\r\n"]  # fmt: skip
    cseqs = [r.headers.get("CSeq") for r in wire.requests("INFO", DESK)]
    assert cseqs == ["2 INFO", "3 INFO", "4 INFO"]


def test_leg_a_and_bad_keys_and_unanswered_calls() -> None:
    call, wire = answered_call()
    assert call.send_dtmf_info("a", "9")
    [info] = wire.requests("INFO", PHONE)
    assert info.headers.get("Call-ID") == "call-a@127.0.0.1"
    assert not call.send_dtmf_info("b", "x") and not call.send_dtmf_info("b", "12")
    ringing, ringing_wire = forked_call()
    assert not ringing.send_dtmf_info("b", "1")
    assert not ringing_wire.requests("INFO")
    call.hang_up()
    assert not call.send_dtmf_info("a", "1")


async def test_the_workers_dtmf_event_reaches_the_call(tmp_path: Path) -> None:
    """The path of `[media] dtmf_interworking = "info"` in the SIP process: the worker's
    `dtmf` event -> RemoteMedia -> the recording manager -> Call.send_dtmf_info."""
    config = make_config(tmp_path)
    config = replace(config, media=replace(config.media, dtmf_interworking="info"))
    call, wire = answered_call()
    sent: list[dict[str, Any]] = []
    media = RemoteMedia(0, 7, "127.0.0.1", sent.append, on_silence=print, on_idle=print,
                        on_closed=lambda _m: None)  # fmt: skip
    call.media = media
    call.recording_mode = RecordingMode.ON_DEMAND
    manager = RecordingManager(config, None, spawn=asyncio.get_running_loop().create_task)  # type: ignore[arg-type]
    manager.call_answered(call)
    [record] = [m for m in sent if m["op"] == "record"]
    assert record["spec"]["dtmf_interworking"] == "info"
    media.on_event({"ev": "dtmf", "sid": 7, "leg": "b", "digit": "4"})
    [info] = wire.requests("INFO", DESK)
    assert info.body == b"Signal=4\r\nDuration=160\r\n"
    assert not wire.requests("INFO", PHONE)
