"""SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760), sans-IO.

Server side: `DigestChallenger` issues challenges and verifies credentials.

Nonces: ``base64url(timestamp | salt | HMAC(secret, realm | address | timestamp | salt))``.
The address is the client's IP and transport (not its port, which NAT may change): a
nonce issued to one address is refused from any other, so a captured header is useless
elsewhere. A nonce lives ``nonce_lifetime`` seconds (60 by default); one past its lifetime
with a right digest is answered with ``stale=true`` and the phone retries at once with the
same password, no prompt.

Replay: the nonce count (``nc``) of every nonce used successfully is kept in a bounded
in-memory table (`NonceCounts`). A request must carry a higher ``nc`` than the last one
accepted for its nonce; a replayed or non-increasing ``nc`` is refused like a wrong
password (a new challenge with ``stale=false``, ``AuthResult.failed``). Credentials
without qop carry no ``nc``: their nonce is good for one request. When the table is full
its least recently used entry is dropped and every nonce issued up to that entry's
issue time is treated as expired (stale), so forgetting a count never re-opens a replay.

Nonces do not survive a restart: the HMAC secret is drawn per process, because replay
safety needs the ``nc`` table, which is memory only. After a restart every phone gets a
``stale=true`` challenge and carries on. Nodes that share a store share the secret
instead, and each accepted ``nc`` is also recorded in the store
(`b2bua.services.AuthLedger`, `storage.auth`): a nonce one node issued is good on
another, and a count one node accepted is a replay on every node.

Only credentials that were right move the table, so wrong guesses cannot burn the counts
of an honest client's nonce.

Client side: `preferred_challenge` picks the strongest challenge and `build_authorization`
answers it; used by the benches and the tests, never by the proxy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from b2bua.message import SipRequest, SipResponse, SipUri, make_response
from b2bua.peer import Peer

# RFC 8760 order of preference: strongest first.
SUPPORTED_ALGORITHMS: tuple[str, ...] = ("SHA-256", "MD5")
_HASHES: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}
_SALT_BYTES = 8
_MAC_BYTES = 16
_TIMESTAMP = struct.Struct(">d")
# Clock skew tolerated on nonces that claim to come from the future (clock changes).
_FUTURE_SLACK = 5.0
DEFAULT_NONCE_LIFETIME = 60.0
DEFAULT_MAX_NONCES = 8192


class DigestError(ValueError):
    """A Digest challenge or credentials header is malformed or unsupported."""


@dataclass(frozen=True)
class Credentials:
    """What the user store holds for one username: HA1 = H(username:realm:password)."""

    ha1_md5: str
    ha1_sha256: str

    def ha1_for(self, base_algorithm: str) -> str:
        return self.ha1_sha256 if base_algorithm == "SHA-256" else self.ha1_md5


@dataclass(frozen=True)
class AuthResult:
    """Outcome of checking a request's credentials.

    ``stale`` is true only when the digest was right for a nonce of ours that expired (or
    whose count was forgotten): the caller should re-challenge with ``stale=True``.
    ``failed`` is true when credentials were presented and refused (wrong password,
    unknown user, foreign or replayed nonce, malformed header): what abuse limits count.
    A request without credentials is neither. An accepted result names the ``nonce``,
    when it was ``issued`` and the count ``nc`` it used: nodes that share their nonces
    (`b2bua.services.AuthLedger`) record them there too, so no node accepts them again.
    """

    ok: bool
    username: str | None
    stale: bool
    reason: str
    failed: bool = False
    # What an accepted answer used (not part of the outcome: left out of equality).
    nonce: str | None = field(default=None, compare=False)
    issued: float = field(default=0.0, compare=False)
    nc: int = field(default=0, compare=False)


CredentialLookup = Callable[[str], Credentials | None]


def _hash(base_algorithm: str, text: str) -> str:
    return hashlib.new(_HASHES[base_algorithm], text.encode("utf-8")).hexdigest()


def _split_algorithm(algorithm: str | None) -> tuple[str, bool]:
    """Normalise an algorithm token to (base algorithm, session variant)."""
    token = (algorithm or "MD5").strip().upper()
    session = token.endswith("-SESS")
    base = token[: -len("-SESS")] if session else token
    if base not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    return base, session


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password) for "MD5" or "SHA-256" (what a user store keeps)."""
    base, _ = _split_algorithm(algorithm)
    return _hash(base, f"{username}:{realm}:{password}")


