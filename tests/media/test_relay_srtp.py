"""The relay with an SRTP leg, in process: each suite with both legs on SRTP over real
sockets, SRTCP both ways, prompts encrypted toward an SRTP phone, re-keying, and what a
failed packet does (and does not) count as."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import numpy as np
import pylibsrtp
import pytest

from media.ports import PortAllocator
from media.relay import MediaSession
from media.srtp import KEY_LENGTHS, SUITE_PROFILES, SrtpError, SrtpKey, SrtpLeg
from testkit.sipp_runner import free_port
from tests.media.test_relay import RECEIVER_REPORT, RecordingTap, connected_phones, rtp
from tests.media.udp_phones import close_endpoints  # noqa: F401  (autouse fixture)

SUITE = "AES_CM_128_HMAC_SHA1_80"


class SrtpPhone:
    """The libsrtp state of a phone on an SRTP leg: it sends with its key, hears
    callrec's. The test's libsrtp sessions are made here, apart from `media.srtp`."""

    def __init__(self, suite: str = SUITE) -> None:
        self.suite = suite
        length = KEY_LENGTHS[suite]
        self.key, self.callrec_key = secrets.token_bytes(length), secrets.token_bytes(length)
        profile = SUITE_PROFILES[suite]
        self.sends = pylibsrtp.Session(
            pylibsrtp.Policy(self.key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        )
        self.hears = pylibsrtp.Session(
            pylibsrtp.Policy(
                self.callrec_key, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
            )
        )

    def keys(self) -> tuple[SrtpKey, SrtpKey]:
        return SrtpKey(self.suite, self.key), SrtpKey(self.suite, self.callrec_key)


@pytest.fixture
async def session() -> AsyncIterator[MediaSession]:
    first = free_port(even=True, span=8)
    created = await MediaSession.create(
        PortAllocator(first, first + 7), "127.0.0.1", silence_timeout=None
    )
    yield created
    created.close()


# Tag lengths: what each suite adds to an RTP and an RTCP packet (RFC 3711, RFC 7714).
TRAILERS = {
    "AEAD_AES_256_GCM": (16, 4 + 16),
    "AEAD_AES_128_GCM": (16, 4 + 16),
    "AES_CM_128_HMAC_SHA1_80": (10, 4 + 10),
    "AES_CM_128_HMAC_SHA1_32": (4, 4 + 10),
}


@pytest.mark.parametrize("suite", sorted(SUITE_PROFILES))
async def test_each_suite_relays_rtp_and_rtcp_between_two_srtp_legs(
    session: MediaSession, suite: str
) -> None:
    """Both legs on `suite`, each with its own keys: what one phone sends reaches the
    other decrypted by callrec and encrypted again under the other leg's key; the tap
    gets the plaintext; a packet under another key is dropped and counted."""
    assert set(TRAILERS) == set(SUITE_PROFILES)
    caller, callee = await connected_phones(session)
    phone_a, phone_b = SrtpPhone(suite), SrtpPhone(suite)
    session.set_srtp("a", *phone_a.keys())
    session.set_srtp("b", *phone_b.keys())
    tap = RecordingTap()
    session.tap = tap
    rtp_trailer, rtcp_trailer = TRAILERS[suite]
    for sequence in range(1, 4):
        sent = phone_a.sends.protect(rtp(sequence))
        assert len(sent) == len(rtp(sequence)) + rtp_trailer
        caller.rtp.send(sent, session.local_port("a"))
        arrived = await callee.rtp.receive_data()
        assert arrived != sent and len(arrived) == len(sent)
        assert phone_b.hears.unprotect(arrived) == rtp(sequence)
        callee.rtp.send(phone_b.sends.protect(rtp(100 + sequence)), session.local_port("b"))
        assert phone_a.hears.unprotect(await caller.rtp.receive_data()) == rtp(100 + sequence)
    report = phone_a.sends.protect_rtcp(RECEIVER_REPORT)
    assert len(report) == len(RECEIVER_REPORT) + rtcp_trailer
    caller.rtcp.send(report, session.local_rtcp_port("a"))
    assert phone_b.hears.unprotect_rtcp(await callee.rtcp.receive_data()) == RECEIVER_REPORT
    # A phone under another key of the same suite: dropped, counted, never relayed.
    stranger = SrtpPhone(suite)
    caller.rtp.send(stranger.sends.protect(rtp(50)), session.local_port("a"))
    caller.rtp.send(phone_a.sends.protect(rtp(4)), session.local_port("a"))
    assert phone_b.hears.unprotect(await callee.rtp.receive_data()) == rtp(4)
    assert session.stats("a").srtp_failed == 1
    tapped = [(leg, kind, data) for leg, kind, data, _ in tap.packets if kind == "rtp"]
    assert ("a", "rtp", rtp(1)) in tapped and ("b", "rtp", rtp(101)) in tapped
    assert all(data[12:] == b"\xd5" * 160 for _, _, data in tapped)


async def test_rtcp_is_srtcp_on_the_srtp_leg_both_ways(session: MediaSession) -> None:
    caller, callee = await connected_phones(session)
    phone = SrtpPhone()
    session.set_srtp("a", *phone.keys())
    tap = RecordingTap()
    session.tap = tap
    caller.rtcp.send(phone.sends.protect_rtcp(RECEIVER_REPORT), session.local_rtcp_port("a"))
    assert await callee.rtcp.receive_data() == RECEIVER_REPORT
    callee.rtcp.send(RECEIVER_REPORT, session.local_rtcp_port("b"))
    heard = await caller.rtcp.receive_data()
    assert heard != RECEIVER_REPORT and phone.hears.unprotect_rtcp(heard) == RECEIVER_REPORT
    assert [(leg, kind, data) for leg, kind, data, _ in tap.packets] == [
        ("a", "rtcp", RECEIVER_REPORT),
        ("b", "rtcp", RECEIVER_REPORT),
    ]


async def test_a_prompt_toward_an_srtp_phone_is_encrypted(session: MediaSession) -> None:
    caller, _ = await connected_phones(session)
    phone = SrtpPhone()
    session.set_srtp("a", *phone.keys())
    played = await session.play("a", np.full(480, 1000, np.int16), 8, "PCMA")
    assert played == 3
    for _ in range(played):
        packet = phone.hears.unprotect(await caller.rtp.receive_data())
        assert packet[1] & 0x7F == 8 and len(packet) == 12 + 160


async def test_bad_packets_are_dropped_counted_and_not_media(session: MediaSession) -> None:
    caller, callee = await connected_phones(session)
    phone = SrtpPhone()
    session.set_srtp("a", *phone.keys())
    port = session.local_port("a")
    good = phone.sends.protect(rtp(1))
    caller.rtp.send(good, port)
    assert await callee.rtp.receive_data() == rtp(1)
    caller.rtp.send(good, port)  # a replay
    caller.rtp.send(good[:-1] + bytes([good[-1] ^ 1]), port)  # a broken tag
    caller.rtp.send(rtp(2), port)  # plain RTP on an SRTP leg
    caller.rtp.send(phone.sends.protect(rtp(3)), port)
    assert await callee.rtp.receive_data() == rtp(3)
    stats = session.stats("a")
    assert (stats.srtp_failed, stats.rtp_in, stats.dropped) == (3, 2, 3)
    assert session.srtp_failures == 3


async def test_re_keying_keeps_an_unchanged_direction(session: MediaSession) -> None:
    caller, callee = await connected_phones(session)
    phone = SrtpPhone()
    receive, send = phone.keys()
    session.set_srtp("a", receive, send)
    port = session.local_port("a")
    first = phone.sends.protect(rtp(1))
    caller.rtp.send(first, port)
    assert await callee.rtp.receive_data() == rtp(1)
    # The same keys again (a re-INVITE that keeps them): the replay window goes on.
    session.set_srtp("a", receive, send)
    caller.rtp.send(first, port)
    caller.rtp.send(phone.sends.protect(rtp(2)), port)
    assert await callee.rtp.receive_data() == rtp(2)
    assert session.stats("a").srtp_failed == 1
    # A new key from the phone: a new session for what it sends, ours unchanged.
    renewed = SrtpPhone()
    session.set_srtp("a", renewed.keys()[0], send)
    caller.rtp.send(renewed.sends.protect(rtp(3)), port)
    assert await callee.rtp.receive_data() == rtp(3)
    callee.rtp.send(rtp(4), session.local_port("b"))
    assert phone.hears.unprotect(await caller.rtp.receive_data()) == rtp(4)
    # Plain again.
    session.set_srtp("a", None, None)
    caller.rtp.send(rtp(5), port)
    assert await callee.rtp.receive_data() == rtp(5)


def test_keys_are_checked_and_never_shown() -> None:
    key = secrets.token_bytes(30)
    with pytest.raises(SrtpError):
        SrtpKey("AES_256_CM_HMAC_SHA1_80", key)
    with pytest.raises(SrtpError) as caught:
        SrtpKey(SUITE, key[:16])
    assert key[:16].hex() not in str(caught.value)
    leg = SrtpLeg(SrtpKey(SUITE, key), SrtpKey(SUITE, key[::-1]))
    for shown in (repr(leg), repr(SrtpKey(SUITE, key)), str(SrtpKey(SUITE, key))):
        assert key.hex() not in shown and repr(key) not in shown


async def test_one_key_alone_is_refused(session: MediaSession) -> None:
    with pytest.raises(SrtpError):
        session.set_srtp("a", SrtpKey(SUITE, secrets.token_bytes(30)), None)
