"""SRTP keys in SDP (RFC 4568 SDES), sans-IO: the `a=crypto` attribute and, per call, the
negotiation of each leg's keys.

callrec terminates SRTP on each leg: a phone's keys never reach the trunk, and the other
way round. On each leg the far end's `a=crypto` gives the key callrec *decrypts* with, and
callrec's own `a=crypto` toward it the key callrec *encrypts* with: a fresh random master
key per leg, direction and suite, from `secrets` (RFC 4568 6.1: each side declares the
key it sends with).

Supported (`SUITES`, the default order of `[media] srtp_suites`): AEAD_AES_256_GCM and
AEAD_AES_128_GCM (RFC 7714: a 256- or 128-bit key and a 96-bit salt, a 16-byte tag),
AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32 (RFC 4568: a 128-bit key, a 112-bit
salt); one inline key, no session parameters. The AES-256 counter-mode suites of RFC 6188
are not: libsrtp has them, but `pylibsrtp` 1.0 reaches its policies only through DTLS-SRTP
profiles, which name no AES-256-CM one. Nor is an MKI: `pylibsrtp` cannot give libsrtp
one, so an attribute with `|MKI:length` is never taken, and an offer left with nothing
else is refused with a reason that says so.

The suites a call uses are the configured ones (`suites`, strongest first). callrec
*offers* them in that order, one attribute per suite, each under its own tag
(`SUITE_TAGS`; RFC 4568 lists attributes in order of preference). It *answers* with
the offerer's preference (the first attribute it can use, in the offer's order) among
the configured suites; a suite left out of the config is never taken. An `RTP/SAVP`
offer with none usable is refused with 488 (`SdesRefused`), saying for each attribute
why.

What callrec offers toward a leg (`OfferMode`): `PLAIN` (RTP/AVP, no crypto),
`OPTIONAL` (RTP/AVP with crypto: SRTP if the answer has crypto, else plain, the usual
"best effort" of softphones and PBXs) or `MANDATORY` (RTP/SAVP: an answer without crypto
fails the call). Toward the trunk it is `[trunk] srtp` (off, offer, require); toward a
phone it follows what that leg negotiated before, or else mirrors the offer being
relayed (a phone is offered SRTP when the trunk offered SRTP). An offer from a leg is
answered as offered: SRTP if it had usable crypto, plain if it had none (except that a
`require`d trunk's plain offer gets 488).

Key material never appears in `repr()`, `str()`, exceptions or logs: `MasterKey` hides
it, and `SdesError` messages never quote an attribute's key parameters.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from b2bua.sdp import SdpError, parse_sdp

__all__ = [
    "KEY_LENGTHS",
    "SUITES",
    "SUITE_TAGS",
    "CryptoAttribute",
    "CryptoChange",
    "MasterKey",
    "OfferMode",
    "SdesError",
    "SdesRefused",
    "SrtpNegotiation",
    "choose_crypto",
    "format_crypto",
    "parse_crypto",
    "select_crypto",
    "strip_crypto",
]

# The suites callrec speaks, strongest first: the default order it offers them in.
SUITES = (
    "AEAD_AES_256_GCM",
    "AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
)
# The tag each suite is offered under, whatever the order: a tag names one suite across
# re-offers and config changes (RFC 4568: a tag identifies an attribute; the order of
# the lines is the preference).
SUITE_TAGS = {
    "AES_CM_128_HMAC_SHA1_80": 1,
    "AES_CM_128_HMAC_SHA1_32": 2,
    "AEAD_AES_128_GCM": 3,
    "AEAD_AES_256_GCM": 4,
}
# The inline key's length per suite: master key + master salt.
KEY_LENGTHS = {
    "AEAD_AES_256_GCM": 32 + 12,  # RFC 7714
    "AEAD_AES_128_GCM": 16 + 12,
    "AES_CM_128_HMAC_SHA1_80": 16 + 14,  # RFC 4568 6.2
    "AES_CM_128_HMAC_SHA1_32": 16 + 14,
}
_SECURE_PROTOS = {"RTP/SAVP": "RTP/AVP", "RTP/SAVPF": "RTP/AVPF"}
_PLAIN_PROTOS = {plain: secure for secure, plain in _SECURE_PROTOS.items()}
_TAG = re.compile(r"[0-9]{1,9}")
_SUITE = re.compile(r"[A-Za-z0-9_]+")
_LIFETIME = re.compile(r"(2\^)?[0-9]+")
_MKI = re.compile(r"[0-9]+:[0-9]{1,3}")


class SdesError(ValueError):
    """An `a=crypto` attribute that is not RFC 4568 grammar; says what, never the key."""


class SdesRefused(SdesError):
    """The SDP cannot be accepted for SRTP reasons: answer `status` (488) with `reason`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class MasterKey:
    """An SRTP master key and salt for one suite. `material` is never shown."""

    suite: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.suite not in KEY_LENGTHS:
            raise SdesError(f"unsupported crypto suite {self.suite[:40]!r}")
        length = KEY_LENGTHS[self.suite]
        if len(self.material) != length:
            raise SdesError(f"a {self.suite} key is {length} bytes, not {len(self.material)}")

    @classmethod
    def generate(cls, suite: str) -> MasterKey:
        """A fresh random key for `suite` (from `secrets`)."""
        return cls(suite, secrets.token_bytes(KEY_LENGTHS[suite]))

    def inline(self) -> str:
        """The key as it is written after `inline:` (base64)."""
        return base64.b64encode(self.material).decode("ascii")


