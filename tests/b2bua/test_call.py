"""The call controller on its own: messages in, the messages it asks to send out.

`Call` talks to the world only through its `CallServices` port; `Wire` below implements
that port by keeping what the call sends, so each test can play both phones and check
the exact requests and responses, including paths the end-to-end tests cannot force
(two devices answering at once, a CANCEL before any provisional, a late offer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from b2bua.call import Call, CallState, Party, ResponseHandler, Target
from b2bua.message import (
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    generate_branch,
    make_response,
)
from b2bua.peer import Peer

PHONE = Peer("127.0.0.1", 5062)
DESK = Peer("127.0.0.1", 5064)
MOBILE = Peer("127.0.0.1", 5066)
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 8\r\n"
)


@dataclass
class Sent:
    message: SipRequest | SipResponse
    peer: Peer | None


@dataclass
class Wire:
    """The call's services, keeping everything it sends."""

    sent: list[Sent] = field(default_factory=list)
    handlers: dict[str, ResponseHandler] = field(default_factory=dict)
    ended: list[Call] = field(default_factory=list)
    answered: list[Call] = field(default_factory=list)
    cdr_updates: list[dict[str, object]] = field(default_factory=list)

    def send_request(self, request: SipRequest, peer: Peer, on_response: ResponseHandler) -> None:
        self.sent.append(Sent(request, peer))
        self.handlers[_branch(request) + request.method] = on_response

    def send_response(self, response: SipResponse) -> None:
        self.sent.append(Sent(response, None))

    def send_ack(self, ack: SipRequest, peer: Peer) -> None:
        self.sent.append(Sent(ack, peer))

    def via(self, peer: Peer) -> str:
        return f"SIP/2.0/UDP 127.0.0.1:5060;branch={generate_branch()}"

    def contact(self, peer: Peer) -> str:
        return "<sip:callrec@127.0.0.1:5060>"

    def media_address(self) -> str:
        return "127.0.0.1"

    def call_ended(self, call: Call) -> None:
        self.ended.append(call)

    def register_dialog(self, call: Call, call_id: str, local_tag: str, leg: str) -> None:
        pass

    def record_cdr(self, call: Call, **fields: object) -> None:
        self.cdr_updates.append(fields)

    def call_answered(self, call: Call) -> None:
        self.answered.append(call)

    def media_changed(self, call: Call, leg: str, sdp: bytes) -> None:
        pass

    def info_received(self, call: Call, leg: str, request: SipRequest) -> None:
        pass

    # -- playing the far ends -----------------------------------------------------------
    def requests(self, method: str, peer: Peer | None = None) -> list[SipRequest]:
        return [
            s.message
            for s in self.sent
            if isinstance(s.message, SipRequest)
            and s.message.method == method
            and (peer is None or s.peer == peer)
        ]

    def responses(self) -> list[int]:
        return [s.message.status for s in self.sent if isinstance(s.message, SipResponse)]

    def answer(self, request: SipRequest, status: int, to_tag: str, body: bytes = b"") -> None:
        response = make_response(request, status, to_tag=to_tag)
        response.headers.set("Contact", f"<sip:device-{to_tag}@127.0.0.1>")
        if body:
            response.headers.set("Content-Type", "application/sdp")
            response.body = body
        self.handlers[_branch(request) + request.method](response)


def _branch(request: SipRequest) -> str:
    return request.headers.get_all("Via")[0].split("branch=")[1].split(";")[0]


def invite(body: bytes = SDP) -> SipRequest:
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKphone1")
    headers.add("Max-Forwards", "70")
    headers.add("From", '"Trunk" <sip:0612345678@127.0.0.1>;tag=trunk1')
    headers.add("To", "<sip:201@127.0.0.1>")
    headers.add("Call-ID", "call-a@127.0.0.1")
    headers.add("CSeq", "1 INVITE")
    headers.add("Contact", "<sip:trunk@127.0.0.1:5062>")
    headers.add("X-Custom", "kept as is")
    if body:
        headers.add("Content-Type", "application/sdp")
    return SipRequest("INVITE", "sip:201@127.0.0.1", headers, body)


def forked_call(body: bytes = SDP, now: Callable[[], float] = time.time) -> tuple[Call, Wire]:
    wire = Wire()
    call = Call(
        wire,
        invite(body),
        PHONE,
        "inbound",
        Party("0612345678", "Trunk"),
        Party("201", "A"),
        now=now,
    )
    call.start([Target("sip:201@127.0.0.1:5064", DESK), Target("sip:201@127.0.0.1:5066", MOBILE)])
    return call, wire


def test_each_device_gets_its_own_branch_with_leg_b_identity() -> None:
    call, wire = forked_call()
    desk, mobile = wire.requests("INVITE", DESK)[0], wire.requests("INVITE", MOBILE)[0]
    assert _branch(desk) != _branch(mobile)
    for request in (desk, mobile):
        assert request.headers.get("Call-ID") == call.b_call_id != "call-a@127.0.0.1"
        assert NameAddr.parse(request.headers.get("From") or "").tag == call.b_tag != "trunk1"
        assert request.headers.get("X-Custom") == "kept as is"
        assert request.headers.get("Max-Forwards") == "69"


def test_first_answer_wins_and_a_second_answer_is_acked_and_hung_up() -> None:
    call, wire = forked_call()
    desk, mobile = wire.requests("INVITE", DESK)[0], wire.requests("INVITE", MOBILE)[0]
    wire.answer(desk, 180, "desk")
    wire.answer(mobile, 180, "mobile")
    wire.answer(desk, 200, "desk", SDP)
    assert call.state == CallState.CONFIRMED and wire.answered == [call]
    assert wire.requests("CANCEL", MOBILE), "the other device is cancelled"
    assert 200 in wire.responses()
    # The mobile answered at the same moment: it gets an ACK and a BYE, the caller nothing.
    wire.answer(mobile, 200, "mobile", SDP)
    assert wire.requests("ACK", MOBILE) and wire.requests("BYE", MOBILE)
    assert wire.responses().count(200) == 1
    assert call.state == CallState.CONFIRMED


