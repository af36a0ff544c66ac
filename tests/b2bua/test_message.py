"""Unit tests for b2bua.message: parsing, serialising, helpers and stream framing."""

from __future__ import annotations

import time

import pytest

from b2bua.message import (
    REASON_PHRASES,
    CSeq,
    Headers,
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    StreamFramer,
    Via,
    generate_branch,
    generate_call_id,
    generate_tag,
    make_response,
    parse_message,
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice A." <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"X-Custom-Thing: keep   this,  exactly ;x=1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)

RESPONSE = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bK4b43c2ff8.1\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _request(**replace: str) -> bytes:
    """INVITE with some header lines replaced (name -> full line, '' deletes it)."""
    lines = INVITE.split(b"\r\n")
    out = []
    for line in lines:
        name = line.split(b":", 1)[0].decode()
        if name in replace:
            if replace[name]:
                out.append(replace[name].encode())
        else:
            out.append(line)
    return b"\r\n".join(out)


def _error(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    return info.value


# ---------------------------------------------------------------------- basic parsing


def test_parse_request_fields() -> None:
    message = parse_message(INVITE)
    assert isinstance(message, SipRequest)
    assert message.method == "INVITE"
    assert message.uri == "sip:bob@biloxi.example.com"
    assert message.version == "SIP/2.0"
    assert message.headers.get("call-id") == "a84b4c76e66710@pc33.atlanta.example.com"
    assert message.headers.get("CSEQ") == "314159 INVITE"
    assert message.body == b"v=0\n"


def test_parse_response_fields() -> None:
    message = parse_message(RESPONSE)
    assert isinstance(message, SipResponse)
    assert (message.status, message.reason) == (180, "Ringing")
    assert len(message.headers.get_all("Via")) == 2
    assert message.body == b""


def test_leading_crlf_keepalive_is_skipped() -> None:
    message = parse_message(b"\r\n\r\n" + INVITE)
    assert isinstance(message, SipRequest)
    assert message.method == "INVITE"


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\r\n\r\n", b"\n"])
def test_pure_keepalive_is_an_error_without_partial(data: bytes) -> None:
    error = _error(data)
    assert "empty" in error.reason
    assert error.partial is None


def test_bare_lf_line_endings_are_accepted() -> None:
    message = parse_message(INVITE.replace(b"\r\n", b"\n"))
    assert isinstance(message, SipRequest)
    assert message.headers.get("To") == "Bob <sip:bob@biloxi.example.com>"
    assert message.body == b"v=0\n"


def test_compact_forms_are_expanded() -> None:
    data = (
        b"OPTIONS sip:a@b.example SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h.example;branch=z9hG4bK1\r\n"
        b"f: <sip:x@y.example>;tag=1\r\n"
        b"t: <sip:a@b.example>\r\n"
        b"i: cid1\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"m: <sip:x@h.example>\r\n"
        b"k: timer\r\n"
        b"s: hello\r\n"
        b"c: text/plain\r\n"
        b"l: 2\r\n"
        b"\r\nhi"
    )
    message = parse_message(data)
    names = [name for name, _ in message.headers]
    assert names == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Supported",
        "Subject",
        "Content-Type",
        "Content-Length",
    ]
    assert message.headers.get("i") == "cid1"
    assert message.body == b"hi"
    serialised = message.to_bytes()
    assert b"\r\nCall-ID: cid1\r\n" in serialised
    assert b"\r\nContent-Length: 2\r\n" in serialised
    assert b"\r\ni:" not in serialised


def test_folded_headers_are_unfolded() -> None:
    data = _request(
        **{"Subject": "", "X-Custom-Thing": "X-Custom-Thing: first\r\n   second\r\n\tthird"}
    )
    message = parse_message(data)
    assert message.headers.get("X-Custom-Thing") == "first second third"


def test_unknown_headers_pass_through_byte_for_byte_in_order() -> None:
    data = _request(
        **{
            "X-Custom-Thing": "X-Custom-Thing:  keep   this,  exactly ;x=1\r\n"
            'x-lower-CASE: "quoted, with comma" <sip:z>\r\n'
            "P-Weird: ;;,,;;,;"
        }
    )
    message = parse_message(data)
    out = message.to_bytes()
    assert b"\r\nX-Custom-Thing: keep   this,  exactly ;x=1\r\n" in out
    assert b'\r\nx-lower-CASE: "quoted, with comma" <sip:z>\r\n' in out
    assert b"\r\nP-Weird: ;;,,;;,;\r\n" in out
    names = [name for name, _ in message.headers]
    assert names.index("X-Custom-Thing") < names.index("x-lower-CASE") < names.index("P-Weird")