@dataclass(frozen=True)
class CryptoAttribute:
    """One parsed `a=crypto` value. Its keys are hidden from `repr()`."""

    tag: int
    suite: str
    keys: tuple[bytes, ...] = field(repr=False)
    lifetime: str | None = None
    mki: bool = False
    session_params: tuple[str, ...] = ()

    @property
    def unsupported(self) -> str | None:
        """Why callrec cannot use this attribute, or None when it can."""
        if self.suite not in KEY_LENGTHS:
            return f"suite {self.suite[:40]} is not supported"
        if self.mki:
            return "an MKI is not supported (offer the key without |MKI:length)"
        if len(self.keys) != 1:
            return "more than one key is not supported"
        if len(self.keys[0]) != KEY_LENGTHS[self.suite]:
            return f"a {self.suite} key must be {KEY_LENGTHS[self.suite]} bytes"
        if self.session_params:
            return "session parameters are not supported"
        return None

    @property
    def master_key(self) -> MasterKey:
        """The key to use; raises `SdesError` when `unsupported`."""
        reason = self.unsupported
        if reason is not None:
            raise SdesError(reason)
        return MasterKey(self.suite, self.keys[0])


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse the value of an `a=crypto:` line: `tag suite key-params [session-params]`.

    Raises `SdesError` (and nothing else) for anything that is not RFC 4568 grammar. An
    unknown suite parses; `CryptoAttribute.unsupported` says it cannot be used."""
    parts = value.split()
    if len(parts) < 3:
        raise SdesError("a=crypto needs a tag, a suite and key parameters")
    tag, suite, key_params, *session = parts
    if not _TAG.fullmatch(tag):
        raise SdesError("a=crypto tag is not 1 to 9 digits")
    if not _SUITE.fullmatch(suite):
        raise SdesError("a=crypto suite is not a name")
    keys: list[bytes] = []
    lifetime: str | None = None
    mki = False
    for key_param in key_params.split(";"):
        method, colon, info = key_param.partition(":")
        if not colon or method.lower() != "inline":
            raise SdesError("a=crypto key method is not inline")
        encoded, *extras = info.split("|")
        keys.append(_decode_key(encoded))
        if len(extras) > 2:
            raise SdesError("a=crypto key has more than a lifetime and an MKI")
        for extra in extras:
            if _MKI.fullmatch(extra):
                mki = True
            elif _LIFETIME.fullmatch(extra) and lifetime is None and not mki:
                lifetime = extra
            else:
                raise SdesError("a=crypto key lifetime or MKI is malformed")
    return CryptoAttribute(int(tag), suite, tuple(keys), lifetime, mki, tuple(session))


def _decode_key(text: str) -> bytes:
    if not text:
        raise SdesError("a=crypto inline key is empty")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SdesError("a=crypto inline key is not base64") from None


def format_crypto(tag: int, key: MasterKey) -> str:
    """The value of an `a=crypto:` line offering or answering `key` under `tag`."""
    return f"{tag} {key.suite} inline:{key.inline()}"


def select_crypto(values: Iterable[str], suites: Sequence[str] = SUITES) -> CryptoAttribute | None:
    """The first usable attribute among `a=crypto` values, in their order, whose suite
    is one of `suites`; malformed and unsupported ones are skipped. None when none is."""
    return choose_crypto(values, suites)[0]


def choose_crypto(
    values: Iterable[str], suites: Sequence[str] = SUITES
) -> tuple[CryptoAttribute | None, list[str]]:
    """`select_crypto`, with why each attribute before the chosen one was skipped
    ("tag 1: ..."; never a key), for a refusal a person can act on."""
    skipped: list[str] = []
    for index, value in enumerate(values):
        try:
            attribute = parse_crypto(value)
        except SdesError as exc:
            skipped.append(f"attribute {index + 1}: {exc}")
            continue
        reason = attribute.unsupported
        if reason is None and attribute.suite not in suites:
            reason = f"suite {attribute.suite} is not in [media] srtp_suites"
        if reason is None:
            return attribute, skipped
        skipped.append(f"tag {attribute.tag}: {reason}")
    return None, skipped


def strip_crypto(body: bytes) -> bytes:
    """`body` without any `a=crypto` line (keys never travel to the other leg)."""
    return _rewrite(body, None, None, [])


def _rewrite(body: bytes, index: int | None, proto: str | None, crypto: list[str]) -> bytes:
    """Drop every a=crypto line; the `index`-th m= line gets `proto`, and `crypto` lines at
    the end of its section. Every other byte, and each line's ending, is kept."""
    out: list[bytes] = []
    media_index = -1
    ending = b"\r\n"
    in_target = False
    for raw in body.splitlines(keepends=True):
        line = raw.rstrip(b"\r\n")
        line_ending = raw[len(line) :]
        if line.startswith(b"a=crypto:") or line == b"a=crypto":
            continue
        if line.startswith(b"m="):
            if in_target:
                out.extend(_crypto_lines(crypto, ending))
                in_target = False
            media_index += 1
            if media_index == index:
                in_target = True
                ending = line_ending or b"\r\n"
                parts = line.split(b" ")
                if proto is not None and len(parts) >= 3:
                    parts[2] = proto.encode("ascii")
                    line = b" ".join(parts)
        if in_target and not line_ending:
            line_ending = ending  # the body's last line had none: our lines follow it
        out.append(line + line_ending)
    if in_target:
        out.extend(_crypto_lines(crypto, ending))
    return b"".join(out)


