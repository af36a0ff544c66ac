"""SIP dialog state (RFC 3261 §12), sans-IO.

A :class:`Dialog` holds what a user agent remembers between requests of one call: the
Call-ID, both tags, both URIs, the CSeq counters, the remote target and the route set. It
builds in-dialog requests (without Via: the sender adds it with a fresh branch) and checks
incoming ones. Both loose routing (the first route has ``;lr``, RFC 3261 §16.12) and strict
routing (RFC 2543 proxies: the first route becomes the Request-URI and the remote target is
appended to Route) are handled.

``local_uri``/``remote_uri`` are the bare URIs of From/To; the display names are kept in
``local_display``/``remote_display`` so requests show the same names. ``route_set`` holds
the Record-Route entries as written (``<sip:proxy;lr>``), in the order this side must use.
``local_contact`` (optional) is the Contact put on target refresh requests.
"""

from __future__ import annotations

from dataclasses import dataclass

from b2bua.message import CSeq, Headers, NameAddr, SipMessage, SipRequest, SipResponse, SipUri

# RFC 3261 §12.2 and the RFCs of UPDATE (3311), SUBSCRIBE/NOTIFY (6665) and REFER (3515).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization")


@dataclass
class Dialog:
    """One side of a SIP dialog: identifiers, CSeq counters, remote target and route set."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    local_seq: int
    remote_seq: int | None
    remote_target: str
    route_set: list[str]
    local_display: str | None = None
    remote_display: str | None = None
    local_contact: str | None = None

    @property
    def id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag), the dialog ID of RFC 3261 §12."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """The dialog a response with a To tag (1xx or 2xx) creates for the request's sender.

        A response without a To tag (an RFC 2543 peer) gives an empty remote tag.
        """
        local = NameAddr.parse(_required(request, "From"))
        remote = NameAddr.parse(_required(response, "To"))
        contact = _contact_uri(response)
        return cls(
            call_id=_required(request, "Call-ID"),
            local_tag=local.tag or "",
            remote_tag=remote.tag or "",
            local_uri=local.uri,
            remote_uri=remote.uri,
            local_seq=CSeq.parse(_required(request, "CSeq")).seq,
            remote_seq=None,
            remote_target=contact if contact is not None else request.uri,
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_display=local.display,
            remote_display=remote.display,
            local_contact=_contact_uri(request),
        )

    @classmethod
    def uas(cls, request: SipRequest, local_tag: str) -> Dialog:
        """The dialog the receiver of ``request`` creates by answering with ``local_tag``.

        ``local_seq`` starts at 0, so the first request this side sends has CSeq 1.
        """
        remote = NameAddr.parse(_required(request, "From"))
        local = NameAddr.parse(_required(request, "To"))
        contact = _contact_uri(request)
        return cls(
            call_id=_required(request, "Call-ID"),
            local_tag=local_tag,
            remote_tag=remote.tag or "",
            local_uri=local.uri,
            remote_uri=remote.uri,
            local_seq=0,
            remote_seq=CSeq.parse(_required(request, "CSeq")).seq,
            remote_target=contact if contact is not None else remote.uri,
            route_set=list(request.headers.get_all("Record-Route")),
            local_display=local.display,
            remote_display=remote.display,
        )

    def new_request(
        self, method: str, body: bytes = b"", content_type: str | None = None
    ) -> SipRequest:
        """An in-dialog request without Via; CSeq increments except for ACK and CANCEL."""
        if method not in ("ACK", "CANCEL"):
            self.local_seq += 1
        return self._request(method, self.local_seq, body, content_type)

    def ack(
        self, invite: SipRequest, body: bytes = b"", content_type: str | None = None
    ) -> SipRequest:
        """The ACK of a 2xx to ``invite`` (RFC 3261 §13.2.2.4): same CSeq number, same
        credentials, routed like any in-dialog request; ``body`` carries a late answer."""
        seq = CSeq.parse(_required(invite, "CSeq")).seq
        ack = self._request("ACK", seq, body, content_type)
        for name in _CREDENTIAL_HEADERS:
            for value in invite.headers.get_all(name):
                ack.headers.add(name, value)
        return ack

    def accept_remote(self, request: SipRequest) -> bool:
        """RFC 3261 §12.2.2 CSeq check; on success remembers the new remote CSeq.

        False means the request is out of order (answer 500). ACK and CANCEL repeat the
        CSeq number of the request they belong to, so they only must not be from the future.
        """
        seq = CSeq.parse(_required(request, "CSeq")).seq
        if request.method in ("ACK", "CANCEL"):
            return self.remote_seq is not None and seq <= self.remote_seq
        if self.remote_seq is not None and seq <= self.remote_seq:
            return False
        self.remote_seq = seq
        return True

    def refresh_target(self, message: SipMessage) -> bool:
        """Take the remote target from the Contact of a target refresh request, or of a 2xx
        answering one (RFC 3261 §12.2). Returns whether the remote target changed."""
        if isinstance(message, SipRequest):
            method = message.method
        else:
            if not 200 <= message.status < 300:
                return False
            cseq = message.headers.get("CSeq")
            if cseq is None:
                return False
            method = CSeq.parse(cseq).method
        if method not in TARGET_REFRESH_METHODS:
            return False
        contact = _contact_uri(message)
        if contact is None or contact == self.remote_target:
            return False
        self.remote_target = contact
        return True

    def _request(self, method: str, seq: int, body: bytes, content_type: str | None) -> SipRequest:
        uri, routes = self._uri_and_routes()
        headers = Headers()
        headers.add("Max-Forwards", "70")
        for route in routes:
            headers.add("Route", route)
        local_params: dict[str, str | None] = {"tag": self.local_tag}
        remote_params: dict[str, str | None] = {"tag": self.remote_tag} if self.remote_tag else {}
        headers.add("From", str(NameAddr(self.local_display, self.local_uri, local_params)))
        headers.add("To", str(NameAddr(self.remote_display, self.remote_uri, remote_params)))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", str(CSeq(seq, method)))
        if self.local_contact is not None and method in TARGET_REFRESH_METHODS:
            headers.add("Contact", f"<{self.local_contact}>")
        if body and content_type is not None:
            headers.add("Content-Type", content_type)
        return SipRequest(method, uri, headers, body)

    def _uri_and_routes(self) -> tuple[str, list[str]]:
        """RFC 3261 §12.2.1.1: Request-URI and Route for loose or strict next hops."""
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0]).uri
        if "lr" in SipUri.parse(first).params:
            return self.remote_target, list(self.route_set)
        # Strict router: it expects itself in the Request-URI, and the real target last.
        return _without_uri_headers(first), [*self.route_set[1:], f"<{self.remote_target}>"]


def _required(message: SipMessage, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise ValueError(f"{name} header missing, cannot build the dialog")
    return value


def _contact_uri(message: SipMessage) -> str | None:
    contacts = message.headers.get_all("Contact")
    if not contacts or contacts[0].strip() == "*":
        return None
    return NameAddr.parse(contacts[0]).uri


def _without_uri_headers(uri: str) -> str:
    """Headers (``?...``) are not allowed in a Request-URI (RFC 3261 §19.1.5)."""
    return uri.split("?", 1)[0]