def test_round_trip_is_stable() -> None:
    message = parse_message(INVITE)
    again = parse_message(message.to_bytes())
    assert again == message
    assert again.to_bytes() == message.to_bytes()
    assert message.to_bytes() == INVITE  # canonical input survives byte for byte


def test_utf8_and_raw_bytes_survive_round_trip() -> None:
    data = _request(**{"X-Custom-Thing": "Subject: caf\u00e9 \u263a"}).replace(
        b"Max-Forwards: 70", b"X-Bin: \xff\xfe\x80"
    )
    message = parse_message(data)
    assert message.headers.get("Subject") == "caf\u00e9 \u263a"
    out = message.to_bytes()
    assert "caf\u00e9 \u263a".encode() in out
    assert b"X-Bin: \xff\xfe\x80\r\n" in out


# ---------------------------------------------------------------------- Content-Length


def test_udp_body_is_truncated_to_content_length() -> None:
    message = parse_message(INVITE + b"trailing garbage")
    assert message.body == b"v=0\n"


def test_udp_missing_content_length_takes_rest_of_datagram() -> None:
    data = _request(**{"Content-Length": ""}) + b"more"
    message = parse_message(data)
    assert message.body == b"v=0\nmore"


def test_content_length_larger_than_body_is_error() -> None:
    error = _error(_request(**{"Content-Length": "Content-Length: 50"}))
    assert "larger than the body" in error.reason
    assert error.partial is not None
    assert error.partial.method == "INVITE"


@pytest.mark.parametrize(
    ("value", "needle"),
    [("-5", "negative"), ("abc", "not a number"), ("1e3", "not a number"), ("", "not a number")],
)
def test_bad_content_length(value: str, needle: str) -> None:
    error = _error(_request(**{"Content-Length": f"Content-Length: {value}"}))
    assert needle in error.reason


def test_serialisation_rewrites_content_length() -> None:
    message = parse_message(INVITE)
    message.body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    out = message.to_bytes()
    assert f"\r\nContent-Length: {len(message.body)}\r\n".encode() in out
    assert out.count(b"Content-Length") == 1
    headers = Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bKx")])
    assert SipResponse(200, "OK", headers).to_bytes().endswith(b"Content-Length: 0\r\n\r\n")


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("start_line", "needle"),
    [
        (b"INVITE sip:bob@biloxi.example.com SIP/3.0", "version"),
        (b"INVITE sip:bob@biloxi.example.com", "bad request line"),
        (b"INVITE  sip:bob@biloxi.example.com SIP/2.0", "bad request line"),
        (b"INV(TE sip:bob@biloxi.example.com SIP/2.0", "invalid method"),
        (b"INVITE <sip:bob@biloxi.example.com> SIP/2.0", "<>"),
        (b"INVITE bob@biloxi SIP/2.0", "scheme"),
        (b"INVITE sip:bob@bad host SIP/2.0", "bad request line"),
        (b"INVITE sip:bob@[::1 SIP/2.0", "IPv6"),
        (b"INVITE sip:bob@host:99999 SIP/2.0", "port"),
    ],
)
def test_bad_request_line(start_line: bytes, needle: str) -> None:
    data = start_line + INVITE[INVITE.index(b"\r\n") :]
    error = _error(data)
    assert needle in error.reason
    assert "\n" not in error.reason


@pytest.mark.parametrize(
    ("status_line", "needle"),
    [
        (b"SIP/2.0 2000 OK", "status code"),
        (b"SIP/2.0 099 Odd", "out of range"),
        (b"SIP/2.0 700 Odd", "out of range"),
        (b"SIP/2.0 abc OK", "status code"),
        (b"SIP/1.0 200 OK", "version"),
    ],
)
def test_bad_status_line(status_line: bytes, needle: str) -> None:
    data = status_line + RESPONSE[RESPONSE.index(b"\r\n") :]
    error = _error(data)
    assert needle in error.reason
    assert error.partial is None  # responses are never salvaged


