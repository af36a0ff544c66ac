"""SRTP and SRTCP for one relay leg (RFC 3711), with libsrtp through `pylibsrtp`.

The relay terminates SRTP per leg (`media.relay.MediaSession.set_srtp`): what arrives
from an SRTP leg is authenticated and decrypted with the key that leg declared
(`receive`), and what leaves towards it is encrypted with callrec's own key for that
leg (`send`). Each direction is one libsrtp session, so libsrtp keeps the replay
window (64 packets) and the rollover counter of every SSRC it sees; a packet that fails
authentication or the replay check raises one of `SRTP_FAILURES`, which the relay counts
and drops. RTCP on the leg goes through the same sessions as SRTCP (their own indices).

Outbound sessions take any SSRC (`SSRC_ANY_OUTBOUND`): the plain leg's streams and
announcements are encrypted as they come. Inbound ones take any SSRC too, but libsrtp
creates a stream for a new SSRC only once a packet of it has authenticated, so forged
packets cost nothing but the check.

Keys never appear in `repr()` or in exceptions: `SrtpKey` hides its material, and
libsrtp's errors name the failure only.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

import pylibsrtp

from media.rtp import MediaError

__all__ = ["KEY_LENGTHS", "SRTP_FAILURES", "SUITE_PROFILES", "SrtpError", "SrtpKey", "SrtpLeg"]

# SDES suite name -> libsrtp profile. RFC 6188's AES_256_CM suites are missing: pylibsrtp
# sets policies from DTLS-SRTP profiles only, and none is AES-256 counter mode.
SUITE_PROFILES = {
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
# Master key + master salt, per suite.
KEY_LENGTHS = {
    "AEAD_AES_256_GCM": 32 + 12,
    "AEAD_AES_128_GCM": 16 + 12,
    "AES_CM_128_HMAC_SHA1_80": 16 + 14,
    "AES_CM_128_HMAC_SHA1_32": 16 + 14,
}
# What protect/unprotect raise for a packet: libsrtp's failure, or a packet too long.
SRTP_FAILURES: tuple[type[Exception], ...] = (pylibsrtp.Error, ValueError)


class SrtpError(MediaError):
    """Keys that cannot be used (unknown suite, wrong length); never shows the key."""


@dataclass(frozen=True)
class SrtpKey:
    """A master key and salt (`KEY_LENGTHS`) for one suite; `material` is never shown."""

    suite: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.suite not in SUITE_PROFILES:
            raise SrtpError(f"unsupported SRTP suite {self.suite[:40]!r}")
        length = KEY_LENGTHS[self.suite]
        if len(self.material) != length:
            raise SrtpError(f"a {self.suite} key is {length} bytes, not {len(self.material)}")

    def same_as(self, other: SrtpKey | None) -> bool:
        return (
            other is not None
            and other.suite == self.suite
            and hmac.compare_digest(other.material, self.material)
        )


def _session(key: SrtpKey, ssrc_type: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key.material, ssrc_type=ssrc_type, srtp_profile=SUITE_PROFILES[key.suite]
    )
    return pylibsrtp.Session(policy)


class SrtpLeg:
    """One leg's SRTP: `unprotect`/`unprotect_rtcp` for what arrives from it (its key),
    `protect`/`protect_rtcp` for what is sent to it (callrec's key). The four are the
    libsrtp sessions' own methods, called directly on the hot path. A leg with only one
    key (the other direction plain) is not a thing SDES negotiates, so both are needed.
    """

    __slots__ = (
        "_receive",
        "_send",
        "protect",
        "protect_rtcp",
        "receive_session",
        "send_session",
        "unprotect",
        "unprotect_rtcp",
    )

    _receive: SrtpKey
    _send: SrtpKey
    receive_session: pylibsrtp.Session
    send_session: pylibsrtp.Session

    def __init__(
        self,
        receive: SrtpKey,
        send: SrtpKey,
        *,
        previous: SrtpLeg | None = None,
    ) -> None:
        """Sessions for `receive` and `send`; a direction whose key is the same as in
        `previous` keeps its session (replay window and rollover counter go on)."""
        if previous is not None and receive.same_as(previous._receive):
            self.receive_session = previous.receive_session
        else:
            self.receive_session = _session(receive, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        if previous is not None and send.same_as(previous._send):
            self.send_session = previous.send_session
        else:
            self.send_session = _session(send, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self._receive = receive
        self._send = send
        self.unprotect = self.receive_session.unprotect
        self.unprotect_rtcp = self.receive_session.unprotect_rtcp
        self.protect = self.send_session.protect
        self.protect_rtcp = self.send_session.protect_rtcp

    def __repr__(self) -> str:
        return f"<SrtpLeg receive {self._receive.suite} send {self._send.suite}>"