def compute_response(
    algorithm: str,
    ha1: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The request-digest of RFC 7616 §3.4.1 (and RFC 2069 when ``qop`` is None)."""
    base, session = _split_algorithm(algorithm)
    if session:
        ha1 = _hash(base, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        body_hash = hashlib.new(_HASHES[base], body).hexdigest()
        ha2 = _hash(base, f"{method}:{uri}:{body_hash}")
    else:
        ha2 = _hash(base, f"{method}:{uri}")
    if qop is None:
        return _hash(base, f"{ha1}:{nonce}:{ha2}")
    return _hash(base, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ---------------------------------------------------------------------------------------
# auth-param lists


def _is_token_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in "!#$%&'*+-.^_`|~")


def parse_auth_header(text: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest k=v, k="quoted, value"`` into (scheme, {lower-case key: value}).

    Raises DigestError on anything that is not a well-formed auth-param list.
    """
    text = text.strip()
    end = 0
    while end < len(text) and _is_token_char(text[end]):
        end += 1
    scheme = text[:end]
    if not scheme:
        raise DigestError("missing authentication scheme")
    if end < len(text) and not text[end].isspace():
        raise DigestError(f"bad character {text[end]!r} after scheme {scheme!r}")
    params: dict[str, str] = {}
    pos = end
    length = len(text)
    while True:
        # Empty list elements (",,") are allowed by RFC 7230 §7.
        while pos < length and (text[pos].isspace() or text[pos] == ","):
            pos += 1
        if pos >= length:
            break
        start = pos
        while pos < length and _is_token_char(text[pos]):
            pos += 1
        key = text[start:pos].lower()
        if not key:
            raise DigestError(f"expected a parameter name at offset {start}")
        while pos < length and text[pos].isspace():
            pos += 1
        if pos >= length or text[pos] != "=":
            raise DigestError(f"parameter {key!r} has no value")
        pos += 1
        while pos < length and text[pos].isspace():
            pos += 1
        if pos < length and text[pos] == '"':
            pos += 1
            chars: list[str] = []
            while True:
                if pos >= length:
                    raise DigestError(f"unterminated quoted value for {key!r}")
                char = text[pos]
                if char == "\\":
                    if pos + 1 >= length:
                        raise DigestError(f"dangling escape in {key!r}")
                    chars.append(text[pos + 1])
                    pos += 2
                    continue
                pos += 1
                if char == '"':
                    break
                chars.append(char)
            value = "".join(chars)
        else:
            # Lenient: some phones leave URIs and the like unquoted.
            start = pos
            while pos < length and text[pos] not in ", \t":
                pos += 1
            value = text[start:pos]
            if not value:
                raise DigestError(f"parameter {key!r} has an empty value")
        if key in params:
            raise DigestError(f"parameter {key!r} given twice")
        params[key] = value
        while pos < length and text[pos].isspace():
            pos += 1
        if pos < length and text[pos] != ",":
            raise DigestError(f"expected ',' after parameter {key!r}")
    return scheme, params


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# ---------------------------------------------------------------------------------------
# server side


def address_of(peer: Peer) -> str:
    """What a nonce is bound to: the transport and the IP (canonical form), not the port."""
    try:
        host = str(ipaddress.ip_address(peer.host))
    except ValueError:
        host = peer.host.lower()
    return f"{peer.transport.lower()}:{host}"


class NonceCounts:
    """The highest ``nc`` accepted per nonce, for at most ``capacity`` nonces.

    Entries are kept in least-recently-used order. An entry whose nonce has expired is
    useless (the nonce is refused as stale anyway) and is pruned. When the table is full
    the least recently used entry is evicted and ``floor`` rises to its issue time: a nonce
    issued at or before ``floor`` that is not in the table may have been used before, so it
    is refused as forgotten (the caller answers ``stale=true``).
    """

    def __init__(self, capacity: int = DEFAULT_MAX_NONCES) -> None:
        if capacity < 1:
            raise ValueError("the nonce table needs room for at least one nonce")
        self.capacity = capacity
        self.floor = float("-inf")
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def advance(self, nonce: str, issued: float, nc: int, expires_before: float) -> str:
        """Record ``nc`` for ``nonce``: "ok", "replay" (not above the last) or "forgotten".

        Entries issued before ``expires_before`` have expired and are pruned first.
        """
        while self._seen:
            oldest_issued = next(iter(self._seen.values()))[0]
            if oldest_issued >= expires_before:
                break
            self._seen.popitem(last=False)
        entry = self._seen.get(nonce)
        if entry is None:
            if issued <= self.floor:
                return "forgotten"
        elif nc <= entry[1]:
            return "replay"
        self._seen[nonce] = (issued, nc)
        self._seen.move_to_end(nonce)
        while len(self._seen) > self.capacity:
            _, (evicted_issued, _) = self._seen.popitem(last=False)
            self.floor = max(self.floor, evicted_issued)
        return "ok"


class DigestChallenger:
    """Issues Digest challenges with address-bound nonces and verifies the answers."""

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_lifetime: float = DEFAULT_NONCE_LIFETIME,
        algorithms: tuple[str, ...] = SUPPORTED_ALGORITHMS,
        *,
        max_nonces: int = DEFAULT_MAX_NONCES,
    ) -> None:
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        unknown = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(f"digest algorithms must be among {SUPPORTED_ALGORITHMS}")
        if nonce_lifetime <= 0:
            raise ValueError("the nonce lifetime must be positive")
        # Offered in this order: RFC 8760 wants SHA-256 first, but some clients (SIPp)
        # take the first challenge and only know MD5.
        self.algorithms = algorithms
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self.counts = NonceCounts(max_nonces)
        self._secret = secret

    # -- nonces --------------------------------------------------------------------------

    def _mac(self, address: str, stamp_and_salt: bytes) -> bytes:
        message = (
            self.realm.encode("utf-8") + b"\0" + address.encode("utf-8") + b"\0" + stamp_and_salt
        )
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def make_nonce(self, now: float, source: Peer) -> str:
        """A fresh nonce for a client at ``source`` (only its IP and transport count)."""
        stamp_and_salt = _TIMESTAMP.pack(now) + secrets.token_bytes(_SALT_BYTES)
        raw = stamp_and_salt + self._mac(address_of(source), stamp_and_salt)
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def nonce_issued_at(self, nonce: str, source: Peer) -> float | None:
        """When we issued ``nonce`` to ``source``'s address; None if we did not."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _TIMESTAMP.size + _SALT_BYTES + _MAC_BYTES:
            return None
        stamp_and_salt, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(address_of(source), stamp_and_salt)):
            return None
        (issued,) = _TIMESTAMP.unpack(stamp_and_salt[: _TIMESTAMP.size])
        return float(issued)

    # -- challenges ----------------------------------------------------------------------

    def challenge(self, now: float, source: Peer, *, stale: bool = False) -> list[str]:
        """Header values for a 401/407: one per algorithm, SHA-256 first (RFC 8760).

        Both values carry the same nonce, bound to ``source``'s IP and transport.
        """
        nonce = self.make_nonce(now, source)
        stale_param = ", stale=true" if stale else ""
        return [
            f"Digest realm={_quote(self.realm)}, nonce={_quote(nonce)}, "
            f'algorithm={algorithm}, qop="auth"{stale_param}'
            for algorithm in self.algorithms
        ]

    def challenge_response(
        self,
        request: SipRequest,
        now: float,
        status: int,
        to_tag: str | None,
        *,
        source: Peer,
        stale: bool = False,
    ) -> SipResponse:
        """A 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) answering ``request``."""
        if status not in (401, 407):
            raise ValueError(f"a digest challenge is a 401 or 407, not {status}")
        response = make_response(request, status, to_tag=to_tag)
        name = challenge_header_name(status)
        for value in self.challenge(now, source, stale=stale):
            response.headers.add(name, value)
        return response

    # -- verification --------------------------------------------------------------------

    def verify(
        self,
        request: SipRequest,
        now: float,
        lookup: CredentialLookup,
        *,
        source: Peer,
        header: str | None = None,
    ) -> AuthResult:
        """Check the request's credentials for our realm, as sent from ``source``.

        ``header`` defaults to Authorization for REGISTER and Proxy-Authorization for every
        other method. ``lookup(username)`` returns the stored HA1s or None. A request that
        passes has its ``nc`` recorded: the same credentials will not pass again.
        """
        if header is None:
            header = "Authorization" if request.method == "REGISTER" else "Proxy-Authorization"
        wanted = header.lower()
        values = [value for name, value in request.headers if name.lower() == wanted]
        if not values:
            return AuthResult(False, None, False, f"no {header} header")
        # A request may carry credentials for several realms; use the one for ours.
        problems: list[str] = []
        for value in values:
            # Checked before parsing: other schemes (Basic) carry a token68, not params.
            scheme = value.strip().split(None, 1)[0] if value.strip() else ""
            if scheme.lower() != "digest":
                problems.append(f"{header} scheme {scheme!r} is not Digest")
                continue
            try:
                _, params = parse_auth_header(value)
            except DigestError as error:
                problems.append(f"malformed {header}: {error}")
                continue
            if params.get("realm") != self.realm:
                problems.append(f"{header} realm {params.get('realm')!r} is not ours")
                continue
            return self._verify_params(request, now, lookup, params, source)
        return AuthResult(False, None, False, "; ".join(problems), failed=True)

    def _verify_params(
        self,
        request: SipRequest,
        now: float,
        lookup: CredentialLookup,
        params: dict[str, str],
        source: Peer,
    ) -> AuthResult:
        username = params.get("username")
        if not username:
            return AuthResult(False, None, False, "credentials have no username", failed=True)

        def deny(reason: str) -> AuthResult:
            return AuthResult(False, username, False, reason, failed=True)

        def stale(reason: str) -> AuthResult:
            return AuthResult(False, username, True, reason)

        for required in ("nonce", "uri", "response"):
            if required not in params:
                return deny(f"credentials have no {required}")
        try:
            base, _ = _split_algorithm(params.get("algorithm"))
        except DigestError as error:
            return deny(str(error))
        qop = params.get("qop")
        nc = 1  # without qop a nonce is good for one request
        if qop is not None:
            qop = qop.lower()
            if qop not in ("auth", "auth-int"):
                return deny(f"unsupported qop {params['qop']!r}")
            nc_text = params.get("nc", "")
            if not params.get("cnonce") or len(nc_text) != 8 or not _is_hex(nc_text):
                return deny("qop needs nc (8 hex digits) and cnonce")
            nc = int(nc_text, 16)
        elif "nc" in params or "cnonce" in params:
            return deny("nc/cnonce given without qop")
        if not _same_uri(params["uri"], request.uri):
            return deny(f"digest uri {params['uri']!r} is not the request-URI {request.uri!r}")
        nonce = params["nonce"]
        issued = self.nonce_issued_at(nonce, source)
        if issued is None:
            return deny("nonce was not issued by us to this address")
        credentials = lookup(username)
        if credentials is None:
            return deny(f"unknown user {username!r}")
        expected = compute_response(
            params.get("algorithm") or "MD5",
            credentials.ha1_for(base),
            method=request.method,
            uri=params["uri"],
            nonce=nonce,
            qop=qop,
            nc=params.get("nc", ""),
            cnonce=params.get("cnonce", ""),
            body=request.body,
        )
        if not hmac.compare_digest(expected.encode(), params["response"].lower().encode()):
            return deny("wrong digest response (bad password?)")
        if not issued - _FUTURE_SLACK <= now < issued + self.nonce_lifetime:
            return stale("nonce expired")
        counted = self.counts.advance(nonce, issued, nc, now - self.nonce_lifetime)
        if counted == "forgotten":
            return stale("nonce count forgotten")
        if counted == "replay":
            return deny(f"nonce count {nc:08x} replayed (not above the last one accepted)")
        return AuthResult(True, username, False, "ok", nonce=nonce, issued=issued, nc=nc)


def credentials_username(request: SipRequest, header: str) -> str | None:
    """The username of the first ``header`` (Authorization or Proxy-Authorization)."""
    value = request.headers.get(header)
    if value is None:
        return None
    try:
        _, params = parse_auth_header(value)
    except DigestError:
        return None
    return params.get("username") or None


def challenge_header_name(status: int) -> str:
    """Proxy-Authenticate for a 407, WWW-Authenticate for a 401."""
    return "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"


def credentials_header_name(status: int) -> str:
    """The header a client answers a 401 (Authorization) or 407 (Proxy-Authorization) with."""
    return "Proxy-Authorization" if status == 407 else "Authorization"


def _is_hex(text: str) -> bool:
    return all(char in "0123456789abcdefABCDEF" for char in text)


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    if digest_uri == request_uri:
        return True
    try:
        return SipUri.parse(digest_uri) == SipUri.parse(request_uri)
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------
# client side


def preferred_challenge(values: list[str]) -> str:
    """Pick the challenge with the strongest algorithm we support (RFC 8760 §2.4)."""
    best: tuple[int, str] | None = None
    for value in values:
        try:
            scheme, params = parse_auth_header(value)
            base, _ = _split_algorithm(params.get("algorithm"))
        except DigestError:
            continue
        if scheme.lower() != "digest":
            continue
        rank = SUPPORTED_ALGORITHMS.index(base)
        if best is None or rank < best[0]:
            best = (rank, value)
    if best is None:
        raise DigestError("no supported Digest challenge")
    return best[1]


def build_authorization(
    challenge_value: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    body: bytes = b"",
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """Answer one challenge value with an Authorization/Proxy-Authorization value."""
    scheme, params = parse_auth_header(challenge_value)
    if scheme.lower() != "digest":
        raise DigestError(f"challenge scheme {scheme!r} is not Digest")
    realm = params.get("realm")
    nonce = params.get("nonce")
    if realm is None or nonce is None:
        raise DigestError("challenge lacks realm or nonce")
    algorithm = params.get("algorithm")
    _split_algorithm(algorithm)
    qop: str | None = None
    if "qop" in params:
        offered = {option.strip().lower() for option in params["qop"].split(",")}
        if "auth" in offered:
            qop = "auth"
        elif "auth-int" in offered:
            qop = "auth-int"
        else:
            raise DigestError(f"no supported qop in {params['qop']!r}")
    nc_text = f"{nc:08x}"
    if qop is not None and cnonce is None:
        cnonce = secrets.token_hex(8)
    ha1 = compute_ha1(algorithm or "MD5", username, realm, password)
    response = compute_response(
        algorithm or "MD5",
        ha1,
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce or "",
        body=body,
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
    ]
    if algorithm is not None:
        parts.append(f"algorithm={algorithm}")
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce or '')}"]
    if "opaque" in params:
        parts.append(f"opaque={_quote(params['opaque'])}")
    return "Digest " + ", ".join(parts)