def test_response_without_reason_phrase() -> None:
    for line in (b"SIP/2.0 100 ", b"SIP/2.0 100"):
        message = parse_message(line + RESPONSE[RESPONSE.index(b"\r\n") :])
        assert isinstance(message, SipResponse)
        assert (message.status, message.reason) == (100, "")


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header(missing: str) -> None:
    error = _error(_request(**{missing: ""}))
    assert missing in error.reason
    assert error.partial is None


def test_max_forwards_is_optional_but_validated() -> None:
    assert isinstance(parse_message(_request(**{"Max-Forwards": ""})), SipRequest)
    assert "Max-Forwards" in _error(_request(**{"Max-Forwards": "Max-Forwards: ten"})).reason
    assert "255" in _error(_request(**{"Max-Forwards": "Max-Forwards: 256"})).reason


def test_cseq_errors() -> None:
    mismatch = _error(_request(CSeq="CSeq: 1 BYE"))
    assert "does not match" in mismatch.reason
    assert mismatch.partial is not None
    assert mismatch.partial.headers.get("CSeq") == "1 BYE"
    assert "not a number" in _error(_request(CSeq="CSeq: one INVITE")).reason
    assert "too large" in _error(_request(CSeq="CSeq: 2147483648 INVITE")).reason
    assert "number METHOD" in _error(_request(CSeq="CSeq: 1")).reason


def test_nul_byte_in_headers_is_error() -> None:
    error = _error(_request(**{"X-Custom-Thing": "X-Custom-Thing: a\x00b"}))
    assert "NUL" in error.reason


def test_nul_in_body_is_fine() -> None:
    data = _request(**{"Content-Length": "Content-Length: 3"})
    data = data[: data.index(b"\r\n\r\n") + 4] + b"\x00\x01\x00"
    assert parse_message(data).body == b"\x00\x01\x00"


def test_header_without_colon_is_error() -> None:
    error = _error(_request(**{"X-Custom-Thing": "This line has no colon"}))
    assert "without colon" in error.reason
    assert error.partial is None


def test_invalid_header_name() -> None:
    assert "header name" in _error(_request(**{"X-Custom-Thing": "Bad Name: x"})).reason


def test_continuation_before_first_header_is_error() -> None:
    data = INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/2.0\r\n folded\r\nVia", 1)
    assert "continuation" in _error(data).reason


