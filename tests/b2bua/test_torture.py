"""RFC 4475 torture messages and a seeded mutation fuzz test for b2bua.message."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest

from b2bua.message import (
    CSeq,
    NameAddr,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    StreamFramer,
    Via,
    parse_message,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "sip" / "rfc4475"
VALID = sorted((DATA / "valid").glob("*.sip"))
INVALID = sorted((DATA / "invalid").glob("*.sip"))

# What parse_message does with each message outside RFC 4475 3.1.1.
# ("error", text in the reason) = rejected here, so the server answers 400 (or drops it).
# ("parses", why) = syntactically fine; the problem is for a higher layer to act on.
INVALID_EXPECTED: dict[str, tuple[str, str]] = {
    # 3.1.2 syntax errors
    "badinv01": ("error", "Via"),
    "clerr": ("error", "larger than the body"),
    "scalar02": ("error", "CSeq number too large"),
    "scalarlg": ("error", "CSeq number too large"),
    "quotbal": ("error", "unterminated quoted string"),
    "ltgtruri": ("error", "must not be enclosed in <>"),
    "lwsruri": ("error", "bad request line"),
    "lwsstart": ("error", "bad request line"),
    "trws": ("error", "bad request line"),
    "escruri": ("error", "must not contain URI headers"),
    "baddate": (
        "parses",
        "Date is not interpreted by callrec; the header is passed through unchanged "
        "(RFC 4475 allows ignoring it)",
    ),
    "regbadct": ("error", "must be enclosed in <>"),
    "badaspec": ("error", "not a URI"),
    "baddn": ("error", "display name must be tokens"),
    "badvers": ("error", "unsupported SIP version"),
    "mismatch01": ("error", "does not match request method"),
    "mismatch02": ("error", "does not match request method"),
    "bigcode": ("error", "invalid status code"),
    # 3.2 transaction layer
    "badbranch": (
        "parses",
        "branch 'z9hG4bK' alone is well-formed; matching it is the transaction layer's job",
    ),
    # 3.3 application layer
    "insuf": ("error", "missing mandatory header(s): From, To, Call-ID"),
    "unkscm": ("parses", "unknown Request-URI scheme: the B2BUA answers 416"),
    "novelsc": ("parses", "unknown Request-URI scheme: the B2BUA answers 416"),
    "unksm2": ("parses", "non-SIP schemes in To/From/Contact are legal syntax; registrar rejects"),
    "bext01": ("parses", "Require of an unknown extension: the B2BUA answers 420"),
    "invut": ("parses", "unknown body type: the B2BUA answers 415"),
    "regaut01": ("parses", "unknown Authorization scheme: the registrar challenges (401)"),
    "multi01": ("error", "appears more than once"),
    "mcl01": ("error", "Content-Length appears more than once"),
    "bcast": ("parses", "broadcast Via address: the transaction layer must not reply there"),
    "zeromf": ("parses", "Max-Forwards 0 is valid; the B2BUA answers 483 to non-OPTIONS"),
    "cparam01": ("parses", "valid: unknownparam is a Contact header parameter"),
    "cparam02": ("parses", "valid: unknownparam is a URI parameter"),
    "regescrt": ("parses", "Route header escaped in a Contact URI: the registrar must not use it"),
    "sdp01": ("parses", "Accept without application/sdp: the B2BUA answers 415"),
    # 3.4 backward compatibility
    "inv2543": ("parses", "RFC 2543 style (no branch, no Max-Forwards, no Content-Length)"),
}


def _same(first: SipMessage, second: SipMessage) -> bool:
    """Equal apart from Content-Length, which to_bytes always writes."""

    def normalised(message: SipMessage) -> tuple[object, ...]:
        headers = message.headers.copy()
        headers.remove("Content-Length")
        start = (
            (message.method, message.uri)
            if isinstance(message, SipRequest)
            else (message.status, message.reason)
        )
        return (type(message), start, message.version, list(headers), message.body)

    return normalised(first) == normalised(second)


def _load(name: str) -> bytes:
    for path in VALID + INVALID:
        if path.stem == name:
            return path.read_bytes()
    raise FileNotFoundError(name)


def test_fixture_set_is_complete() -> None:
    assert {path.stem for path in VALID} == {
        "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq",
        "dblreq", "semiuri", "transports", "mpart01", "unreason", "noreason",
    }  # fmt: skip
    assert {path.stem for path in INVALID} == set(INVALID_EXPECTED)
    for path in VALID + INVALID:
        data = path.read_bytes()
        head = data.split(b"\r\n\r\n", 1)[0]
        assert b"\n" not in head.replace(b"\r\n", b""), f"{path.name} has bare LF in headers"


@pytest.mark.parametrize("path", VALID, ids=lambda path: path.stem)
def test_valid_messages_parse_and_round_trip(path: Path) -> None:
    message = parse_message(path.read_bytes())
    assert _same(parse_message(message.to_bytes()), message)
    for via in message.headers.get_all("Via"):
        Via.parse(via)
    NameAddr.parse(message.headers.get("From") or "")
    NameAddr.parse(message.headers.get("To") or "")
    for contact in message.headers.get_all("Contact"):
        NameAddr.parse(contact)


@pytest.mark.parametrize("path", INVALID, ids=lambda path: path.stem)
def test_invalid_messages(path: Path) -> None:
    outcome, detail = INVALID_EXPECTED[path.stem]
    data = path.read_bytes()
    if outcome == "parses":
        message = parse_message(data)
        assert _same(parse_message(message.to_bytes()), message)
        return
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert detail in info.value.reason
    assert "\n" not in info.value.reason
    if data.startswith(b"SIP/2.0"):
        assert info.value.partial is None
    elif path.stem != "insuf":
        # Everything needed for a 400 is there, so the request must be salvaged.
        assert info.value.partial is not None
        assert info.value.partial.headers.get("Call-ID")


def test_wsinv_details() -> None:
    message = parse_message(_load("wsinv"))
    assert isinstance(message, SipRequest)
    assert message.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    headers = message.headers
    to = NameAddr.parse(headers.get("To") or "")
    assert (to.uri, to.tag) == ("sip:vivekg@chair-dnrc.example.com", "1918181833n")
    sender = NameAddr.parse(headers.get("From") or "")
    assert sender.display == 'J Rosenberg \\"'
    assert sender.tag == "98asjd8"
    assert headers.get("Max-Forwards") == "0068"
    assert CSeq.parse(headers.get("CSeq") or "") == CSeq(9, "INVITE")
    vias = [Via.parse(value) for value in headers.get_all("Via")]
    assert [(via.transport, via.host, via.branch) for via in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert headers.get("Subject") == ""
    assert headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    contact = NameAddr.parse(headers.get("Contact") or "")
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    route = headers.get("Route") or ""
    assert route == "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    assert len(message.body) == 150 and message.body.startswith(b"v=0\r\n")


def test_intmeth_details() -> None:
    message = parse_message(_load("intmeth"))
    assert isinstance(message, SipRequest)
    assert message.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = SipUri.parse(message.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    to = NameAddr.parse(message.headers.get("To") or "")
    assert to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    sender = NameAddr.parse(message.headers.get("From") or "")
    assert sender.display == "token1~` token2'+_ token3*%!.-"
    assert (
        sender.params["fromparam''~+*_!.-%"]
        == '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"'
    )
    assert sender.tag == "_token~1'+`*%!-."
    assert message.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"
    assert message.headers.get("Call-ID") == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"


def test_escape_details() -> None:
    esc01 = parse_message(_load("esc01"))
    assert isinstance(esc01, SipRequest)
    uri = SipUri.parse(esc01.uri)
    assert (uri.user, uri.host) == ("sips%3Auser%40example.com", "example.net")
    contact = NameAddr.parse(esc01.headers.get("Contact") or "")
    assert SipUri.parse(contact.uri).params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    esc02 = parse_message(_load("esc02"))
    assert isinstance(esc02, SipRequest)
    assert esc02.method == "RE%47IST%45R"
    assert len(esc02.headers.get_all("Contact")) == 2
    assert esc02.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    escnull = parse_message(_load("escnull"))
    assert escnull.headers.get_all("Contact") == [
        "<sip:%00@host5.example.com>",
        "<sip:%00%00@host5.example.com>",
    ]


def test_other_valid_details() -> None:
    longreq = parse_message(_load("longreq"))
    assert len(longreq.headers.get_all("Via")) == 34
    assert Via.parse(longreq.headers.get_all("Via")[-1]).params["received"] == "192.0.2.5"
    dblreq = parse_message(_load("dblreq"))
    assert isinstance(dblreq, SipRequest)
    assert (dblreq.method, dblreq.body) == ("REGISTER", b"")
    semiuri = parse_message(_load("semiuri"))
    assert isinstance(semiuri, SipRequest)
    assert SipUri.parse(semiuri.uri).user == "user;par=u%40example.net"
    assert semiuri.headers.get_all("Accept")[-1] == "message/sipfrag"
    transports = parse_message(_load("transports"))
    assert [Via.parse(v).transport for v in transports.headers.get_all("Via")] == [
        "UDP", "SCTP", "TLS", "UNKNOWN", "TCP",
    ]  # fmt: skip
    mpart = parse_message(_load("mpart01"))
    assert len(mpart.body) == 553 and b"\r\n\r\n\x00" in mpart.body
    unreason = parse_message(_load("unreason"))
    assert isinstance(unreason, SipResponse)
    assert unreason.reason.endswith("\u043f\u0440\u043e\u0441\u0442\u043e\u0435")
    noreason = parse_message(_load("noreason"))
    assert isinstance(noreason, SipResponse)
    assert (noreason.status, noreason.reason) == (100, "")
    lwsdisp = parse_message(_load("lwsdisp"))
    assert NameAddr.parse(lwsdisp.headers.get("From") or "").display == "caller"


def test_semantic_details_of_parsed_invalid_ones() -> None:
    cparam01 = NameAddr.parse(parse_message(_load("cparam01")).headers.get("Contact") or "")
    assert cparam01.uri == "sip:+19725552222@gw1.example.net"
    assert cparam01.params == {"unknownparam": None}
    cparam02 = NameAddr.parse(parse_message(_load("cparam02")).headers.get("Contact") or "")
    assert cparam02.params == {}
    assert SipUri.parse(cparam02.uri).params == {"unknownparam": None}
    inv2543 = parse_message(_load("inv2543"))
    assert inv2543.body.startswith(b"v=0") and inv2543.body.endswith(b"0\r\n")
    assert Via.parse(inv2543.headers.get("Via") or "").branch is None


def test_stream_framer_on_torture_messages() -> None:
    with_length = [
        path.read_bytes()
        for path in VALID
        if path.stem not in ("dblreq",)  # dblreq's trailing INVITE is deliberately ignored
    ]
    stream = b"\r\n".join(with_length)
    framer = StreamFramer()
    out: list[bytes] = []
    for start in range(0, len(stream), 97):
        out.extend(framer.feed(stream[start : start + 97]))
    assert out == with_length


# ---------------------------------------------------------------------- fuzz

_INTERESTING = [
    b":", b";", b",", b"\r\n", b"\r\n ", b"\x00", b'"', b"\\", b"<", b">", b" ",
    b"=", b"@", b"[", b"]", b"%", b"/", b"\xff", b"\r\n\r\n", b"9" * 12, b"-",
]  # fmt: skip


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buffer:
            buffer += rng.choice(_INTERESTING)
            continue
        position = rng.randrange(len(buffer))
        operation = rng.randrange(6)
        if operation == 0:
            buffer[position] = rng.randrange(256)
        elif operation == 1:
            buffer[position:position] = rng.choice(_INTERESTING)
        elif operation == 2:
            del buffer[position : position + rng.randint(1, 16)]
        elif operation == 3:
            end = min(len(buffer), position + rng.randint(1, 40))
            buffer[position:position] = buffer[position:end]
        elif operation == 4:
            del buffer[position:]
        else:
            buffer[position] = rng.choice(b' \t;:,<>"\r\n')
    return bytes(buffer)


def test_mutation_fuzz_only_raises_sip_parse_error() -> None:
    rng = random.Random(4475)
    seeds = [path.read_bytes() for path in VALID + INVALID]
    parsed = rejected = 0
    for _ in range(2000):
        data = _mutate(rng.choice(seeds), rng)
        try:
            message = parse_message(data)
        except SipParseError as error:
            rejected += 1
            assert error.reason and "\n" not in error.reason
            if error.partial is not None:
                assert isinstance(error.partial, SipRequest)
                error.partial.to_bytes()
        else:
            parsed += 1
            # Whatever we accept, we can write out and read back identically.
            assert _same(parse_message(message.to_bytes()), message)
        with contextlib.suppress(SipParseError):
            StreamFramer().feed(data)
    # Both branches must be exercised, or the fuzzer is not testing anything.
    assert parsed > 100 and rejected > 100
