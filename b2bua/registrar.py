"""Registrar (RFC 3261 §10.3), sans-IO: one REGISTER in, a response and binding changes out.

The caller authenticates the request (b2bua.digest), loads the user's current bindings,
calls `Registrar.register`, applies the returned changes to the store and sends the
response. Times (``now``, ``Binding.expires_at``) are on whatever clock the caller uses,
as long as it is the same one throughout.

Contacts per user are capped (``max_contacts``, 10 by default): a REGISTER that would
leave a user with more bindings than that is refused with 403 and a Warning, so one
account cannot collect bindings until its 200 no longer fits a datagram or an INVITE to
it forks to thousands of targets. Refreshing or removing existing bindings is always
allowed, even above the cap (bindings stored before the cap existed).

NAT: each binding records the transport address the REGISTER came from (``received``).
Requests for the user should go to that address (`Binding.destination`), not to the
Contact host, which behind NAT is usually a private address.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass, field

from b2bua.message import (
    CSeq,
    NameAddr,
    SipRequest,
    SipResponse,
    SipUri,
    generate_tag,
    make_response,
)
from b2bua.peer import Peer

DEFAULT_EXPIRES = 3600
MIN_EXPIRES = 60
MAX_EXPIRES = 3600
DEFAULT_MAX_CONTACTS = 10
# RFC 3261 §20.43: 399 is "Miscellaneous warning"; the agent names who says it.
WARN_AGENT = "callrec"


@dataclass(frozen=True)
class Binding:
    """One registered contact of a user, as the store keeps it."""

    contact: str  # the Contact URI, without header parameters
    expires_at: float
    call_id: str
    cseq: int
    received: str  # source of the REGISTER, `format_received(peer)`

    def destination(self) -> Peer:
        """Where to send requests for this binding: the REGISTER's source address."""
        return parse_received(self.received)


@dataclass(frozen=True)
class Upsert:
    """Create or refresh the binding for ``contact``."""

    contact: str
    expires_at: float
    call_id: str
    cseq: int
    received: str


@dataclass(frozen=True)
class Remove:
    """Delete the binding for ``contact``."""

    contact: str


@dataclass(frozen=True)
class RemoveAll:
    """Delete every binding of the user (Contact: * with Expires: 0)."""


BindingChange = Upsert | Remove | RemoveAll


@dataclass
class RegisterOutcome:
    """The response to send and the binding changes to apply (none unless it is a 200)."""

    response: SipResponse
    changes: list[BindingChange] = field(default_factory=list)
    bindings: list[Binding] = field(default_factory=list)  # current ones after the changes


def format_received(peer: Peer) -> str:
    """A Peer as stored in `Binding.received`: ``host:port;transport=udp``."""
    return str(peer)


def parse_received(text: str) -> Peer:
    """Inverse of `format_received`; raises ValueError on anything else."""
    address, _, transport_param = text.partition(";transport=")
    if address.startswith("["):
        host, bracket, port_text = address[1:].partition("]:")
        if not bracket:
            raise ValueError(f"bad received address {text!r}")
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            raise ValueError(f"bad received address {text!r}")
    if not host or not port_text.isdigit():
        raise ValueError(f"bad received address {text!r}")
    return Peer(host, int(port_text), transport_param or "udp")