def _crypto_lines(values: list[str], ending: bytes) -> list[bytes]:
    return [b"a=crypto:" + value.encode("ascii") + ending for value in values]


class OfferMode(enum.Enum):
    """What callrec offers toward a leg."""

    PLAIN = "plain"  # RTP/AVP, no crypto
    OPTIONAL = "optional"  # RTP/AVP with crypto
    MANDATORY = "mandatory"  # RTP/SAVP with crypto


_STRENGTH = [OfferMode.PLAIN, OfferMode.OPTIONAL, OfferMode.MANDATORY]
TRUNK_MODES = {"off": OfferMode.PLAIN, "offer": OfferMode.OPTIONAL, "require": OfferMode.MANDATORY}


@dataclass(frozen=True)
class CryptoChange:
    """A leg's SRTP keys in force from now: `receive` decrypts what arrives from the leg,
    `send` encrypts what goes to it; both None for plain RTP."""

    leg: str
    receive: MasterKey | None
    send: MasterKey | None


@dataclass
class _Offered:
    """A leg's last offer as callrec received it: its transport and the crypto chosen."""

    proto: str
    chosen: CryptoAttribute | None


@dataclass
class _LegSdes:
    configured: OfferMode | None  # fixed by config (the trunk), None: follow the call
    required: bool
    # A phone called over TLS: `configured` is the least it is offered, more when the
    # other leg brought SRTP.
    at_least: bool = False
    local: dict[str, MasterKey] = field(default_factory=dict, repr=False)
    offered_tags: dict[int, str] = field(default_factory=dict)  # our last offer to it
    offered_mode: OfferMode = OfferMode.PLAIN
    their_offer: _Offered | None = None
    negotiated: OfferMode | None = None
    receive: MasterKey | None = field(default=None, repr=False)
    send: MasterKey | None = field(default=None, repr=False)


def _bounded(reason: str, limit: int = 300) -> str:
    """A refusal reason short enough for a Warning header; it never holds a key."""
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _negotiated(proto: str) -> OfferMode:
    """How a leg that agreed on SRTP over `proto` is offered from now on."""
    return OfferMode.MANDATORY if proto in _SECURE_PROTOS else OfferMode.OPTIONAL


def _other(leg: str) -> str:
    return "b" if leg == "a" else "a"


