"""SRTP through the call controller: what each leg is sent, the keys handed to the
media, and the refusals (488 with a Warning) that end a call cleanly."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from b2bua.call import Call, CallState, Party, Target
from b2bua.message import SipResponse
from b2bua.peer import Peer
from b2bua.sdes import MasterKey, SrtpNegotiation
from tests.b2bua.test_call import PHONE, Wire, invite

TRUNK = Peer("127.0.0.1", 5080)
PHONE_KEY = base64.b64encode(bytes(range(30))).decode()
TRUNK_KEY = base64.b64encode(bytes(range(50, 80))).decode()


def sdp(host: str, proto: str, *crypto: str) -> bytes:
    lines = [
        "v=0",
        f"o=- 1 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio 4000 {proto} 0",
        *(f"a=crypto:{value}" for value in crypto),
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


PHONE_OFFER = sdp("10.0.0.1", "RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}")


@dataclass
class Media:
    """A MediaLeg that keeps the keys it is given."""

    keys: list[tuple[str, MasterKey | None, MasterKey | None]] = field(default_factory=list)

    def local_port(self, leg: str) -> int:
        return 30000 if leg == "a" else 30002

    def set_remote(self, leg: str, host: str, port: int, **_: object) -> None:
        pass

    def set_crypto(self, leg: str, receive: MasterKey | None, send: MasterKey | None) -> None:
        self.keys.append((leg, receive, send))

    def mark_media_started(self) -> None:
        pass

    def close(self) -> None:
        pass


def outbound(body: bytes, trunk_srtp: str) -> tuple[Call, Wire, Media]:
    wire, media = Wire(), Media()
    call = Call(wire, invite(body), PHONE, "outbound", Party("201", "A"), Party("300", None))
    call.media = media
    call.srtp = SrtpNegotiation(trunk_leg="b", trunk_mode=trunk_srtp)
    call.start([Target("sip:300@127.0.0.1:5080", TRUNK)])
    return call, wire, media


def final_to_phone(wire: Wire) -> SipResponse:
    responses = [s.message for s in wire.sent if isinstance(s.message, SipResponse)]
    return responses[-1]


def test_a_plain_trunk_gets_no_keys_and_the_phone_gets_callrecs() -> None:
    call, wire, media = outbound(PHONE_OFFER, "off")
    [to_trunk] = wire.requests("INVITE", TRUNK)
    assert b"a=crypto" not in to_trunk.body and b"RTP/AVP" in to_trunk.body
    wire.answer(to_trunk, 200, "t1", sdp("10.0.0.2", "RTP/AVP"))
    answer = final_to_phone(wire)
    assert answer.status == 200 and b"RTP/SAVP" in answer.body
    assert PHONE_KEY.encode() not in answer.body and b"a=crypto:1 " in answer.body
    [(leg, receive, send)] = media.keys
    assert leg == "a" and receive == MasterKey("AES_CM_128_HMAC_SHA1_80", bytes(range(30)))
    assert send is not None and send.inline().encode() in answer.body
    # What the recorder and the hold check see has no keys.
    assert all(b"a=crypto" not in body for body in call.sdp.values())


def test_a_required_trunk_answering_plain_fails_the_call_with_488() -> None:
    call, wire, media = outbound(PHONE_OFFER, "require")
    [to_trunk] = wire.requests("INVITE", TRUNK)
    assert b"RTP/SAVP" in to_trunk.body and PHONE_KEY.encode() not in to_trunk.body
    wire.answer(to_trunk, 200, "t1", sdp("10.0.0.2", "RTP/AVP"))
    refusal = final_to_phone(wire)
    assert refusal.status == 488
    assert "the trunk answered without SRTP" in (refusal.headers.get("Warning") or "")
    # The trunk's 2xx is acknowledged and its dialog hung up; nothing was keyed.
    assert len(wire.requests("ACK", TRUNK)) == 1 and len(wire.requests("BYE", TRUNK)) == 1
    assert call.state == CallState.ENDED and call.final_status == 488
    assert wire.cdr_updates[-1]["disposition"] == "failed" and media.keys == []


def test_a_required_trunk_answering_with_keys_keys_both_legs() -> None:
    _, wire, media = outbound(PHONE_OFFER, "require")
    [to_trunk] = wire.requests("INVITE", TRUNK)
    answer = sdp("10.0.0.2", "RTP/SAVP", f"2 AES_CM_128_HMAC_SHA1_32 inline:{TRUNK_KEY}")
    wire.answer(to_trunk, 200, "t1", answer)
    assert final_to_phone(wire).status == 200
    legs = {leg: (receive, send) for leg, receive, send in media.keys}
    assert legs["b"][0] == MasterKey("AES_CM_128_HMAC_SHA1_32", bytes(range(50, 80)))
    assert TRUNK_KEY.encode() not in final_to_phone(wire).body


def test_an_offer_with_no_supported_suite_gets_488_before_the_trunk_hears_of_it() -> None:
    offer = sdp("10.0.0.1", "RTP/SAVP", f"1 AES_256_CM_HMAC_SHA1_80 inline:{PHONE_KEY}")
    call, wire, _ = outbound(offer, "off")
    assert wire.requests("INVITE", TRUNK) == []
    refusal = final_to_phone(wire)
    assert refusal.status == 488 and "AES_CM_128_HMAC_SHA1_80" in (
        refusal.headers.get("Warning") or ""
    )
    assert call.state == CallState.ENDED


def test_a_re_invite_from_the_phone_carries_no_phone_key_to_the_trunk() -> None:
    call, wire, _ = outbound(PHONE_OFFER, "require")
    [to_trunk] = wire.requests("INVITE", TRUNK)
    answer = sdp("10.0.0.2", "RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{TRUNK_KEY}")
    wire.answer(to_trunk, 200, "t1", answer)
    assert call.dialog_a is not None
    reinvite = invite(PHONE_OFFER.replace(b"sendrecv", b"sendonly"))
    reinvite.headers.set("To", f"{reinvite.headers.get('To')};tag={call.a_tag}")
    reinvite.headers.set("CSeq", "2 INVITE")
    call.on_request(reinvite, "a")
    forwarded = wire.requests("INVITE", TRUNK)[-1]
    assert forwarded is not to_trunk
    assert PHONE_KEY.encode() not in forwarded.body and b"RTP/SAVP" in forwarded.body
    # The same keys toward the trunk as in the first offer: its SRTP context goes on.
    assert forwarded.body.split(b"a=crypto")[1:] == to_trunk.body.split(b"a=crypto")[1:]


def test_early_media_without_keys_from_a_required_trunk_cancels_it_once() -> None:
    call, wire, media = outbound(PHONE_OFFER, "require")
    [to_trunk] = wire.requests("INVITE", TRUNK)
    wire.answer(to_trunk, 183, "t1", sdp("10.0.0.2", "RTP/AVP"))
    assert len(wire.requests("CANCEL", TRUNK)) == 1
    assert final_to_phone(wire).status == 488
    assert call.state == CallState.ENDED and media.keys == []
    wire.answer(to_trunk, 487, "t1")  # the trunk's answer to the CANCEL changes nothing
    assert len(wire.requests("CANCEL", TRUNK)) == 1 and wire.responses().count(488) == 1
