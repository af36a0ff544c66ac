"""SDES (RFC 4568) on its own: the a=crypto grammar, keys, suite choice, and each leg's
keys through offers and answers."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from b2bua.digest import build_authorization, compute_ha1, preferred_challenge
from b2bua.sdes import (
    KEY_LENGTHS,
    SUITE_TAGS,
    SUITES,
    CryptoAttribute,
    MasterKey,
    SdesError,
    SdesRefused,
    SrtpNegotiation,
    format_crypto,
    parse_crypto,
    select_crypto,
    strip_crypto,
)
from b2bua.sdp import parse_sdp
from tests.b2bua.fakes import (
    HOST,
    FakeCredentials,
    FakeMediaFactory,
    FakeOrganisation,
    FakeUser,
    NoCallsDirectory,
    running_b2bua,
    udp_peer,
)

KEY = bytes(range(30))
KEY_TEXT = base64.b64encode(KEY).decode()
OTHER = base64.b64encode(bytes(range(100, 130))).decode()
GCM_256, GCM_128, AES_80, AES_32 = SUITES


def sdp(proto: str, *crypto: str, extra: str = "") -> bytes:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "t=0 0",
        f"m=audio 4000 {proto} 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        *(f"a=crypto:{value}" for value in crypto),
    ]
    return ("\r\n".join(lines) + "\r\n" + extra).encode()


def audio_crypto(body: bytes) -> tuple[str, list[str]]:
    media = parse_sdp(body).media[0]
    return media.proto, [value or "" for name, value in media.attributes if name == "crypto"]


# ---------------------------------------------------------------------------- grammar
def test_an_inline_key_with_lifetime_parses_and_hides_its_key() -> None:
    attribute = parse_crypto(f"1 {AES_80} inline:{KEY_TEXT}|2^20")
    assert (attribute.tag, attribute.suite, attribute.keys) == (1, AES_80, (KEY,))
    assert attribute.lifetime == "2^20" and not attribute.mki
    assert attribute.unsupported is None
    assert attribute.master_key == MasterKey(AES_80, KEY)
    for shown in (repr(attribute), str(attribute), repr(attribute.master_key)):
        assert KEY_TEXT not in shown and str(KEY) not in shown


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_TEXT}", "suite"),
        (f"1 {AES_80} inline:{KEY_TEXT}|2^20|1:4", "MKI"),
        (f"1 {AES_80} inline:{KEY_TEXT}|1:4;inline:{OTHER}|2:4", "MKI"),
        (f"1 {AES_80} inline:{KEY_TEXT} UNENCRYPTED_SRTCP", "session parameters"),
        (f"1 {AES_80} inline:{base64.b64encode(bytes(20)).decode()}", "30 bytes"),
    ],
)
def test_attributes_callrec_cannot_use_say_why(value: str, why: str) -> None:
    reason = parse_crypto(value).unsupported
    assert reason is not None and why in reason
    with pytest.raises(SdesError, match=why):
        _ = parse_crypto(value).master_key


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1",
        f"1 {AES_80}",
        f"x {AES_80} inline:{KEY_TEXT}",
        f"1234567890 {AES_80} inline:{KEY_TEXT}",
        f"1 AES-CM inline:{KEY_TEXT}",
        f"1 {AES_80} uri:http://keys/{KEY_TEXT}",
        f"1 {AES_80} inline:",
        f"1 {AES_80} inline:{KEY_TEXT[:-1]}!",
        f"1 {AES_80} inline:{KEY_TEXT}|2^x",
        f"1 {AES_80} inline:{KEY_TEXT}|1|2|3",
    ],
)
def test_malformed_attributes_raise_sdes_error_without_the_key(value: str) -> None:
    with pytest.raises(SdesError) as caught:
        parse_crypto(value)
    assert KEY_TEXT[:20] not in str(caught.value)


@settings(max_examples=500)
@given(st.text(max_size=200))
def test_garbage_raises_nothing_but_sdes_error(value: str) -> None:
    try:
        attribute = parse_crypto(value)
    except SdesError:
        return
    assert isinstance(attribute, CryptoAttribute)
    _ = attribute.unsupported


_PIECES = st.sampled_from(
    [" ", "1", "99", AES_80, AES_32, "FOO_BAR", "inline:", KEY_TEXT, OTHER, "|", "2^", "31",
     ":", ";", "=", "\t", "1:4", "UNENCRYPTED_SRTP", "KDR=1", "\x00", "é", "=="]
)  # fmt: skip


@settings(max_examples=1000)
@given(st.lists(_PIECES, max_size=14).map("".join))
def test_near_misses_raise_nothing_but_sdes_error(value: str) -> None:
    try:
        parse_crypto(value)
    except SdesError as exc:
        assert KEY_TEXT not in str(exc) and OTHER not in str(exc)


@given(st.integers(1, 999_999_999), st.sampled_from(SUITES), st.data())
def test_format_and_parse_round_trip(tag: int, suite: str, data: st.DataObject) -> None:
    length = KEY_LENGTHS[suite]
    key = MasterKey(suite, data.draw(st.binary(min_size=length, max_size=length)))
    assert parse_crypto(format_crypto(tag, key)).master_key == key


# ---------------------------------------------------------------------------- keys
def test_generated_keys_are_fresh_and_of_the_suites_length() -> None:
    keys = [MasterKey.generate(suite) for suite in SUITES for _ in range(50)]
    assert all(len(key.material) == KEY_LENGTHS[key.suite] for key in keys)
    assert {KEY_LENGTHS[suite] for suite in SUITES} == {44, 28, 30}
    assert len({key.material for key in keys}) == len(keys)
    with pytest.raises(SdesError):
        MasterKey("NULL", KEY)
    with pytest.raises(SdesError):
        MasterKey(AES_80, KEY[:29])
    with pytest.raises(SdesError):
        MasterKey(GCM_128, KEY)  # 30 bytes: an AES-CM key, not a GCM one


def test_the_first_usable_attribute_in_the_offer_is_chosen() -> None:
    chosen = select_crypto(
        [
            "garbage",
            f"1 AES_256_CM_HMAC_SHA1_80 inline:{OTHER}",
            f"2 {AES_80} inline:{OTHER}|1:4",
            f"3 {AES_32} inline:{KEY_TEXT}",
            f"4 {AES_80} inline:{OTHER}",
        ]
    )
    assert chosen is not None and (chosen.tag, chosen.suite) == (3, AES_32)
    assert select_crypto([f"1 F8_128_HMAC_SHA1_80 inline:{KEY_TEXT}"]) is None
    assert select_crypto([]) is None


def test_strip_crypto_removes_every_key_and_keeps_the_rest() -> None:
    body = sdp("RTP/SAVP", f"1 {AES_80} inline:{KEY_TEXT}", extra=f"m=video 0 RTP/SAVP 96\r\n"
               f"a=crypto:1 {AES_80} inline:{OTHER}\n")  # fmt: skip
    stripped = strip_crypto(body)
    assert KEY_TEXT.encode() not in stripped and OTHER.encode() not in stripped
    assert (
        stripped
        == body.replace(f"a=crypto:1 {AES_80} inline:{KEY_TEXT}\r\n".encode(), b"")[
            : -len(f"a=crypto:1 {AES_80} inline:{OTHER}\n")
        ]
    )


# ---------------------------------------------------------------------------- legs
def phone_offer() -> bytes:
    return sdp(
        "RTP/SAVP",
        f"1 AES_256_CM_HMAC_SHA1_80 inline:{OTHER}",
        f"2 {AES_32} inline:{KEY_TEXT}|2^31",
    )


def trunk_answer(proto: str = "RTP/SAVP", tag: int = 1, suite: str = AES_80) -> bytes:
    crypto = [f"{tag} {suite} inline:{OTHER}"] if proto.endswith("SAVP") or tag else []
    return sdp(proto, *crypto).replace(b"10.0.0.1", b"10.0.0.2")


def test_an_srtp_phone_to_a_plain_trunk_gets_srtp_with_callrecs_key() -> None:
    negotiation = SrtpNegotiation(trunk_leg="b", trunk_mode="off")
    to_trunk = negotiation.offer("a", phone_offer())
    assert audio_crypto(to_trunk) == ("RTP/AVP", [])  # the phone's key stays here
    answer, changes = negotiation.answer("b", sdp("RTP/AVP"))
    proto, crypto = audio_crypto(answer)
    assert proto == "RTP/SAVP" and len(crypto) == 1
    ours = parse_crypto(crypto[0])
    assert (ours.tag, ours.suite) == (2, AES_32)  # the phone's first usable, its tag
    assert ours.keys[0] != KEY
    [change] = changes
    assert change.leg == "a" and change.receive == MasterKey(AES_32, KEY)
    assert change.send == ours.master_key
    assert negotiation.secure("a") and not negotiation.secure("b")


@pytest.mark.parametrize(("mode", "proto"), [("offer", "RTP/AVP"), ("require", "RTP/SAVP")])
def test_srtp_toward_the_trunk_uses_keys_of_its_own(mode: str, proto: str) -> None:
    negotiation = SrtpNegotiation(trunk_leg="b", trunk_mode=mode)
    to_trunk = negotiation.offer("a", phone_offer())
    offered_proto, offered = audio_crypto(to_trunk)
    assert offered_proto == proto
    assert [(c.tag, c.suite) for c in map(parse_crypto, offered)] == [
        (4, GCM_256),
        (3, GCM_128),
        (1, AES_80),
        (2, AES_32),
    ]
    assert KEY_TEXT not in to_trunk.decode()
    answer, changes = negotiation.answer("b", trunk_answer(tag=1))
    keys = {change.leg: change for change in changes}
    assert keys["b"].receive == MasterKey(AES_80, base64.b64decode(OTHER))
    assert keys["b"].send == parse_crypto(offered[2]).master_key
    sent_to_phone = parse_crypto(audio_crypto(answer)[1][0]).master_key
    assert keys["a"].send == sent_to_phone
    # Four keys: one per leg and direction, all different.
    materials = {keys[leg].receive.material for leg in "ab"} | {  # type: ignore[union-attr]
        keys[leg].send.material  # type: ignore[union-attr]
        for leg in "ab"
    }
    assert len(materials) == 4


def test_an_offered_trunk_that_answers_plain_is_plain() -> None:
    negotiation = SrtpNegotiation(trunk_leg="b", trunk_mode="offer")
    negotiation.offer("a", phone_offer())
    _, changes = negotiation.answer("b", sdp("RTP/AVP"))
    assert [change.leg for change in changes] == ["a"]
    assert not negotiation.secure("b") and negotiation.secure("a")


def test_a_required_trunk_refuses_plain_answers_and_plain_offers() -> None:
    negotiation = SrtpNegotiation(trunk_leg="b", trunk_mode="require")
    negotiation.offer("a", phone_offer())
    with pytest.raises(SdesRefused) as caught:
        negotiation.check("b", sdp("RTP/AVP"), offer=False)
    assert caught.value.status == 488 and "trunk" in caught.value.reason
    with pytest.raises(SdesRefused):
        negotiation.answer("b", sdp("RTP/SAVP", f"7 {AES_80} inline:{OTHER}"))  # not our tag
    inbound = SrtpNegotiation(trunk_leg="a", trunk_mode="require")
    with pytest.raises(SdesRefused):
        inbound.offer("a", sdp("RTP/AVP"))


def test_an_srtp_offer_with_no_usable_suite_is_refused_with_488() -> None:
    negotiation = SrtpNegotiation(trunk_leg="b")
    offer = sdp("RTP/SAVP", f"1 AES_256_CM_HMAC_SHA1_80 inline:{OTHER}", "2 F8 garbage")
    with pytest.raises(SdesRefused) as caught:
        negotiation.offer("a", offer)
    assert caught.value.status == 488 and AES_80 in caught.value.reason
    assert OTHER not in caught.value.reason


def test_a_plain_phone_gets_plain_and_a_best_effort_phone_gets_srtp() -> None:
    plain = SrtpNegotiation(trunk_leg="b", trunk_mode="offer")
    plain.offer("a", sdp("RTP/AVP"))
    answer, _ = plain.answer("b", trunk_answer(tag=1))
    assert audio_crypto(answer) == ("RTP/AVP", []) and not plain.secure("a")
    assert plain.secure("b")
    best_effort = SrtpNegotiation(trunk_leg="b")
    best_effort.offer("a", sdp("RTP/AVP", f"5 {AES_80} inline:{KEY_TEXT}"))
    answer, _ = best_effort.answer("b", sdp("RTP/AVP"))
    proto, [crypto] = audio_crypto(answer)
    assert proto == "RTP/AVP" and crypto.startswith(f"5 {AES_80} inline:")


def test_a_phone_is_offered_srtp_when_the_trunk_offered_it() -> None:
    negotiation = SrtpNegotiation(trunk_leg="a", trunk_mode="off")
    to_phone = negotiation.offer("a", sdp("RTP/SAVP", f"1 {AES_80} inline:{KEY_TEXT}"))
    proto, crypto = audio_crypto(to_phone)
    assert proto == "RTP/SAVP" and len(crypto) == 4 and KEY_TEXT not in to_phone.decode()
    plain = SrtpNegotiation(trunk_leg="a", trunk_mode="off")
    assert audio_crypto(plain.offer("a", sdp("RTP/AVP"))) == ("RTP/AVP", [])


def test_a_phone_called_over_tls_is_offered_srtp_from_a_plain_trunk() -> None:
    # [sip] tls_phone_srtp = "offer": RTP/AVP with keys; a phone without SRTP answers
    # plain and the call goes on plain, one with SRTP takes the keys.
    offered = SrtpNegotiation(trunk_leg="a", trunk_mode="off", tls_legs={"b": "offer"})
    to_phone = offered.offer("a", sdp("RTP/AVP"))
    proto, crypto = audio_crypto(to_phone)
    assert proto == "RTP/AVP" and len(crypto) == 4
    offered.check("b", sdp("RTP/AVP"), offer=False)  # a plain answer is no refusal
    offered.answer("b", sdp("RTP/AVP"))
    assert not offered.secure("b")
    taken = SrtpNegotiation(trunk_leg="a", trunk_mode="off", tls_legs={"b": "offer"})
    taken_offer = taken.offer("a", sdp("RTP/AVP"))
    tag = parse_crypto(audio_crypto(taken_offer)[1][2]).tag
    taken.answer("b", sdp("RTP/AVP", f"{tag} {AES_80} inline:{OTHER}"))
    assert taken.secure("b") and not taken.secure("a")
    # "require": RTP/SAVP, and a plain answer is refused.
    required = SrtpNegotiation(trunk_leg="a", trunk_mode="off", tls_legs={"b": "require"})
    assert audio_crypto(required.offer("a", sdp("RTP/AVP")))[0] == "RTP/SAVP"
    with pytest.raises(SdesRefused):
        required.check("b", sdp("RTP/AVP"), offer=False)


def test_a_tls_phone_gets_at_least_what_the_other_leg_brought() -> None:
    negotiation = SrtpNegotiation(trunk_leg="a", trunk_mode="off", tls_legs={"b": "offer"})
    to_phone = negotiation.offer("a", sdp("RTP/SAVP", f"1 {AES_80} inline:{KEY_TEXT}"))
    assert audio_crypto(to_phone)[0] == "RTP/SAVP"
    # The trunk's own mode is never overridden by a phone's.
    trunk = SrtpNegotiation(trunk_leg="a", trunk_mode="off", tls_legs={"a": "require"})
    assert not trunk.legs["a"].required


def test_a_re_invite_with_the_same_keys_changes_nothing() -> None:
    negotiation = SrtpNegotiation(trunk_leg="b", trunk_mode="require")
    first_offer = negotiation.offer("a", phone_offer())
    _, changes = negotiation.answer("b", trunk_answer())
    assert len(changes) == 2
    # The phone re-offers (hold, same keys); the trunk answers as before.
    assert negotiation.offer("a", phone_offer()) == first_offer
    assert negotiation.answer("b", trunk_answer())[1] == []
    # The trunk re-offers with a new key: only its receive key changes once answered.
    new = base64.b64encode(bytes(range(200, 230))).decode()
    to_phone = negotiation.offer("b", sdp("RTP/SAVP", f"1 {AES_80} inline:{new}"))
    assert audio_crypto(to_phone)[0] == "RTP/SAVP" and new not in to_phone.decode()
    _, changes = negotiation.answer("a", sdp("RTP/SAVP", audio_crypto(to_phone)[1][2]))
    legs = {change.leg: change for change in changes}
    assert legs["b"].receive == MasterKey(AES_80, base64.b64decode(new))
    assert "a" in legs  # the phone took the other suite this time


def test_keys_never_show_in_the_negotiations_repr() -> None:
    negotiation = SrtpNegotiation(trunk_leg="b", trunk_mode="require")
    negotiation.offer("a", phone_offer())
    negotiation.answer("b", trunk_answer())
    shown = repr(negotiation) + repr(negotiation.legs)
    assert KEY_TEXT not in shown and OTHER not in shown
    for state in negotiation.legs.values():
        for key in state.local.values():
            assert key.inline() not in shown


# ---------------------------------------------------------------------------- suites
def key_text(suite: str, seed: int = 0) -> tuple[bytes, str]:
    material = bytes((seed + i) % 256 for i in range(KEY_LENGTHS[suite]))
    return material, base64.b64encode(material).decode()


@pytest.mark.parametrize("suite", SUITES)
def test_each_suite_is_taken_from_a_phone_and_answered_with_a_key_of_its_length(
    suite: str,
) -> None:
    material, text = key_text(suite)
    negotiation = SrtpNegotiation(trunk_leg="b", trunk_mode="off")
    negotiation.offer("a", sdp("RTP/SAVP", f"9 {suite} inline:{text}|2^31"))
    answer, [change] = negotiation.answer("b", sdp("RTP/AVP"))
    _, [line] = audio_crypto(answer)
    ours = parse_crypto(line)
    assert (ours.tag, ours.suite, len(ours.keys[0])) == (9, suite, KEY_LENGTHS[suite])
    assert change.receive == MasterKey(suite, material) and change.send == ours.master_key


@pytest.mark.parametrize("suite", SUITES)
def test_each_suite_is_taken_from_a_trunks_answer(suite: str) -> None:
    material, text = key_text(suite, seed=7)
    negotiation = SrtpNegotiation(trunk_leg="b", trunk_mode="require")
    negotiation.offer("a", sdp("RTP/AVP"))
    _, changes = negotiation.answer(
        "b", sdp("RTP/SAVP", f"{SUITE_TAGS[suite]} {suite} inline:{text}")
    )
    [change] = changes
    assert change.leg == "b" and change.receive == MasterKey(suite, material)
    assert change.send is not None and change.send.suite == suite


def test_the_configured_suites_are_offered_in_their_order_and_alone() -> None:
    negotiation = SrtpNegotiation(trunk_leg="b", trunk_mode="offer", suites=[AES_32, GCM_128])
    offered = [
        parse_crypto(value) for value in audio_crypto(negotiation.offer("a", sdp("RTP/AVP")))[1]
    ]
    assert [(c.tag, c.suite) for c in offered] == [(2, AES_32), (3, GCM_128)]
    assert [len(c.keys[0]) for c in offered] == [30, 28]
    # An answer naming a suite callrec did not offer under that tag is not SRTP.
    _, changes = negotiation.answer("b", sdp("RTP/AVP", f"1 {AES_80} inline:{OTHER}"))
    assert not negotiation.secure("b") and [c.leg for c in changes] == []


def test_an_answer_follows_the_offerers_order_among_the_configured_suites() -> None:
    _, gcm = key_text(GCM_256)
    offer = sdp("RTP/SAVP", f"1 {AES_32} inline:{KEY_TEXT}", f"2 {GCM_256} inline:{gcm}")
    first = SrtpNegotiation(trunk_leg="b")
    first.offer("a", offer)
    answer, _ = first.answer("b", sdp("RTP/AVP"))
    assert parse_crypto(audio_crypto(answer)[1][0]).suite == AES_32  # the phone's first
    without_32 = SrtpNegotiation(trunk_leg="b", suites=[AES_80, GCM_256])
    without_32.offer("a", offer)
    answer, _ = without_32.answer("b", sdp("RTP/AVP"))
    assert parse_crypto(audio_crypto(answer)[1][0]).suite == GCM_256
    only_80 = SrtpNegotiation(trunk_leg="b", suites=[AES_80])
    with pytest.raises(SdesRefused) as caught:
        only_80.offer("a", offer)
    assert "not in [media] srtp_suites" in caught.value.reason
    assert KEY_TEXT not in caught.value.reason and gcm not in caught.value.reason


def test_unknown_configured_suites_are_an_error() -> None:
    with pytest.raises(SdesError):
        SrtpNegotiation(suites=["AES_256_CM_HMAC_SHA1_80"])
    with pytest.raises(SdesError):
        SrtpNegotiation(suites=[])


def test_the_suite_lists_of_the_config_the_relay_and_sdes_agree() -> None:
    from callrec.config import SRTP_SUITES
    from media.srtp import KEY_LENGTHS as RELAY_KEY_LENGTHS
    from media.srtp import SUITE_PROFILES

    assert SRTP_SUITES == SUITES and tuple(SUITE_PROFILES) == SUITES
    assert RELAY_KEY_LENGTHS == KEY_LENGTHS and set(SUITE_TAGS) == set(SUITES)
    assert len(set(SUITE_TAGS.values())) == len(SUITES)


# ---------------------------------------------------------------------------- MKI
def test_an_offer_that_requires_an_mki_is_refused_saying_so() -> None:
    offer = sdp(
        "RTP/SAVP",
        f"1 {AES_80} inline:{KEY_TEXT}|2^20|1:4",
        f"2 {AES_32} inline:{OTHER}|7:2",
    )
    negotiation = SrtpNegotiation(trunk_leg="b")
    with pytest.raises(SdesRefused) as caught:
        negotiation.offer("a", offer)
    reason = caught.value.reason
    assert caught.value.status == 488
    assert "tag 1: an MKI is not supported" in reason and "tag 2: an MKI" in reason
    assert KEY_TEXT not in reason and OTHER not in reason and '"' not in reason
    # The same attribute without an MKI is taken; and one without next to it wins.
    assert select_crypto([f"1 {AES_80} inline:{KEY_TEXT}|1:4", f"2 {AES_80} inline:{OTHER}"]) == (
        parse_crypto(f"2 {AES_80} inline:{OTHER}")
    )


def test_an_answer_with_an_mki_on_our_offer_fails_the_call() -> None:
    negotiation = SrtpNegotiation(trunk_leg="b", trunk_mode="offer")
    negotiation.offer("a", sdp("RTP/AVP"))
    answer = sdp("RTP/AVP", f"1 {AES_80} inline:{OTHER}|1:4")
    with pytest.raises(SdesRefused) as caught:
        negotiation.check("b", answer, offer=False)
    assert "MKI" in caught.value.reason and OTHER not in caught.value.reason


def test_a_long_refusal_is_bounded() -> None:
    offer = sdp(
        "RTP/SAVP", *(f"{tag} SUITE_{'X' * 30}_{tag} inline:{KEY_TEXT}" for tag in range(40))
    )
    with pytest.raises(SdesRefused) as caught:
        SrtpNegotiation(trunk_leg="b").offer("a", offer)
    assert len(caught.value.reason) <= 300 and caught.value.reason.endswith("...")


# ---------------------------------------------------------------------------- wiring
class _OneUser(NoCallsDirectory):
    """Extension 201 (password pw-201) in the one organisation."""

    async def organisation_for_domain(self, domain: str | None) -> FakeOrganisation:
        return FakeOrganisation()

    async def find_credentials(self, org_id: int, username: str) -> FakeCredentials | None:
        if username != "201":
            return None
        return FakeCredentials(
            FakeUser(1, "201", "Alice"),
            "callrec",
            compute_ha1("MD5", "201", "callrec", "pw-201"),
            compute_ha1("SHA-256", "201", "callrec", "pw-201"),
        )

    async def get_user(self, org_id: int, extension: str) -> None:
        return None

    async def bindings(self, org_id: int, extension: str, now: float) -> list[Any]:
        return []


def _invite(port: int, phone: int, cseq: int, body: bytes, auth: str | None = None) -> bytes:
    lines = [
        f"INVITE sip:300@{HOST}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:{phone};branch=z9hG4bK-{cseq}-srtp-suites;rport",
        "Max-Forwards: 70",
        f"From: <sip:201@{HOST}>;tag=phone",
        f"To: <sip:300@{HOST}:{port}>",
        "Call-ID: srtp-suites-config",
        f"CSeq: {cseq} INVITE",
        f"Contact: <sip:201@{HOST}:{phone}>",
        "Content-Type: application/sdp",
        *([f"Proxy-Authorization: {auth}"] if auth else []),
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


async def test_the_configured_suites_reach_the_calls_of_callrec_serve(tmp_path: Path) -> None:
    """`[media] srtp_suites` from the config file decides a real B2BUA's calls: a phone
    offering only a suite left out of it gets 488 with the reason in a Warning."""
    trunk, phone = await udp_peer(), await udp_peer()
    tasks: list[asyncio.Task[Any]] = []
    offer = sdp("RTP/SAVP", f"1 {AES_32} inline:{KEY_TEXT}")
    try:
        async with running_b2bua(
            tmp_path,
            _OneUser(),
            FakeMediaFactory(),
            trunk,
            tasks,
            sip_extra=f'[media]\nsrtp_suites = ["{AES_80}"]\n',
        ) as b2bua:
            phone.send(_invite(b2bua.port, phone.port, 1, offer), b2bua.port)
            _, challenge = await phone.response(407)
            auth = build_authorization(
                preferred_challenge(challenge.headers.get_all("Proxy-Authenticate")),
                "INVITE",
                f"sip:300@{HOST}:{b2bua.port}",
                "201",
                "pw-201",
            )
            phone.send(_invite(b2bua.port, phone.port, 2, offer, auth), b2bua.port)
            data, refusal = await phone.response(488)
            warning = refusal.headers.get("Warning") or ""
            assert f"tag 1: suite {AES_32} is not in [media] srtp_suites" in warning
            assert KEY_TEXT.encode() not in data
            assert trunk.received.empty()  # nothing reached the trunk
    finally:
        phone.close()
        trunk.close()