class _Reject(Exception):
    def __init__(self, status: int, reason: str | None = None, warning: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.warning = warning


def _same_uri(left: str, right: str) -> bool:
    if left == right:
        return True
    try:
        return SipUri.parse(left) == SipUri.parse(right)
    except ValueError:
        return False


def _parse_delta_seconds(text: str, what: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise _Reject(400, f"Bad {what}")
    return int(text)


class Registrar:
    """Applies RFC 3261 §10.3 to one REGISTER against the user's current bindings."""

    def __init__(
        self,
        *,
        min_expires: int = MIN_EXPIRES,
        max_expires: int = MAX_EXPIRES,
        default_expires: int = DEFAULT_EXPIRES,
        max_contacts: int = DEFAULT_MAX_CONTACTS,
    ) -> None:
        if not 0 < min_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= max_expires")
        if max_contacts < 1:
            raise ValueError("need max_contacts >= 1")
        self.max_contacts = max_contacts
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = min(max(default_expires, min_expires), max_expires)

    def register(
        self,
        request: SipRequest,
        peer: Peer,
        now: float,
        *,
        extension: str,
        allowed_aors: set[str] | frozenset[str] = frozenset(),
        bindings: list[Binding],
        to_tag: str | None = None,
        wall_time: float | None = None,
    ) -> RegisterOutcome:
        """Handle ``request`` (a REGISTER) from ``peer`` for an authenticated user.

        ``extension`` and ``allowed_aors`` are the To usernames this user may register
        (its extension, its devices' usernames). ``wall_time`` (Unix time) feeds the Date
        header; it defaults to ``now``.
        """
        if request.method != "REGISTER":
            raise ValueError(f"the registrar handles REGISTER, not {request.method}")
        tag = to_tag or generate_tag()
        live = [binding for binding in bindings if binding.expires_at > now]
        try:
            changes = self._changes(request, peer, now, extension, allowed_aors, live)
            current = _apply(live, changes)
            if len(current) > self.max_contacts and len(current) > len(live):
                raise _Reject(
                    403,
                    "Too many registrations",
                    f"at most {self.max_contacts} contacts per user; "
                    "remove one (Expires: 0) before adding another",
                )
        except _Reject as rejection:
            response = make_response(request, rejection.status, rejection.reason, to_tag=tag)
            if rejection.status == 423:
                response.headers.set("Min-Expires", str(self.min_expires))
            if rejection.warning is not None:
                response.headers.set("Warning", f'399 {WARN_AGENT} "{rejection.warning}"')
            return RegisterOutcome(response)
        response = make_response(request, 200, to_tag=tag)
        for binding in current:
            remaining = max(1, math.ceil(binding.expires_at - now))
            response.headers.add("Contact", f"<{binding.contact}>;expires={remaining}")
        response.headers.set(
            "Date", email.utils.formatdate(now if wall_time is None else wall_time, usegmt=True)
        )
        return RegisterOutcome(response, changes, current)

    def _changes(
        self,
        request: SipRequest,
        peer: Peer,
        now: float,
        extension: str,
        allowed_aors: set[str] | frozenset[str],
        live: list[Binding],
    ) -> list[BindingChange]:
        headers = request.headers
        to_value = headers.get("To")
        call_id = headers.get("Call-ID")
        cseq_value = headers.get("CSeq")
        if to_value is None or call_id is None or cseq_value is None:
            raise _Reject(400, "Missing To, Call-ID or CSeq")
        try:
            aor = SipUri.parse(NameAddr.parse(to_value).uri)
            cseq = CSeq.parse(cseq_value).seq
        except ValueError:
            raise _Reject(400, "Bad To or CSeq") from None
        if aor.user is None or aor.user not in ({extension} | set(allowed_aors)):
            raise _Reject(403, "Not Your Address-of-Record")

        expires_header = headers.get("Expires")
        header_expires = (
            None if expires_header is None else _parse_delta_seconds(expires_header, "Expires")
        )
        contact_values = [value.strip() for value in headers.get_all("Contact")]
        if not contact_values:
            return []
        if "*" in contact_values:
            if len(contact_values) != 1 or header_expires != 0:
                raise _Reject(400, "Wildcard Contact Needs Expires 0 And No Other Contact")
            for binding in live:
                if binding.call_id == call_id and cseq <= binding.cseq:
                    raise _Reject(500, "Out Of Order CSeq")
            return [RemoveAll()]

        requested: list[tuple[str, int]] = []
        for value in contact_values:
            try:
                contact = NameAddr.parse(value)
                SipUri.parse(contact.uri)
            except ValueError:
                raise _Reject(400, "Bad Contact") from None
            param = contact.params.get("expires")
            if param is not None:
                expires = _parse_delta_seconds(param, "Contact expires")
            elif "expires" in contact.params:
                raise _Reject(400, "Bad Contact expires")
            elif header_expires is not None:
                expires = header_expires
            else:
                expires = self.default_expires
            if 0 < expires < self.min_expires:
                raise _Reject(423)
            requested.append((contact.uri, min(expires, self.max_expires)))

        received = format_received(peer)
        changes: list[BindingChange] = []
        for uri, expires in requested:
            existing = next((b for b in live if _same_uri(b.contact, uri)), None)
            if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                raise _Reject(500, "Out Of Order CSeq")
            if expires == 0:
                if existing is not None:
                    changes.append(Remove(existing.contact))
            else:
                if existing is not None and existing.contact != uri:
                    # Same URI spelt differently: keep one row per contact in the store.
                    changes.append(Remove(existing.contact))
                changes.append(Upsert(uri, now + expires, call_id, cseq, received))
        return changes


def _apply(bindings: list[Binding], changes: list[BindingChange]) -> list[Binding]:
    """The bindings that result from applying ``changes`` in order."""
    current = list(bindings)
    for change in changes:
        if isinstance(change, RemoveAll):
            current = []
        elif isinstance(change, Remove):
            current = [b for b in current if b.contact != change.contact]
        else:
            current = [b for b in current if not _same_uri(b.contact, change.contact)]
            current.append(
                Binding(
                    change.contact,
                    change.expires_at,
                    change.call_id,
                    change.cseq,
                    change.received,
                )
            )
    return current
