"""Caller-ID spoofing against a real `callrec serve`: SIPp phone 201 claims to be others.

Before the fix the phone's From, P-Asserted-Identity, Remote-Party-ID and Privacy reached
the trunk unchanged: 201 was presented as 202 and as +18005550100, and a bare CR in a
display name reached the trunk. Here an authenticated 201 (testkit/sipp/uac_identity.xml)
sends From "Bob" <sip:202@...>, P-Asserted-Identity, P-Preferred-Identity and
Remote-Party-ID for +18005550100; the SIPp trunk logs every message it receives
(`-trace_msg`), and its INVITE must present 201 "Alice Martin" and nothing of the lie.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from b2bua.message import NameAddr, SipRequest, parse_message
from testkit.harness import HOST, CallrecServer, free_port, make_server

pytestmark = pytest.mark.e2e

CLAIMED = "+18005550100"
_RECEIVED = re.compile(rb"message received \[\d+\] bytes :\r?\n\r?\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"), sipp=True)
    srv.add_user("201", "Alice Martin", "pw-201")
    srv.add_user("202", "Bob Baker", "pw-202")
    yield from srv.serving()


def received_invite(trunk_dir: Path) -> tuple[SipRequest, bytes]:
    """The first INVITE the SIPp trunk received, parsed, and its raw header section."""
    for path in trunk_dir.glob("*.messages"):
        data = path.read_bytes()
        for match in _RECEIVED.finditer(data):
            start = match.end()
            if data.startswith(b"INVITE ", start):
                end = data.find(b"\n-----", start)
                raw = data[start : end if end > 0 else len(data)]
                message = parse_message(raw)
                assert isinstance(message, SipRequest)
                return message, raw.split(b"\r\n\r\n")[0]
    raise AssertionError(f"the trunk logged no INVITE in {trunk_dir}")


def call_as_201(
    server: CallrecServer,
    work: Path,
    *,
    privacy: str = "none",
    display: str = "Bob",
    to_display: str = "Sales",
) -> SipRequest:
    """201 places a call claiming 202 / +18005550100; the INVITE the trunk got."""
    trunk = server.start_sipp_trunk(work / "uas", trace_messages=True)
    phone = server.run_sipp_phone(
        work / "uac",
        "uac_identity.xml",
        caller="201",
        password="pw-201",
        local_port=free_port(),
        call_length_ms=300,
        keys={
            "from_user": "202",
            "display": display,
            "claimed": CLAIMED,
            "privacy": privacy,
            "to_display": to_display,
        },
    )
    trunk_result = trunk.wait()
    assert phone.ok, phone.summary()
    assert trunk_result.ok, trunk_result.summary()
    invite, head = received_invite(work / "uas")
    # Nothing the phone claimed about itself, in any header.
    assert CLAIMED.encode() not in head
    assert b"sip:202@" not in head and b'"Bob"' not in head
    for name in ("P-Preferred-Identity", "Remote-Party-ID"):
        assert name not in invite.headers
    return invite


def test_201_is_presented_as_201_whatever_it_claims(server: CallrecServer, tmp_path: Path) -> None:
    invite = call_as_201(server, tmp_path)
    from_ = NameAddr.parse(invite.headers.get("From") or "")
    assert from_.display == "Alice Martin"
    assert from_.uri == f"sip:201@{HOST}"  # the trunk URI's host
    assert "P-Asserted-Identity" not in invite.headers
    assert "Privacy" not in invite.headers
    assert invite.headers.get("Subject") == "callrec uac_identity"  # others still pass


def test_privacy_id_gives_an_anonymous_from_and_the_real_identity_in_pai(
    server: CallrecServer, tmp_path: Path
) -> None:
    invite = call_as_201(server, tmp_path, privacy="id")
    from_ = NameAddr.parse(invite.headers.get("From") or "")
    assert (from_.display, from_.uri) == ("Anonymous", "sip:anonymous@anonymous.invalid")
    assert invite.headers.fields("P-Asserted-Identity") == [f'"Alice Martin" <sip:201@{HOST}>']
    assert invite.headers.get("Privacy") == "id"


def test_a_bare_cr_in_a_display_name_never_reaches_the_trunk(
    server: CallrecServer, tmp_path: Path
) -> None:
    invite = call_as_201(server, tmp_path, display="Ev\ril", to_display="Sa\rInjected: 1")
    _, head = received_invite(tmp_path / "uas")
    assert b"\r" not in head.replace(b"\r\n", b""), head
    assert b"Injected: 1" not in head.replace(b"Sa Injected: 1", b"")
    # The CR did reach callrec (the display name kept its two halves): it was cleaned.
    assert NameAddr.parse(invite.headers.get("To") or "").display == "Sa Injected: 1"
    assert NameAddr.parse(invite.headers.get("From") or "").display == "Alice Martin"