def test_cancel_before_any_provisional_waits_for_one() -> None:
    call, wire = forked_call()
    desk = wire.requests("INVITE", DESK)[0]
    call.on_cancel()
    assert 487 in wire.responses() and wire.ended == [call]
    # RFC 3261 9.1: no CANCEL until the device has sent a provisional response.
    assert not wire.requests("CANCEL")
    wire.answer(desk, 100, "")
    cancels = wire.requests("CANCEL", DESK)
    assert len(cancels) == 1
    assert _branch(cancels[0]) == _branch(desk)
    assert (cancels[0].headers.get("CSeq") or "").endswith("CANCEL")


def test_all_devices_failing_gives_the_best_failure() -> None:
    call, wire = forked_call()
    desk, mobile = wire.requests("INVITE", DESK)[0], wire.requests("INVITE", MOBILE)[0]
    wire.answer(desk, 480, "desk")
    assert wire.responses() == []  # the mobile may still answer
    wire.answer(mobile, 486, "mobile")
    assert wire.responses() == [486]
    assert call.final_status == 486 and wire.ended == [call]


def test_late_offer_answer_travels_in_the_acks() -> None:
    """INVITE without SDP: the offer comes in the 200, the answer in the caller's ACK."""
    call, wire = forked_call(body=b"")
    desk = wire.requests("INVITE", DESK)[0]
    assert desk.body == b""
    wire.answer(desk, 200, "desk", SDP)
    assert not wire.requests("ACK", DESK), "leg B's ACK waits for the caller's answer"
    ack = SipRequest("ACK", "sip:callrec@127.0.0.1:5060", invite().headers.copy(), SDP)
    ack.headers.set("CSeq", "1 ACK")
    ack.headers.set("To", f"<sip:201@127.0.0.1>;tag={call.a_tag}")
    call.on_ack(ack, "a")
    [b_ack] = wire.requests("ACK", DESK)
    assert b_ack.body == SDP
    assert b_ack.headers.get("Content-Type") == "application/sdp"


def test_hang_up_sends_a_bye_with_the_reason_to_both_sides() -> None:
    call, wire = forked_call()
    desk = wire.requests("INVITE", DESK)[0]
    wire.answer(desk, 200, "desk", SDP)
    call.hang_up(reason='SIP ;cause=408 ;text="no RTP for 120 s"')
    byes = wire.requests("BYE")
    assert sorted(str(s.peer) for s in wire.sent if s.message in byes) == sorted(
        [str(PHONE), str(DESK)]
    )
    assert {bye.headers.get("Reason") for bye in byes} == {
        'SIP ;cause=408 ;text="no RTP for 120 s"'
    }
    assert call.state == CallState.ENDED and wire.ended == [call]


def test_hang_up_while_ringing_cancels_each_branch_with_the_reason() -> None:
    reason = 'SIP ;cause=503 ;text="media worker lost"'
    call, wire = forked_call()
    desk, mobile = wire.requests("INVITE", DESK)[0], wire.requests("INVITE", MOBILE)[0]
    wire.answer(desk, 180, "desk")  # the mobile has sent nothing yet: its CANCEL waits
    call.hang_up(reason=reason)
    [desk_cancel] = wire.requests("CANCEL", DESK)
    assert desk_cancel.headers.get("Reason") == reason
    assert wire.requests("CANCEL", MOBILE) == []
    wire.answer(mobile, 180, "mobile")
    [mobile_cancel] = wire.requests("CANCEL", MOBILE)
    assert mobile_cancel.headers.get("Reason") == reason
    finals = [s.message for s in wire.sent if isinstance(s.message, SipResponse)]
    [to_caller] = [response for response in finals if response.status >= 200]
    assert to_caller.status == 487 and to_caller.headers.get("Reason") == reason
    assert call.state == CallState.ENDED


def test_a_callers_cancel_carries_no_reason_of_ours() -> None:
    call, wire = forked_call()
    wire.answer(wire.requests("INVITE", DESK)[0], 180, "desk")
    call.on_cancel()
    [cancel] = wire.requests("CANCEL", DESK)
    assert cancel.headers.get("Reason") is None


def test_on_hold_reads_the_last_sdp_of_each_leg() -> None:
    call, _ = forked_call()
    call.sdp = {"a": SDP, "b": SDP}
    assert not call.on_hold()
    for held in (
        SDP + b"a=sendonly\r\n",
        SDP + b"a=inactive\r\n",
        SDP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0"),
        SDP.replace(b"m=audio 4000", b"m=audio 0"),
    ):
        call.sdp = {"a": SDP, "b": held}
        assert call.on_hold(), held


def test_the_call_times_come_from_its_clock() -> None:
    clock = [1_700_000_000.0]
    call, wire = forked_call(now=lambda: clock[0])
    assert call.started_at == 1_700_000_000.0
    clock[0] += 4.5
    wire.answer(wire.requests("INVITE", DESK)[0], 200, "desk", SDP)
    assert call.answered_at == 1_700_000_004.5
    clock[0] += 60.0
    call.hang_up()
    assert call.ended_at == 1_700_000_064.5
    assert {"answered_at": 1_700_000_004.5, "sip_status": 200} in wire.cdr_updates
    assert any(update.get("ended_at") == 1_700_000_064.5 for update in wire.cdr_updates)
