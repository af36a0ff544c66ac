"""Tests for b2bua.digest: published vectors, parsing, and server/client round trips."""

from __future__ import annotations

import hashlib

import pytest

from b2bua.digest import (
    AuthResult,
    Credentials,
    DigestChallenger,
    DigestError,
    build_authorization,
    compute_ha1,
    compute_response,
    credentials_username,
    parse_auth_header,
    preferred_challenge,
)
from b2bua.message import SipRequest, parse_message
from b2bua.peer import Peer
from storage.accounts import ha1_pair

REALM = "callrec.test"
SECRET = b"0123456789abcdef-test-secret"


def stored(username: str, password: str) -> Credentials:
    """The credentials as the server hands them over: the HA1s the store keeps."""
    pair = ha1_pair(username, REALM, password)
    return Credentials(pair.md5, pair.sha256)


USERS = {
    "100": stored("100", "s3cret"),
    "alice-desk": stored("alice-desk", 'pa ss, "word"'),
}
T0 = 1_000_000.0
# Where the test client sends from; nonces are bound to its IP and transport.
SRC = Peer("127.0.0.1", 5070)


def lookup(username: str) -> Credentials | None:
    return USERS.get(username)


def make_request(
    method: str = "INVITE", uri: str = "sip:200@callrec.test", body: bytes = b""
) -> SipRequest:
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-test-1",
        "Max-Forwards: 70",
        "From: <sip:100@callrec.test>;tag=abc",
        f"To: <{uri}>",
        "Call-ID: digest-test-call",
        f"CSeq: 1 {method}",
        "Contact: <sip:100@127.0.0.1:5070>",
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    message = parse_message("\r\n".join(lines).encode() + body)
    assert isinstance(message, SipRequest)
    return message


def challenge_for(challenger: DigestChallenger, algorithm: str, now: float = T0) -> str:
    for value in challenger.challenge(now, SRC):
        if f"algorithm={algorithm}," in value:
            return value
    raise AssertionError(f"no {algorithm} challenge")


def answer(
    request: SipRequest,
    challenge: str,
    username: str = "100",
    password: str = "s3cret",
    *,
    uri: str | None = None,
    header: str = "Proxy-Authorization",
) -> SipRequest:
    value = build_authorization(
        challenge, request.method, uri or request.uri, username, password, request.body
    )
    request.headers.add(header, value)
    return request


# -- published vectors ------------------------------------------------------------------


