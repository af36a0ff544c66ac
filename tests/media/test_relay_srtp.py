"""The relay with an SRTP leg, in process: SRTCP both ways, prompts encrypted toward an
SRTP phone, re-keying, and what a failed packet does (and does not) count as."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import numpy as np
import pylibsrtp
import pytest

from media.ports import PortAllocator
from media.relay import MediaSession
from media.srtp import SrtpError, SrtpKey, SrtpLeg
from testkit.sipp_runner import free_port
from tests.media.test_relay import RECEIVER_REPORT, RecordingTap, connected_phones, rtp
from tests.media.udp_phones import close_endpoints  # noqa: F401  (autouse fixture)

SUITE = "AES_CM_128_HMAC_SHA1_80"


class SrtpPhone:
    """The libsrtp state of a phone on leg a: it sends with its key, hears callrec's."""

    def __init__(self) -> None:
        self.key, self.callrec_key = secrets.token_bytes(30), secrets.token_bytes(30)
        profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        self.sends = pylibsrtp.Session(
            pylibsrtp.Policy(self.key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        )
        self.hears = pylibsrtp.Session(
            pylibsrtp.Policy(
                self.callrec_key, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
            )
        )

    def keys(self) -> tuple[SrtpKey, SrtpKey]:
        return SrtpKey(SUITE, self.key), SrtpKey(SUITE, self.callrec_key)


@pytest.fixture
async def session() -> AsyncIterator[MediaSession]:
    first = free_port(even=True, span=8)
    created = await MediaSession.create(
        PortAllocator(first, first + 7), "127.0.0.1", silence_timeout=None
    )
    yield created
    created.close()


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