def test_headers_not_terminated() -> None:
    assert "empty line" in _error(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x").reason


def test_duplicate_singleton_header() -> None:
    data = _request(**{"Call-ID": "Call-ID: one\r\ni: two"})
    error = _error(data)
    assert "Call-ID" in error.reason and "more than once" in error.reason


def test_bad_via_and_from_are_errors_with_partial() -> None:
    error = _error(_request(Via="Via: SIP/2.0/UDP"))
    assert "Via" in error.reason
    assert error.partial is not None
    error = _error(_request(From='From: "unterminated <sip:a@b>;tag=1'))
    assert "quoted" in error.reason


def test_parse_error_is_value_error_with_one_line_reason() -> None:
    error = _error(b"garbage\r\n\r\n")
    assert isinstance(error, ValueError)
    assert str(error) == error.reason
    assert "\n" not in error.reason


def test_partial_allows_building_a_400() -> None:
    error = _error(_request(CSeq="CSeq: 7 OPTIONS"))
    assert error.partial is not None
    response = make_response(error.partial, 400, to_tag="abc")
    parsed = parse_message(response.to_bytes())
    assert isinstance(parsed, SipResponse)
    assert parsed.status == 400
    assert parsed.headers.get("Call-ID") == "a84b4c76e66710@pc33.atlanta.example.com"
    assert parsed.headers.get("To") == "Bob <sip:bob@biloxi.example.com>;tag=abc"


# ---------------------------------------------------------------------- Headers


def test_headers_multimap_operations() -> None:
    headers = Headers([("via", "a"), ("To", "t"), ("V", "b"), ("X-A", "1")])
    assert [name for name, _ in headers] == ["Via", "To", "Via", "X-A"]
    assert headers.get("VIA") == "a"
    assert headers.get_all("v") == ["a", "b"]
    assert "x-a" in headers and "X-B" not in headers and 3 not in headers
    headers.add("Via", "top", first=True)
    assert headers.get_all("Via") == ["top", "a", "b"]
    assert next(iter(headers)) == ("Via", "top")
    headers.add("X-A", "2")
    assert headers.get_all("X-A") == ["1", "2"]
    headers.set("via", "only")
    assert headers.get_all("Via") == ["only"]
    assert next(iter(headers))[0] == "Via"  # set keeps the first position
    headers.remove("x-a")
    assert "X-A" not in headers
    headers.add("Route", "<sip:r1>", first=True)  # no Route yet: goes on top
    assert next(iter(headers)) == ("Route", "<sip:r1>")
    headers.set("New-One", "n")
    assert list(headers)[-1] == ("New-One", "n")


def test_headers_copy_is_independent() -> None:
    headers = Headers([("Via", "a")])
    clone = headers.copy()
    clone.add("Via", "b")
    assert headers.get_all("Via") == ["a"]
    assert clone.get_all("Via") == ["a", "b"]


def test_get_all_splits_comma_lists_outside_quotes_and_angles() -> None:
    headers = Headers(
        [
            ("Contact", '"Smith, John" <sip:j@a;p=1,2>;q=0.5, <sip:k@b>'),
            ("Contact", "sip:l@c"),
            ("Allow", "INVITE,ACK , BYE,, "),
            ("X-Esc", r'"a \", b", c'),
        ]
    )
    assert headers.get_all("m") == [
        '"Smith, John" <sip:j@a;p=1,2>;q=0.5',
        "<sip:k@b>",
        "sip:l@c",
    ]
    assert headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert headers.get_all("X-Esc") == [r'"a \", b"', "c"]
    assert headers.get("Allow") == "INVITE,ACK , BYE,, "


def test_get_all_does_not_split_credentials_or_dates() -> None:
    auth = 'Digest username="alice", realm="a.example", nonce="x", uri="sip:a", response="y"'
    headers = Headers([("Authorization", auth), ("Date", "Sat, 13 Nov 2010 23:29:00 GMT")])
    assert headers.get_all("Authorization") == [auth]
    assert headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


# ---------------------------------------------------------------------- SipUri


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.example.com",
        "sip:alice:secret@atlanta.example.com:5061;transport=tcp;lr",
        "sips:bob@[2001:db8::10]:5061;maddr=[2001:db8::1]",
        "sip:[::1]",
        "sip:10.0.0.1:5060;transport=udp",
        "sip:+12125551212@gw.example;user=phone?Subject=hi&Priority=urgent",
        "sip:%75se%72@example.com",
        "tel:+1-201-555-0123;phone-context=example.com",
    ],
)
def test_sip_uri_round_trip(text: str) -> None:
    assert str(SipUri.parse(text)) == text


def test_sip_uri_fields() -> None:
    uri = SipUri.parse("SIP:alice:pw@[2001:db8::10]:5070;Transport=TCP;lr?h=v")
    assert uri.scheme == "sip"
    assert (uri.user, uri.password) == ("alice", "pw")
    assert (uri.host, uri.port) == ("2001:db8::10", 5070)
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.headers == {"h": "v"}
    plain = SipUri.parse("sip:host.example")
    assert (plain.user, plain.port, plain.params) == (None, None, {})
    odd = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert (odd.user, odd.host) == ("user;par=u%40example.net", "example.com")


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "alice@example.com",
        "sip:@host",
        "sip:a@host:70000",
        "sip:a@host:port",
        "sip:a@[::1",
        "sip:a@host;;lr",
        "sip:a b@host",
        "http://example.com",
        "sip:a@host?novalue",
    ],
)
def test_sip_uri_errors(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)


# ---------------------------------------------------------------------- NameAddr


def test_name_addr_forms() -> None:
    quoted = NameAddr.parse('"Alice \\"A\\" Liddell" <sip:alice@a.example;transport=tcp>;tag=88')
    assert quoted.display == 'Alice "A" Liddell'
    assert quoted.uri == "sip:alice@a.example;transport=tcp"
    assert quoted.params == {"tag": "88"}
    assert quoted.tag == "88"

    tokens = NameAddr.parse("Bob  Smith<sip:bob@b.example>")
    assert (tokens.display, tokens.uri, tokens.tag) == ("Bob Smith", "sip:bob@b.example", None)

    bare = NameAddr.parse("<sip:c@c.example>")
    assert bare.display is None

    # addr-spec: ;params after the URI are header params (RFC 3261 20.10)
    spec = NameAddr.parse("sip:+19725552222@gw1.example.net;unknownparam;tag=x")
    assert spec.uri == "sip:+19725552222@gw1.example.net"
    assert spec.params == {"unknownparam": None, "tag": "x"}

    spaced = NameAddr.parse(" sip:vivekg@chair.example.com ;   tag    = 1918181833n ")
    assert (spaced.uri, spaced.tag) == ("sip:vivekg@chair.example.com", "1918181833n")

    empty_display = NameAddr.parse('"" <sip:d@d.example>')
    assert empty_display.display == ""