def test_rfc2617_md5_vector() -> None:
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response(
        "MD5",
        ha1,
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc2617_vector_through_build_authorization() -> None:
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = build_authorization(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b"
    )
    scheme, params = parse_auth_header(value)
    assert scheme == "Digest"
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1_vectors(algorithm: str, expected: str) -> None:
    challenge = (
        'Digest realm="http-auth@example.org", qop="auth, auth-int", '
        f"algorithm={algorithm}, "
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    value = build_authorization(
        challenge,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    params = parse_auth_header(value)[1]
    assert params["response"] == expected
    assert params["algorithm"] == algorithm


# -- auth-param parsing -----------------------------------------------------------------


def test_parse_handles_quotes_commas_and_escapes() -> None:
    scheme, params = parse_auth_header(
        'Digest  username="a\\"b, c" ,REALM=r,, nonce = "x,y=z",algorithm=SHA-256,'
        " uri=sip:100@h;transport=udp"
    )
    assert scheme == "Digest"
    assert params == {
        "username": 'a"b, c',
        "realm": "r",
        "nonce": "x,y=z",
        "algorithm": "SHA-256",
        "uri": "sip:100@h;transport=udp",
    }


@pytest.mark.parametrize(
    "text",
    [
        "",
        '="x"',
        'Digest realm="unterminated',
        "Digest realm",
        "Digest realm=",
        'Digest realm="a", realm="b"',
        'Digest realm="a" nonce="b"',
        'Digest realm="a\\',
    ],
)
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(DigestError):
        parse_auth_header(text)


# -- challenges -------------------------------------------------------------------------


def test_challenge_offers_sha256_then_md5_with_qop_auth() -> None:
    values = DigestChallenger(REALM, SECRET).challenge(T0, SRC)
    assert len(values) == 2
    first, second = (parse_auth_header(value)[1] for value in values)
    assert (first["algorithm"], second["algorithm"]) == ("SHA-256", "MD5")
    for params in (first, second):
        assert params["realm"] == REALM
        assert params["qop"] == "auth"
        assert "stale" not in params
    stale = DigestChallenger(REALM, SECRET).challenge(T0, SRC, stale=True)
    assert all(parse_auth_header(value)[1]["stale"] == "true" for value in stale)


@pytest.mark.parametrize(
    ("status", "header"), [(407, "Proxy-Authenticate"), (401, "WWW-Authenticate")]
)
def test_challenge_response_headers(status: int, header: str) -> None:
    request = make_request()
    response = DigestChallenger(REALM, SECRET).challenge_response(
        request, T0, status, "tg1", source=SRC
    )
    assert response.status == status
    values = [value for name, value in response.headers if name.lower() == header.lower()]
    assert [parse_auth_header(value)[1]["algorithm"] for value in values] == ["SHA-256", "MD5"]
    to = response.headers.get("To")
    assert to is not None and "tag=tg1" in to
    assert response.headers.get("Call-ID") == "digest-test-call"


def test_challenge_response_rejects_other_status() -> None:
    with pytest.raises(ValueError):
        DigestChallenger(REALM, SECRET).challenge_response(
            make_request(), T0, 403, None, source=SRC
        )


def test_preferred_challenge_picks_sha256() -> None:
    values = DigestChallenger(REALM, SECRET).challenge(T0, SRC)
    assert "SHA-256" in preferred_challenge(list(reversed(values)))
    with pytest.raises(DigestError):
        preferred_challenge(['Basic realm="x"', 'Digest realm="x", nonce="n", algorithm=SHA-1'])


# -- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
@pytest.mark.parametrize("with_qop", [True, False])
def test_round_trip(algorithm: str, with_qop: bool) -> None:
    challenger = DigestChallenger(REALM, SECRET)
    challenge = challenge_for(challenger, algorithm)
    if not with_qop:
        challenge = challenge.replace(', qop="auth"', "")
    request = answer(make_request(), challenge)
    params = parse_auth_header(request.headers.get("Proxy-Authorization") or "")[1]
    assert ("qop" in params) == with_qop
    result = challenger.verify(request, T0 + 10, lookup, source=SRC)
    assert result == AuthResult(True, "100", False, "ok")


def test_register_uses_authorization_header() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    register = make_request("REGISTER", "sip:callrec.test")
    answer(register, challenge_for(challenger, "SHA-256"), header="Authorization")
    assert challenger.verify(register, T0, lookup, source=SRC).ok
    # The same credentials in the proxy header are not looked at for a REGISTER.
    other = make_request("REGISTER", "sip:callrec.test")
    answer(other, challenge_for(challenger, "SHA-256"), header="Proxy-Authorization")
    result = challenger.verify(other, T0, lookup, source=SRC)
    assert not result.ok and "no Authorization" in result.reason
    assert challenger.verify(other, T0, lookup, source=SRC, header="Proxy-Authorization").ok


def test_quoted_username_and_password_with_specials() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    request = answer(
        make_request(), challenge_for(challenger, "MD5"), "alice-desk", 'pa ss, "word"'
    )
    assert challenger.verify(request, T0, lookup, source=SRC) == AuthResult(
        True, "alice-desk", False, "ok"
    )


def test_session_algorithm_and_auth_int() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    challenge = challenge_for(challenger, "SHA-256").replace(
        "algorithm=SHA-256", "algorithm=SHA-256-sess"
    )
    assert challenger.verify(answer(make_request(), challenge), T0, lookup, source=SRC).ok

    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    int_challenge = challenge_for(challenger, "MD5").replace('qop="auth"', 'qop="auth-int"')
    request = answer(make_request(body=body), int_challenge)
    assert challenger.verify(request, T0, lookup, source=SRC).ok
    request.body = body.replace(b"127.0.0.1", b"127.0.0.2")
    assert not challenger.verify(request, T0, lookup, source=SRC).ok


# -- failures ---------------------------------------------------------------------------


def test_stale_nonce_on_fake_clock() -> None:
    challenger = DigestChallenger(REALM, SECRET, nonce_lifetime=300.0)
    request = answer(make_request(), challenge_for(challenger, "SHA-256", now=T0))
    assert challenger.verify(request, T0 + 299.0, lookup, source=SRC).ok
    late = challenger.verify(request, T0 + 300.5, lookup, source=SRC)
    assert late == AuthResult(False, "100", True, "nonce expired")
    # A nonce "from the future" (clock went backwards) is stale too, never accepted.
    assert challenger.verify(request, T0 - 60.0, lookup, source=SRC).stale


def test_stale_only_when_the_password_was_right() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    request = answer(make_request(), challenge_for(challenger, "MD5"), password="wrong")
    result = challenger.verify(request, T0 + 1000.0, lookup, source=SRC)
    assert not result.ok and not result.stale


def test_wrong_password() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    request = answer(make_request(), challenge_for(challenger, "SHA-256"), password="S3cret")
    result = challenger.verify(request, T0, lookup, source=SRC)
    assert (result.ok, result.stale, result.username) == (False, False, "100")
    assert "wrong digest response" in result.reason


def test_unknown_user() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    request = answer(make_request(), challenge_for(challenger, "MD5"), username="999")
    result = challenger.verify(request, T0, lookup, source=SRC)
    assert not result.ok and "unknown user" in result.reason


def test_tampered_nonce() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    challenge = challenge_for(challenger, "SHA-256")
    nonce = parse_auth_header(challenge)[1]["nonce"]
    # Change a character in the middle (timestamp/salt bytes) and one at the end (MAC).
    for position in (len(nonce) // 3, len(nonce) - 2):
        replacement = "A" if nonce[position] != "A" else "B"
        forged = nonce[:position] + replacement + nonce[position + 1 :]
        request = answer(make_request(), challenge.replace(nonce, forged))
        result = challenger.verify(request, T0, lookup, source=SRC)
        assert (result.ok, result.stale) == (False, False)
        assert "nonce" in result.reason


def test_nonce_from_another_server_secret() -> None:
    ours = DigestChallenger(REALM, SECRET)
    theirs = DigestChallenger(REALM, b"another secret")
    request = answer(make_request(), challenge_for(theirs, "MD5"))
    assert theirs.verify(request, T0, lookup, source=SRC).ok
    result = ours.verify(request, T0, lookup, source=SRC)
    assert not result.ok and result.reason == "nonce was not issued by us to this address"


def test_wrong_realm() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    challenge = challenge_for(challenger, "MD5").replace(REALM, "elsewhere.test")
    result = challenger.verify(answer(make_request(), challenge), T0, lookup, source=SRC)
    assert not result.ok and "realm" in result.reason


def test_credentials_for_several_realms_uses_ours() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    request = make_request()
    other = challenge_for(challenger, "MD5").replace(REALM, "upstream.test")
    answer(request, other)
    answer(request, challenge_for(challenger, "SHA-256"))
    assert challenger.verify(request, T0, lookup, source=SRC).ok


def test_wrong_uri() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    request = answer(make_request(), challenge_for(challenger, "MD5"), uri="sip:300@callrec.test")
    result = challenger.verify(request, T0, lookup, source=SRC)
    assert not result.ok and "request-URI" in result.reason


def test_uri_compared_loosely() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    request = make_request(uri="sip:200@callrec.test;transport=udp;lr")
    answer(request, challenge_for(challenger, "MD5"), uri="sip:200@callrec.test;lr;transport=udp")
    assert challenger.verify(request, T0, lookup, source=SRC).ok


def test_replay_of_the_same_credentials_is_refused_and_counts_as_a_failure() -> None:
    """The nc of a used nonce is remembered: the same header cannot pass twice."""
    challenger = DigestChallenger(REALM, SECRET)
    original = answer(make_request("INVITE"), challenge_for(challenger, "SHA-256"))
    credentials = original.headers.get("Proxy-Authorization")
    assert credentials is not None
    assert challenger.verify(original, T0, lookup, source=SRC).ok

    same = make_request("INVITE")
    same.headers.add("Proxy-Authorization", credentials)
    result = challenger.verify(same, T0 + 5, lookup, source=SRC)
    assert (result.ok, result.stale, result.failed) == (False, False, True)
    assert "nonce count 00000001 replayed" in result.reason
    # From another port of the same address (a new call from an attacker on the LAN
    # behind the same NAT) it is the same replay.
    result = challenger.verify(same, T0 + 5, lookup, source=Peer("127.0.0.1", 6000))
    assert (result.ok, result.failed) == (False, True)

    bye = make_request("BYE")
    bye.headers.add("Proxy-Authorization", credentials)
    result = challenger.verify(bye, T0 + 5, lookup, source=SRC)
    assert not result.ok and "wrong digest response" in result.reason


def with_nc(challenge: str, nc: int, *, password: str = "s3cret") -> SipRequest:
    request = make_request()
    value = build_authorization(
        challenge, "INVITE", request.uri, "100", password, nc=nc, cnonce="c0ffee"
    )
    request.headers.add("Proxy-Authorization", value)
    return request


def test_nc_must_increase_per_nonce() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    challenge = challenge_for(challenger, "MD5")
    assert challenger.verify(with_nc(challenge, 1), T0, lookup, source=SRC).ok
    assert challenger.verify(with_nc(challenge, 2), T0 + 1, lookup, source=SRC).ok
    assert challenger.verify(with_nc(challenge, 7), T0 + 2, lookup, source=SRC).ok  # gaps are fine
    for nc in (7, 3, 1):
        result = challenger.verify(with_nc(challenge, nc), T0 + 3, lookup, source=SRC)
        assert (result.ok, result.stale, result.failed) == (False, False, True), nc
    assert challenger.verify(with_nc(challenge, 8), T0 + 4, lookup, source=SRC).ok
    # Counts are per nonce: a fresh nonce starts again at 1.
    fresh = challenge_for(challenger, "MD5", now=T0 + 5)
    assert challenger.verify(with_nc(fresh, 1), T0 + 5, lookup, source=SRC).ok


def test_wrong_guesses_do_not_burn_an_honest_clients_counts() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    challenge = challenge_for(challenger, "SHA-256")
    guess = with_nc(challenge, 0xFFFFFFFF, password="guess")
    assert challenger.verify(guess, T0, lookup, source=SRC).failed
    assert challenger.verify(with_nc(challenge, 1), T0 + 1, lookup, source=SRC).ok


def test_without_qop_a_nonce_is_good_for_one_request() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    challenge = challenge_for(challenger, "MD5").replace(', qop="auth"', "")
    request = answer(make_request(), challenge)
    assert challenger.verify(request, T0, lookup, source=SRC).ok
    again = challenger.verify(request, T0 + 1, lookup, source=SRC)
    assert (again.ok, again.failed) == (False, True)


@pytest.mark.parametrize(
    ("source", "accepted"),
    [
        (Peer("127.0.0.1", 5070), True),
        (Peer("127.0.0.1", 40000), True),  # NAT may change the port, not the address
        (Peer("127.0.0.2", 5070), False),
        (Peer("127.0.0.1", 5070, "tcp"), False),
    ],
)
def test_nonce_is_bound_to_the_address_it_was_issued_to(source: Peer, accepted: bool) -> None:
    challenger = DigestChallenger(REALM, SECRET)
    request = answer(make_request(), challenge_for(challenger, "SHA-256"))
    result = challenger.verify(request, T0, lookup, source=source)
    assert result.ok is accepted
    if not accepted:
        assert result.reason == "nonce was not issued by us to this address"
        assert (result.stale, result.failed) == (False, True)


def test_ipv6_addresses_compare_in_canonical_form() -> None:
    challenger = DigestChallenger(REALM, SECRET)
    values = challenger.challenge(T0, Peer("2001:db8:0::1", 5060))
    request = answer(make_request(), preferred_challenge(values))
    assert challenger.verify(request, T0, lookup, source=Peer("2001:db8::1", 5062)).ok


def test_short_configurable_lifetime_then_stale_not_failed() -> None:
    challenger = DigestChallenger(REALM, SECRET, nonce_lifetime=30.0)
    challenge = challenge_for(challenger, "MD5")
    assert challenger.verify(with_nc(challenge, 1), T0 + 29.0, lookup, source=SRC).ok
    late = challenger.verify(with_nc(challenge, 2), T0 + 30.5, lookup, source=SRC)
    assert (late.ok, late.stale, late.failed) == (False, True, False)
    assert parse_auth_header(challenger.challenge(T0 + 30.5, SRC, stale=True)[0])[1]["stale"]


def test_full_nc_table_forgets_safely() -> None:
    """Evicting a count never re-opens a replay: older nonces become stale instead."""
    challenger = DigestChallenger(REALM, SECRET, max_nonces=2)
    challenges = [challenge_for(challenger, "MD5", now=T0 + i) for i in range(4)]
    first, second, third, unused = challenges
    assert challenger.verify(with_nc(first, 1), T0 + 10, lookup, source=SRC).ok
    assert challenger.verify(with_nc(second, 1), T0 + 10, lookup, source=SRC).ok
    assert challenger.verify(with_nc(third, 1), T0 + 10, lookup, source=SRC).ok
    assert len(challenger.counts) == 2
    # The first nonce's count was evicted: its replay is refused, as stale.
    replay = challenger.verify(with_nc(first, 1), T0 + 11, lookup, source=SRC)
    assert (replay.ok, replay.stale) == (False, True)
    assert replay.reason == "nonce count forgotten"
    # Nonces still counted keep working and keep refusing replays.
    assert challenger.verify(with_nc(third, 2), T0 + 11, lookup, source=SRC).ok
    assert challenger.verify(with_nc(third, 2), T0 + 11, lookup, source=SRC).failed
    # A nonce issued after the evicted one is unaffected.
    assert challenger.verify(with_nc(unused, 1), T0 + 12, lookup, source=SRC).ok
    # A fresh challenge always works.
    fresh = challenge_for(challenger, "MD5", now=T0 + 20)
    assert challenger.verify(with_nc(fresh, 1), T0 + 20, lookup, source=SRC).ok


def test_expired_counts_are_pruned() -> None:
    challenger = DigestChallenger(REALM, SECRET, nonce_lifetime=30.0)
    for i in range(5):
        challenge = challenge_for(challenger, "MD5", now=T0 + i)
        assert challenger.verify(with_nc(challenge, 1), T0 + i, lookup, source=SRC).ok
    assert len(challenger.counts) == 5
    late = challenge_for(challenger, "MD5", now=T0 + 100)
    assert challenger.verify(with_nc(late, 1), T0 + 100, lookup, source=SRC).ok
    assert len(challenger.counts) == 1
    assert challenger.counts.floor == float("-inf")  # pruning expired ones is not forgetting


def test_lifetime_and_table_size_must_be_sane() -> None:
    with pytest.raises(ValueError):
        DigestChallenger(REALM, SECRET, nonce_lifetime=0)
    with pytest.raises(ValueError):
        DigestChallenger(REALM, SECRET, max_nonces=0)


def test_credentials_username() -> None:
    request = answer(make_request(), challenge_for(DigestChallenger(REALM, SECRET), "MD5"))
    assert credentials_username(request, "Proxy-Authorization") == "100"
    assert credentials_username(request, "Authorization") is None
    bad = make_request()
    bad.headers.add("Proxy-Authorization", 'Digest username="unterminated')
    assert credentials_username(bad, "Proxy-Authorization") is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('Digest username="100", realm="callrec.test', "malformed"),
        ("Basic dXNlcjpwYXNz", "not Digest"),
        ('Digest realm="callrec.test", nonce="n", uri="sip:x", response="r"', "no username"),
        ('Digest username="100", realm="callrec.test", uri="sip:200@callrec.test"', "no nonce"),
        (
            'Digest username="100", realm="callrec.test", nonce="n", uri="sip:200@callrec.test",'
            ' response="00", algorithm=SHA-1',
            "unsupported digest algorithm",
        ),
        (
            'Digest username="100", realm="callrec.test", nonce="n", uri="sip:200@callrec.test",'
            ' response="00", qop=auth, nc=1',
            "nc (8 hex digits)",
        ),
    ],
)
def test_malformed_credentials(value: str, reason: str) -> None:
    request = make_request()
    request.headers.add("Proxy-Authorization", value)
    result = DigestChallenger(REALM, SECRET).verify(request, T0, lookup, source=SRC)
    assert not result.ok and not result.stale and result.failed
    assert reason in result.reason


def test_missing_credentials_are_not_a_failure() -> None:
    result = DigestChallenger(REALM, SECRET).verify(make_request(), T0, lookup, source=SRC)
    assert result == AuthResult(False, None, False, "no Proxy-Authorization header")
    assert not result.failed


def test_session_variant_hashes_ha1_with_nonce_and_cnonce() -> None:
    """RFC 7616 §3.4.2, written out with hashlib so it does not trust compute_response."""
    ha1 = hashlib.sha256(b"Mufasa:http-auth@example.org:Circle of Life").hexdigest()
    session_ha1 = hashlib.sha256(f"{ha1}:n1:c1".encode()).hexdigest()
    ha2 = hashlib.sha256(b"GET:/dir/index.html").hexdigest()
    expected = hashlib.sha256(f"{session_ha1}:n1:00000001:c1:auth:{ha2}".encode()).hexdigest()
    got = compute_response(
        "SHA-256-sess",
        compute_ha1("SHA-256", "Mufasa", "http-auth@example.org", "Circle of Life"),
        method="GET",
        uri="/dir/index.html",
        nonce="n1",
        qop="auth",
        nc="00000001",
        cnonce="c1",
    )
    assert got == expected