def _audio(body: bytes) -> tuple[int, str, list[str]] | None:
    """(index, proto, a=crypto values) of the first audio m= section with a port, or None
    (no SDP callrec relays)."""
    try:
        sdp = parse_sdp(body)
    except SdpError:
        return None
    for index, media in enumerate(sdp.media):
        if media.kind == "audio" and media.port != 0:
            crypto = [value or "" for name, value in media.attributes if name == "crypto"]
            return index, media.proto, crypto
    return None


class SrtpNegotiation:
    """The SDES state of one call: what each leg was offered and the keys in force.

    `offer(from_leg, body)` and `answer(from_leg, body)` take the SDP that arrived from
    `from_leg` and return the body to send to the other leg with callrec's own crypto
    (and none of the sender's); `answer` also returns the key changes the relay must
    apply. They raise
    `SdesRefused` when the SDP must be refused. `trunk_leg` ("a" or "b", None for no
    trunk) gets `trunk_mode` (`[trunk] srtp`), the legs in `tls_legs` the mode given
    there (phones callrec calls over TLS); `suites` are the ones callrec offers, in
    that order, and the only ones it takes (`[media] srtp_suites`); `new_key` makes keys
    (tests fix it).
    """

    def __init__(
        self,
        *,
        trunk_leg: str | None = None,
        trunk_mode: str = "off",
        suites: Sequence[str] = SUITES,
        new_key: Callable[[str], MasterKey] = MasterKey.generate,
        tls_legs: Mapping[str, str] | None = None,
    ) -> None:
        unknown = [suite for suite in suites if suite not in KEY_LENGTHS]
        if unknown or not suites:
            raise SdesError(f"SRTP suites must be some of {', '.join(SUITES)}")
        self.suites = tuple(dict.fromkeys(suites))
        # Fixed modes: the trunk's leg by `[trunk] srtp`; a phone leg callrec offers to
        # over TLS by `[sip] tls_phone_srtp` (`tls_legs`: leg -> "off"/"offer"/"require").
        fixed = {leg: mode for leg, mode in (tls_legs or {}).items() if leg != trunk_leg}
        if trunk_leg is not None:
            fixed[trunk_leg] = trunk_mode
        self.legs = {
            leg: _LegSdes(
                configured=TRUNK_MODES[fixed[leg]] if leg in fixed else None,
                required=leg in fixed and TRUNK_MODES[fixed[leg]] is OfferMode.MANDATORY,
                at_least=leg != trunk_leg,
            )
            for leg in ("a", "b")
        }
        self._new_key = new_key

    def __repr__(self) -> str:
        modes = {leg: state.negotiated for leg, state in self.legs.items()}
        return f"<SrtpNegotiation {modes}>"

    def secure(self, leg: str) -> bool:
        """True while `leg` runs SRTP."""
        return self.legs[leg].send is not None

    def _local(self, leg: str, suite: str) -> MasterKey:
        keys = self.legs[leg].local
        if suite not in keys:
            keys[suite] = self._new_key(suite)
        return keys[suite]

    # ------------------------------------------------------------------ offers
    def offer(self, from_leg: str, body: bytes) -> bytes:
        """An offer arrived from `from_leg`: the offer for the other leg. Keys change
        only with the answer."""
        audio = _audio(body)
        sender = self.legs[from_leg]
        if audio is None:
            sender.their_offer = None
            return strip_crypto(body)
        _, proto, values = audio
        chosen = self._offered_key(from_leg, proto, values)
        sender.their_offer = _Offered(proto, chosen)
        to_leg = _other(from_leg)
        mode = self._offer_mode(to_leg, proto, chosen)
        return self._write_offer(to_leg, body, audio[0], proto, mode)

    def _offer_mode(
        self, leg: str, from_proto: str, from_chosen: CryptoAttribute | None
    ) -> OfferMode:
        state = self.legs[leg]
        if state.required:
            return OfferMode.MANDATORY
        if state.negotiated is not None and state.negotiated is not OfferMode.PLAIN:
            return state.negotiated
        if state.configured is not None and not state.at_least:
            return state.configured
        if state.negotiated is OfferMode.PLAIN and state.configured is None:
            return OfferMode.PLAIN
        if from_chosen is None:
            followed = OfferMode.PLAIN
        elif from_proto in _SECURE_PROTOS:
            followed = OfferMode.MANDATORY
        else:
            followed = OfferMode.OPTIONAL
        if state.configured is None:
            return followed
        return max(followed, state.configured, key=_STRENGTH.index)

    def _write_offer(self, leg: str, body: bytes, index: int, proto: str, mode: OfferMode) -> bytes:
        state = self.legs[leg]
        state.offered_mode = mode
        state.offered_tags = {}
        plain_proto = _SECURE_PROTOS.get(proto, proto)
        if mode is OfferMode.PLAIN:
            return _rewrite(body, index, plain_proto, [])
        lines: list[str] = []
        for suite in self.suites:
            tag = SUITE_TAGS[suite]
            state.offered_tags[tag] = suite
            lines.append(format_crypto(tag, self._local(leg, suite)))
        if mode is OfferMode.MANDATORY:
            return _rewrite(body, index, _PLAIN_PROTOS.get(plain_proto, plain_proto), lines)
        return _rewrite(body, index, plain_proto, lines)

    # ------------------------------------------------------------------ answers
    def check(self, from_leg: str, body: bytes, *, offer: bool) -> None:
        """Raise `SdesRefused` if `offer` / `answer` would refuse this SDP from
        `from_leg`; changes nothing."""
        audio = _audio(body)
        if audio is None:
            return
        if offer:
            self._offered_key(from_leg, audio[1], audio[2])
        else:
            self._answered_key(from_leg, audio[2])

    def _offered_key(self, from_leg: str, proto: str, values: list[str]) -> CryptoAttribute | None:
        """The crypto callrec takes from `from_leg`'s offer, None for plain;
        `SdesRefused` when it must refuse the offer."""
        chosen, skipped = choose_crypto(values, self.suites)
        if chosen is None and proto in _SECURE_PROTOS:
            suites = ", ".join(self.suites)
            why = f": {'; '.join(skipped)}" if skipped else ""
            reason = f"no usable SRTP crypto offered (callrec takes {suites}){why}"
            raise SdesRefused(488, _bounded(reason))
        if chosen is None and self.legs[from_leg].required:
            raise SdesRefused(488, "SRTP is required on this trunk ([trunk] srtp = require)")
        return chosen

    def _answered_key(self, from_leg: str, values: list[str]) -> CryptoAttribute | None:
        """The crypto `from_leg` took from callrec's offer (same tag and suite), or None
        (plain); `SdesRefused` when callrec's offer was MANDATORY."""
        state = self.legs[from_leg]
        if state.offered_tags:
            for value in values:
                try:
                    attribute = parse_crypto(value)
                except SdesError:
                    continue
                if state.offered_tags.get(attribute.tag) != attribute.suite:
                    continue
                reason = attribute.unsupported
                if reason is not None:
                    # It took one of our offers, but will send with a key we cannot use.
                    raise SdesRefused(488, _bounded(f"the SRTP answer is unusable: {reason}"))
                return attribute
        if state.offered_mode is OfferMode.MANDATORY:
            if state.required:
                raise SdesRefused(488, "the trunk answered without SRTP ([trunk] srtp = require)")
            raise SdesRefused(488, "the far end answered an SRTP offer without SRTP")
        return None

    def answer(self, from_leg: str, body: bytes) -> tuple[bytes, list[CryptoChange]]:
        """`from_leg` answered callrec's offer: the answer for the other leg (the
        offerer), and the keys of both legs from now."""
        audio = _audio(body)
        if audio is None:
            return strip_crypto(body), []
        index, proto, values = audio
        chosen = self._answered_key(from_leg, values)
        changes: list[CryptoChange] = []
        answerer = self.legs[from_leg]
        if chosen is None:
            answerer.negotiated = OfferMode.PLAIN
            self._set(from_leg, None, None, changes)
        else:
            answerer.negotiated = _negotiated(proto)
            self._set(from_leg, chosen.master_key, self._local(from_leg, chosen.suite), changes)
        to_leg = _other(from_leg)
        offerer = self.legs[to_leg]
        offered = offerer.their_offer
        if offered is None:
            return _rewrite(body, index, None, []), changes
        if offered.chosen is None:
            offerer.negotiated = OfferMode.PLAIN
            self._set(to_leg, None, None, changes)
            return _rewrite(body, index, offered.proto, []), changes
        ours = self._local(to_leg, offered.chosen.suite)
        offerer.negotiated = _negotiated(offered.proto)
        self._set(to_leg, offered.chosen.master_key, ours, changes)
        line = format_crypto(offered.chosen.tag, ours)
        return _rewrite(body, index, offered.proto, [line]), changes

    def _set(
        self,
        leg: str,
        receive: MasterKey | None,
        send: MasterKey | None,
        changes: list[CryptoChange],
    ) -> None:
        state = self.legs[leg]
        if state.receive != receive or state.send != send:
            state.receive, state.send = receive, send
            changes.append(CryptoChange(leg, receive, send))