def test_name_addr_str_round_trip() -> None:
    for text in (
        '"Alice" <sip:alice@a.example>;tag=1',
        '<sip:b@b.example;lr>;expires=60;+sip.instance="<urn:uuid:1>"',
        '"quote \\" and \\\\ backslash" <sip:q@q.example>',
    ):
        parsed = NameAddr.parse(text)
        assert str(parsed) == text
        assert NameAddr.parse(str(parsed)) == parsed
    assert str(NameAddr.parse("sip:x@y;tag=2")) == "<sip:x@y>;tag=2"


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@b>',
        "Bell, Alexander <sip:a@b>",
        "< sip:a@b >",
        "<sip:a@b",
        "<sip:a@b> junk",
        "sip:a@b?Route=x",
        "<sip:a@b>;;;",
        '"name" sip:a@b',
        "",
        "<>",
    ],
)
def test_name_addr_errors(text: str) -> None:
    with pytest.raises(SipParseError):
        NameAddr.parse(text)


# ---------------------------------------------------------------------- Via and CSeq


def test_via_parse_and_str() -> None:
    via = Via.parse("SIP/2.0/udp pc33.example.com:5066;branch=z9hG4bK776;rport;received=1.2.3.4")
    assert (via.transport, via.host, via.port) == ("UDP", "pc33.example.com", 5066)
    assert via.branch == "z9hG4bK776"
    assert via.params["rport"] is None
    assert str(via) == "SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776;rport;received=1.2.3.4"
    assert Via.parse(str(via)) == via


