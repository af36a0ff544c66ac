"""Caller identity toward the trunk: the authenticated user, never what the phone wrote.

The pure rules of b2bua.identity, then the B-leg INVITE a `Call` builds from a phone's
INVITE that claims another identity (From 202, P-Asserted-Identity +18005550100,
Remote-Party-ID, P-Preferred-Identity), asks for privacy, or hides a bare CR.
"""

from __future__ import annotations

import pytest

from b2bua.call import Call, Party, Target
from b2bua.identity import (
    ANONYMOUS,
    CallerIdentity,
    clean_display,
    has_control,
    outbound_identity,
    requested_privacy,
)
from b2bua.message import Headers, NameAddr, SipRequest, parse_message
from b2bua.peer import Peer
from tests.b2bua.test_call import PHONE, SDP, Wire

TRUNK = Peer("127.0.0.1", 5080)
ALICE = CallerIdentity("201", "Alice Martin", "trunk.example.org")


def phone_invite(*extra: tuple[str, str], display: str = "Bob") -> SipRequest:
    """What an authenticated 201 sends when it pretends to be 202 / +18005550100."""
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKphone1")
    headers.add("Max-Forwards", "70")
    headers.add("From", f'"{display}" <sip:202@127.0.0.1:5062>;tag=phone1')
    headers.add("To", "<sip:300@127.0.0.1>")
    headers.add("Call-ID", "call-a@127.0.0.1")
    headers.add("CSeq", "2 INVITE")
    headers.add("Contact", "<sip:202@127.0.0.1:5062>")
    headers.add("P-Asserted-Identity", "<sip:+18005550100@127.0.0.1>")
    headers.add("P-Preferred-Identity", "<sip:+18005550100@127.0.0.1>")
    headers.add("Remote-Party-ID", '"Bank" <sip:+18005550100@127.0.0.1>;party=calling')
    headers.add("Subject", "kept")
    for name, value in extra:
        headers.add(name, value)
    headers.add("Content-Type", "application/sdp")
    return SipRequest("INVITE", "sip:300@127.0.0.1", headers, SDP)


def b_invite(request: SipRequest, identity: CallerIdentity | None = ALICE) -> SipRequest:
    wire = Wire()
    call = Call(wire, request, PHONE, "outbound", Party("201", "Alice Martin"), Party("300", None))
    call.identity = identity
    call.start([Target("sip:300@127.0.0.1:5080", TRUNK)])
    [invite] = wire.requests("INVITE", TRUNK)
    # What goes on the wire must parse back as the same message.
    return parse_message(invite.to_bytes())  # type: ignore[return-value]


def test_the_trunk_sees_the_authenticated_user_not_the_phone_claims() -> None:
    invite = b_invite(phone_invite())
    from_ = NameAddr.parse(invite.headers.get("From") or "")
    assert (from_.display, from_.uri) == ("Alice Martin", "sip:201@trunk.example.org")
    assert from_.tag and from_.tag != "phone1"
    for name in ("P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID", "Privacy"):
        assert name not in invite.headers, name
    wire = invite.to_bytes()
    # The claimed identities appear nowhere (202 as a user part: random tags, branches
    # and Call-IDs in hex may hold the digits "202").
    assert b"18005550100" not in wire and b"sip:202@" not in wire and b'"202"' not in wire
    assert invite.headers.get("Subject") == "kept"


def test_pai_mode_asserts_the_user_in_p_asserted_identity_too() -> None:
    invite = b_invite(phone_invite(), CallerIdentity("201", "Alice Martin", "10.0.0.1", "pai"))
    assert invite.headers.fields("P-Asserted-Identity") == ['"Alice Martin" <sip:201@10.0.0.1>']
    assert NameAddr.parse(invite.headers.get("From") or "").uri == "sip:201@10.0.0.1"


@pytest.mark.parametrize("privacy", ["id", "user", "header", "Header;Critical", "id;user"])
def test_privacy_gives_an_anonymous_from_and_the_identity_in_pai(privacy: str) -> None:
    invite = b_invite(phone_invite(("Privacy", privacy)))
    from_ = NameAddr.parse(invite.headers.get("From") or "")
    assert (from_.display, from_.uri) == (ANONYMOUS.display, ANONYMOUS.uri)
    assert invite.headers.fields("P-Asserted-Identity") == [
        '"Alice Martin" <sip:201@trunk.example.org>'
    ]
    values = (invite.headers.get("Privacy") or "").split(";")
    assert "id" in values
    assert set(values) == {*privacy.lower().split(";"), "id"}


def test_privacy_none_or_session_keeps_the_user_in_from() -> None:
    for privacy, kept in (("none", None), ("session", "session")):
        invite = b_invite(phone_invite(("Privacy", privacy)))
        assert NameAddr.parse(invite.headers.get("From") or "").display == "Alice Martin"
        assert "P-Asserted-Identity" not in invite.headers
        assert invite.headers.get("Privacy") == kept


def test_a_bare_cr_never_reaches_the_trunk() -> None:
    request = phone_invite(("X-Note", "a\rInjected: yes"), display="Ev\ril\x00\x1b")
    request.headers.set("To", '"Sales\r\nX: y" <sip:300@127.0.0.1>')
    for identity in (ALICE, CallerIdentity("201", "Ali\rce\x7f", "h.example")):
        data = b_invite(request, identity).to_bytes()
        head = data.split(b"\r\n\r\n")[0]
        assert b"\r" not in head.replace(b"\r\n", b""), head
        assert b"\x00" not in data and b"\x1b" not in data and b"\x7f" not in data
        assert b"Injected" not in data


def test_calls_from_the_trunk_keep_its_identity_headers_but_lose_control_characters() -> None:
    request = phone_invite()
    request.headers.set("From", '"Out\rside" <sip:0612345678@127.0.0.1>;tag=trunk1')
    wire = Wire()
    call = Call(wire, request, TRUNK, "inbound", Party("0612", None), Party("201", "Alice"))
    call.start([Target("sip:201@127.0.0.1:5064", PHONE)])
    [invite] = wire.requests("INVITE", PHONE)
    assert invite.headers.get("P-Asserted-Identity") == "<sip:+18005550100@127.0.0.1>"
    assert NameAddr.parse(invite.headers.get("From") or "").display == "Out side"


def test_clean_display_and_has_control() -> None:
    assert clean_display("Alice\r\nMartin") == "Alice Martin"
    assert clean_display("\x00\x01") is None
    assert clean_display(None) is None
    assert clean_display("Zoë\tK") == "Zoë K"
    assert has_control("a\rb") and has_control("a\x00") and has_control("\x7f")
    assert not has_control("tab\tis fine") and not has_control("Zoë")


def test_requested_privacy_keeps_only_rfc_3323_values() -> None:
    headers = Headers([("Privacy", "ID; none ;bogus"), ("Privacy", "critical")])
    assert requested_privacy(headers) == ["id", "critical"]


def test_outbound_identity_on_an_ipv6_trunk() -> None:
    from_, extra = outbound_identity(CallerIdentity("201", None, "::1"), Headers(), "t1")
    assert str(from_) == "<sip:201@[::1]>;tag=t1"
    assert extra == []