def test_via_lws_and_ipv6() -> None:
    via = Via.parse("SIP  /   2.0 /UDP    192.0.2.2 : 5060 ;  branch  =   z9hG4bK9ikj8  ")
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "192.0.2.2",
        5060,
        "z9hG4bK9ikj8",
    )
    six = Via.parse("SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bKx;received=2001:db8::1")
    assert (six.host, six.port) == ("2001:db8::9", 5070)
    assert six.params["received"] == "2001:db8::1"
    assert str(six) == "SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bKx;received=2001:db8::1"


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/2.0 host",
        "SIP/3.0/UDP host",
        "HTTP/2.0/UDP host",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host extra",
        "SIP/2.0/UDP host:abc",
        "SIP/2.0/UDPhost",
    ],
)
def test_via_errors(text: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(text)


def test_cseq() -> None:
    cseq = CSeq.parse("  0009\t INVITE ")
    assert cseq == CSeq(9, "INVITE")
    assert str(cseq) == "9 INVITE"
    assert CSeq.parse(str(CSeq(2**31 - 1, "BYE"))).seq == 2**31 - 1
    for bad in ("", "1", "x INVITE", "-1 INVITE", "1 INVITE extra", "2147483648 BYE"):
        with pytest.raises(SipParseError):
            CSeq.parse(bad)


# ---------------------------------------------------------------------- make_response etc.


def test_make_response_copies_headers_and_adds_tag() -> None:
    request = parse_message(
        INVITE.replace(
            b"Max-Forwards", b"Via: SIP/2.0/UDP proxy.example;branch=z9hG4bKp\r\nMax-Forwards"
        )
    )
    assert isinstance(request, SipRequest)
    response = make_response(request, 180, to_tag="t1")
    assert response.reason == "Ringing"
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert response.headers.get("To") == "Bob <sip:bob@biloxi.example.com>;tag=t1"
    assert response.headers.get("From") == request.headers.get("From")
    assert response.headers.get("Call-ID") == request.headers.get("Call-ID")
    assert response.headers.get("CSeq") == "314159 INVITE"
    assert "Contact" not in response.headers and "X-Custom-Thing" not in response.headers
    assert [name for name, _ in response.headers] == ["Via", "Via", "From", "To", "Call-ID", "CSeq"]


def test_make_response_tag_rules() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    trying = make_response(request, 100, to_tag="t1")
    assert trying.headers.get("To") == "Bob <sip:bob@biloxi.example.com>"
    assert trying.reason == "Trying"
    no_tag = make_response(request, 486)
    assert no_tag.headers.get("To") == "Bob <sip:bob@biloxi.example.com>"
    request.headers.set("To", "<sip:bob@b.example>;tag=already")
    kept = make_response(request, 200, to_tag="new")
    assert kept.headers.get("To") == "<sip:bob@b.example>;tag=already"
    assert make_response(request, 499).reason == "Client Error"
    assert make_response(request, 200, "Fine").reason == "Fine"


def test_generators() -> None:
    branches = {generate_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(branch.startswith("z9hG4bK") and len(branch) > 12 for branch in branches)
    tags = {generate_tag() for _ in range(100)}
    assert len(tags) == 100
    assert all(tag.isalnum() for tag in tags)
    call_ids = {generate_call_id() for _ in range(100)}
    assert len(call_ids) == 100


def test_reason_phrases() -> None:
    assert REASON_PHRASES[200] == "OK"
    assert REASON_PHRASES[487] == "Request Terminated"
    assert REASON_PHRASES[416] == "Unsupported URI Scheme"
    assert all(100 <= code <= 699 for code in REASON_PHRASES)


# ---------------------------------------------------------------------- StreamFramer


def test_framer_split_and_joined_messages() -> None:
    framer = StreamFramer()
    stream = b"\r\n\r\n" + INVITE + RESPONSE + b"\r\n" + INVITE
    chunks = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    messages: list[bytes] = []
    for chunk in chunks:
        messages.extend(framer.feed(chunk))
    assert messages == [INVITE, RESPONSE, INVITE]
    assert framer.buffered == 0
    parsed = [parse_message(message) for message in messages]
    assert [type(message).__name__ for message in parsed] == [
        "SipRequest",
        "SipResponse",
        "SipRequest",
    ]


def test_framer_several_messages_in_one_feed_and_waits_for_body() -> None:
    framer = StreamFramer()
    assert framer.feed(RESPONSE + RESPONSE + INVITE[:-2]) == [RESPONSE, RESPONSE]
    assert framer.feed(b"") == []
    assert framer.feed(INVITE[-2:]) == [INVITE]


def test_framer_keepalives_only() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n") == []
    assert framer.buffered == 0


def test_framer_compact_content_length() -> None:
    message = RESPONSE.replace(b"Content-Length: 0", b"l : 5") + b"hello"
    assert StreamFramer().feed(message + b"next") == [message]


def test_framer_requires_content_length() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError, match="missing Content-Length"):
        framer.feed(RESPONSE.replace(b"Content-Length: 0\r\n", b""))


def test_framer_rejects_bad_content_length_and_huge_headers() -> None:
    with pytest.raises(SipParseError, match="negative"):
        StreamFramer().feed(RESPONSE.replace(b"Content-Length: 0", b"Content-Length: -1"))
    framer = StreamFramer(max_message_size=1000)
    with pytest.raises(SipParseError, match="too large"):
        framer.feed(b"OPTIONS sip:a SIP/2.0\r\nX: " + b"a" * 2000)


# ---------------------------------------------------------------------- performance


def test_parsing_is_fast_and_has_no_quadratic_paths() -> None:
    started = time.perf_counter()
    for _ in range(2000):
        parse_message(INVITE)
    per_message = (time.perf_counter() - started) / 2000
    assert per_message < 0.001  # generous: about 40 us on the dev box

    # Long runs of whitespace and separators must not trigger regex backtracking.
    nasty = _request(
        Via="Via: SIP/2.0/UDP h" + " " * 30000 + "x;branch=z9hG4bK1",
        **{"X-Custom-Thing": "X-Custom-Thing: " + '"' + "\\," * 20000},
    )
    started = time.perf_counter()
    with pytest.raises(SipParseError):
        parse_message(nasty)
    assert time.perf_counter() - started < 0.5


def test_framer_is_linear_in_buffered_data() -> None:
    framer = StreamFramer(max_message_size=64 * 1024)
    started = time.perf_counter()
    messages = framer.feed(INVITE * 3000)
    elapsed = time.perf_counter() - started
    assert len(messages) == 3000 and framer.buffered == 0
    assert elapsed < 0.5  # a quadratic framer takes seconds here
