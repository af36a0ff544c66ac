"""One call through the B2BUA: leg A (the caller's dialog) and leg B (the callee's).

The call reacts to events handed to it by `b2bua.server` (requests and responses already
parsed and matched to transactions) and asks the server, through `CallServices`, to send
messages. It owns the media session and the call detail record. It never parses bytes.
Leg A is always the calling side (a phone for outbound and internal calls, the trunk for
inbound ones), which is also media leg "a". An internal call (a user calling another
user of the same organisation) has a phone on both legs: neither may assert an identity
to the other, and callrec asserts the caller it authenticated towards the callee.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from b2bua.dialog import Dialog
from b2bua.identity import (
    IDENTITY_HEADERS,
    CallerIdentity,
    clean_display,
    has_control,
    outbound_identity,
)
from b2bua.message import (
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    generate_call_id,
    generate_tag,
    make_response,
)
from b2bua.peer import Peer
from b2bua.sdes import SdesRefused, SrtpNegotiation, strip_crypto
from b2bua.sdp import SdpError, keep_telephone_event, parse_sdp, rewrite_sdp
from b2bua.services import MediaLeg
from b2bua.transaction import make_cancel
from callrec.policy import RecordingMode

log = logging.getLogger("callrec.call")

ResponseHandler = Callable[[SipResponse | None], None]

# Headers that belong to one hop or one dialog and are rebuilt on each leg; everything
# else is passed through unchanged.
LEG_HEADERS = frozenset(
    h.lower()
    for h in (
        "Via",
        "Route",
        "Record-Route",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Length",
        "Proxy-Authorization",
        "Authorization",
        "Proxy-Authenticate",
        "WWW-Authenticate",
        "RSeq",
        "RAck",
        # A trusted proxy's note of where the request came from (b2bua.server): for
        # this hop only, never passed on to the other leg.
        "X-Callrec-Source",
    )
)

SDP_TYPE = "application/sdp"
# Call directions (the CDR's `direction`): from a phone to the trunk, from the trunk to
# a user's phones, and from a user to another user of the same organisation.
OUTBOUND = "outbound"
INBOUND = "inbound"
INTERNAL = "internal"
# DTMF interworking by SIP INFO: the de-facto body of most PBXs and trunks.
DTMF_RELAY_TYPE = "application/dtmf-relay"
DTMF_INFO_DURATION_MS = 160
DTMF_KEYS = frozenset("0123456789*#ABCD")


class CallServices(Protocol):
    """What a call needs from the server around it."""

    def send_request(
        self, request: SipRequest, peer: Peer, on_response: ResponseHandler
    ) -> None: ...

    def send_response(self, response: SipResponse) -> None: ...

    def send_ack(self, ack: SipRequest, peer: Peer) -> None: ...

    def via(self, peer: Peer) -> str: ...

    def contact(self, peer: Peer) -> str: ...

    def media_address(self) -> str: ...

    def call_ended(self, call: Call) -> None: ...

    def register_dialog(self, call: Call, call_id: str, local_tag: str, leg: str) -> None: ...

    def record_cdr(self, call: Call, **fields: object) -> None: ...

    def call_answered(self, call: Call) -> None: ...

    def media_changed(self, call: Call, leg: str, sdp: bytes) -> None: ...

    def info_received(self, call: Call, leg: str, request: SipRequest) -> None: ...


class CallState(enum.Enum):
    """Where the call is in its life."""

    SETUP = "setup"
    EARLY = "early"
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass
class Party:
    """The caller or callee as the CDR shows them."""

    extension: str | None
    name: str | None


@dataclass
class Target:
    """One place to send leg B's INVITE: a trunk URI or a registered device's contact."""

    request_uri: str
    peer: Peer


@dataclass
class Branch:
    """One forked INVITE of leg B."""

    target: Target
    invite: SipRequest
    provisional: bool = False
    cancel_pending: bool = False
    final: int | None = None
    ack: SipRequest | None = None


@dataclass
class PendingInvite:
    """A (re-)INVITE relayed across the call, waiting for its ACK to be relayed."""

    from_leg: str
    late_offer: bool
    ack_for_other: SipRequest | None = None
    other_peer: Peer | None = None
    answered: bool = False


@dataclass(eq=False)
class Call:
    """A call: the caller's dialog (leg A), the forked callee dialogs (leg B), media, CDR."""

    services: CallServices
    invite_a: SipRequest
    peer_a: Peer
    direction: str
    caller: Party
    callee: Party
    media: MediaLeg | None = None
    state: CallState = CallState.SETUP
    a_tag: str = field(default_factory=generate_tag)
    b_call_id: str = field(default_factory=generate_call_id)
    b_tag: str = field(default_factory=generate_tag)
    b_cseq: int = 1
    dialog_a: Dialog | None = None
    # Leg A's own address when a proxy forwarded its INVITE (`peer_a` is the proxy):
    # the host its RTP comes from behind NAT.
    source_a: Peer | None = None
    dialog_b: Dialog | None = None
    peer_b: Peer | None = None
    branches: list[Branch] = field(default_factory=list)
    cancelled: bool = False
    # The RFC 3326 Reason when callrec itself ended the call while it rang.
    cancel_reason: str | None = None
    cdr_id: int | None = None
    # The wall clock the call's times come from; tests hand in a fake one.
    now: Callable[[], float] = time.time
    started_at: float = field(init=False)
    answered_at: float | None = None
    ended_at: float | None = None
    final_status: int | None = None
    pending: PendingInvite | None = None
    on_end: list[Callable[[Call], None]] = field(default_factory=list)
    # The internal user whose recording mode applies, and their leg ("a" or "b").
    owner_ext: str | None = None
    # The legs whose phones' feature code toggles an on-demand recording (both phones of
    # an internal call between on-demand users); empty means `internal_leg` alone.
    feature_code_legs: tuple[str, ...] = ()
    # The organisation of that user: the call, its recording and its settings are its.
    org_id: int | None = None
    internal_leg: str = "a"
    recording_mode: str = RecordingMode.NEVER
    sdp: dict[str, bytes] = field(default_factory=dict)
    # Each leg's SRTP (SDES) keys; the server sets which leg is the trunk and its mode.
    srtp: SrtpNegotiation = field(default_factory=SrtpNegotiation)
    # Set on calls out: who leg B asserts to the trunk (b2bua.identity), not the phone's From.
    identity: CallerIdentity | None = None
    # Keys waiting to go as SIP INFO (send_dtmf_info), one INFO in flight at a time.
    dtmf_queue: list[tuple[str, str, int]] = field(default_factory=list, init=False, repr=False)
    dtmf_in_flight: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.started_at = self.now()

    @property
    def call_id(self) -> str:
        header = self.invite_a.headers.get("Call-ID")
        return header or ""

    # ----------------------------------------------------------------- setup (leg B)
    def start(self, targets: list[Target]) -> None:
        """Send leg B's INVITE to every target (several when a user has many devices)."""
        self.services.register_dialog(self, self.call_id, self.a_tag, "a")
        self.services.register_dialog(self, self.b_call_id, self.b_tag, "b")
        try:
            body = self._sdp_towards("b", self.invite_a.body, learn_from="a", offer=True)
        except SdesRefused as exc:
            log.info("call %s: offer refused: %s", self.call_id, exc.reason)
            self.services.send_response(_refusal(self.invite_a, exc, self.a_tag))
            self.final_status = exc.status
            self._end(disposition="failed")
            return
        for target in targets:
            invite = self._build_b_invite(target, body)
            branch = Branch(target=target, invite=invite)
            self.branches.append(branch)
            self.services.send_request(
                invite, target.peer, functools.partial(self._on_branch_response, branch)
            )
        log.info(
            "call %s: %s %s -> %s, %d target(s)",
            self.call_id,
            self.direction,
            self.caller.extension,
            self.callee.extension,
            len(targets),
        )

    def _build_b_invite(self, target: Target, body: bytes) -> SipRequest:
        source = self.invite_a.headers
        headers = Headers()
        headers.add("Via", self.services.via(target.peer))
        headers.add("Max-Forwards", str(self._max_forwards() - 1))
        from_ = NameAddr.parse(source.get("From") or "")
        from_.params["tag"] = self.b_tag
        from_.display = clean_display(from_.display)
        asserted: list[tuple[str, str]] = []
        if self.identity is not None:
            from_, asserted = outbound_identity(self.identity, source, self.b_tag)
            if self.direction == INTERNAL:
                # A phone is outside the trust domain (RFC 3325 §5): a P-Asserted-Identity
                # would show it the caller that asked for privacy.
                asserted = [(n, v) for n, v in asserted if n.lower() != "p-asserted-identity"]
        to = NameAddr.parse(source.get("To") or "")
        to.params.pop("tag", None)
        to.display = clean_display(to.display)
        headers.add("From", str(from_))
        headers.add("To", str(to))
        headers.add("Call-ID", self.b_call_id)
        headers.add("CSeq", f"{self.b_cseq} INVITE")
        headers.add("Contact", self.services.contact(target.peer))
        _copy_passthrough(source, headers, skip=self._phone_claims("a"))
        for name, value in asserted:
            headers.add(name, value)
        _drop_reliable_provisionals(headers)
        return SipRequest("INVITE", target.request_uri, headers, body)

    def _phone_claims(self, leg: str) -> frozenset[str]:
        """Identity headers that a phone on `leg` may not pass on (b2bua.identity)."""
        if self.direction == INTERNAL:
            return IDENTITY_HEADERS
        phone_leg = "a" if self.direction == OUTBOUND else "b"
        return IDENTITY_HEADERS if leg == phone_leg else frozenset()

    @property
    def watched_legs(self) -> tuple[str, ...]:
        """The legs whose feature code toggles an on-demand recording."""
        return self.feature_code_legs or (self.internal_leg,)

    def _max_forwards(self) -> int:
        value = self.invite_a.headers.get("Max-Forwards")
        return int(value) if value and value.strip().isdigit() else 70

    def _on_branch_response(self, branch: Branch, response: SipResponse | None) -> None:
        if response is None:
            branch.final = 408
            self._maybe_fail()
            return
        status = response.status
        if (
            100 < status < 300
            and response.body
            and branch.ack is None
            and self._srtp_refused(branch, response)
        ):
            return
        if status < 200:
            branch.provisional = True
            if branch.cancel_pending or self.cancelled:
                self._cancel_branch(branch)
                return
            if status > 100 and self.state in (CallState.SETUP, CallState.EARLY):
                self.state = CallState.EARLY
                self._relay_setup_response(response, learn_b=True)
            return
        if status < 300:
            self._on_branch_answered(branch, response)
            return
        branch.final = status
        if self.dialog_b is None:
            self._maybe_fail(response)

    def _srtp_refused(self, branch: Branch, response: SipResponse) -> bool:
        """True if leg B's SDP in `response` is refused for SRTP (no crypto from a trunk
        that must use it): the branch is cancelled (or ACKed and hung up) and the caller
        gets the refusal."""
        try:
            self.srtp.check("b", response.body, offer=not self.invite_a.body)
        except SdesRefused as exc:
            refusal = exc
        else:
            return False
        log.warning("call %s: %s; the call fails", self.call_id, refusal.reason)
        if response.status >= 200:
            dialog = Dialog.uac(branch.invite, response)
            branch.ack = dialog.ack(branch.invite)
            branch.ack.headers.add("Via", self.services.via(branch.target.peer), first=True)
            branch.final = refusal.status
            self.services.send_ack(branch.ack, branch.target.peer)
            self._send_bye(dialog, branch.target.peer)
        else:
            branch.provisional = True
        if self.dialog_b is None and self.state in (CallState.SETUP, CallState.EARLY):
            for other in self.branches:
                self._cancel_branch(other)  # this one too, unless it was answered
            if not self.cancelled:
                self.services.send_response(_refusal(self.invite_a, refusal, self.a_tag))
            self.final_status = refusal.status
            self._end(disposition="failed")
        return True

    def _on_branch_answered(self, branch: Branch, response: SipResponse) -> None:
        if branch.ack is not None:
            # A retransmitted 2xx: our ACK was lost.
            self.services.send_ack(branch.ack, branch.target.peer)
            return
        dialog = Dialog.uac(branch.invite, response)
        ack = dialog.ack(branch.invite)
        ack.headers.add("Via", self.services.via(branch.target.peer), first=True)
        winner = self.dialog_b is None and not self.cancelled and self.state != CallState.ENDED
        if not winner:
            # A second fork answered, or the caller cancelled meanwhile: accept and hang up.
            branch.ack = ack
            branch.final = response.status
            self.services.send_ack(ack, branch.target.peer)
            self._send_bye(dialog, branch.target.peer)
            return
        branch.final = response.status
        self.dialog_b = dialog
        self.peer_b = branch.target.peer
        for other in self.branches:
            if other is not branch and other.final is None:
                self._cancel_branch(other)
        late_offer = not self.invite_a.body
        if late_offer:
            # The offer is in this 2xx; the answer comes in the caller's ACK.
            self.pending = PendingInvite("a", late_offer=True, other_peer=branch.target.peer)
            self.pending.ack_for_other = ack
        else:
            branch.ack = ack
            self.services.send_ack(ack, branch.target.peer)
        self.state = CallState.CONFIRMED
        if self.media is not None:
            self.media.mark_media_started()
        self.answered_at = self.now()
        self.final_status = response.status
        self.services.record_cdr(self, answered_at=self.answered_at, sip_status=response.status)
        self._relay_setup_response(response, learn_b=True)
        self.dialog_a = Dialog.uas(self.invite_a, self.a_tag)
        self.services.call_answered(self)
        log.info("call %s: answered %d", self.call_id, response.status)

    def _relay_setup_response(self, response: SipResponse, *, learn_b: bool) -> None:
        body = response.body
        if body and learn_b:
            body = self._sdp_towards("a", body, learn_from="b", offer=not self.invite_a.body)
        a_response = make_response(
            self.invite_a, response.status, response.reason, to_tag=self.a_tag
        )
        _copy_passthrough(response.headers, a_response.headers, skip=self._phone_claims("b"))
        # RFC 3261 12.1.1: a response that makes a dialog carries the INVITE's
        # Record-Route, so leg A's later requests pass the proxies that asked to stay in.
        for route in self.invite_a.headers.get_all("Record-Route"):
            a_response.headers.add("Record-Route", route)
        if response.status < 300:
            a_response.headers.set("Contact", self.services.contact(self.peer_a))
        a_response.body = body
        self.services.send_response(a_response)

    def _maybe_fail(self, response: SipResponse | None = None) -> None:
        if self.dialog_b is not None or self.state == CallState.ENDED:
            return
        if any(b.final is None for b in self.branches):
            return
        best = _best_failure([b.final or 500 for b in self.branches])
        if not self.cancelled:
            if response is not None and response.status == best:
                self._relay_setup_response(response, learn_b=False)
            else:
                self._answer_a_invite(best)
        self.final_status = best
        self._end(disposition=_disposition(best, self.cancelled))

    def _answer_a_invite(self, status: int, reason: str | None = None) -> None:
        self.services.send_response(make_response(self.invite_a, status, reason, to_tag=self.a_tag))

    def _cancel_branch(self, branch: Branch) -> None:
        if branch.final is not None:
            return
        if not branch.provisional:
            # RFC 3261 9.1: a CANCEL may only follow a provisional response.
            branch.cancel_pending = True
            return
        branch.cancel_pending = False
        cancel = make_cancel(branch.invite)
        if self.cancel_reason is not None:
            cancel.headers.set("Reason", self.cancel_reason)  # RFC 3326 allows it in CANCEL
        self.services.send_request(cancel, branch.target.peer, lambda _resp: None)

    # ----------------------------------------------------------------- leg A events
    def on_cancel(self, reason: str | None = None) -> None:
        """The caller cancelled before the call was answered, or callrec ended the call
        while it rang (`reason`: an RFC 3326 Reason value for the CANCELs to leg B and,
        as RFC 6432 allows, the 487 to leg A)."""
        if self.dialog_b is not None or self.state == CallState.ENDED:
            return
        self.cancelled = True
        self.cancel_reason = reason
        if reason is None:
            self._answer_a_invite(487)
        else:
            response = make_response(self.invite_a, 487, to_tag=self.a_tag)
            response.headers.set("Reason", reason)
            self.services.send_response(response)
        for branch in self.branches:
            self._cancel_branch(branch)
        self.final_status = 487
        self._end(disposition="cancelled")

    def on_request(self, request: SipRequest, leg: str) -> None:
        """An in-dialog request (not ACK) arrived on `leg`."""
        dialog = self.dialog_a if leg == "a" else self.dialog_b
        if dialog is None or self.state == CallState.ENDED:
            self.services.send_response(make_response(request, 481))
            return
        if not dialog.accept_remote(request):
            self.services.send_response(make_response(request, 500, "CSeq Out Of Order"))
            return
        if request.method == "BYE":
            self.services.send_response(make_response(request, 200))
            other = self._other(leg)
            if other is not None:
                self._send_bye(other[0], other[1], reason_from=request)
            self._end(disposition="answered", ended_by=leg)
            return
        other = self._other(leg)
        if other is None:
            self.services.send_response(make_response(request, 481))
            return
        if request.method in ("INVITE", "UPDATE"):
            dialog.refresh_target(request)
        if request.method == "INFO":
            self.services.info_received(self, leg, request)
        self._forward_in_dialog(request, leg, other[0], other[1])

    def _forward_in_dialog(
        self, request: SipRequest, leg: str, other_dialog: Dialog, other_peer: Peer
    ) -> None:
        other_leg = "b" if leg == "a" else "a"
        body = request.body
        if body and _is_sdp(request.headers):
            try:
                body = self._sdp_towards(other_leg, body, learn_from=leg, offer=True)
            except SdesRefused as exc:
                log.info("call %s: leg %s's offer refused: %s", self.call_id, leg, exc.reason)
                self.services.send_response(_refusal(request, exc))
                return
        content_type = request.headers.get("Content-Type") if body else None
        forwarded = other_dialog.new_request(request.method, body, content_type)
        forwarded.headers.add("Via", self.services.via(other_peer), first=True)
        forwarded.headers.set("Max-Forwards", "70")
        if request.method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            forwarded.headers.set("Contact", self.services.contact(other_peer))
        _copy_passthrough(
            request.headers, forwarded.headers, skip=("Content-Type", *self._phone_claims(leg))
        )
        if request.method == "INVITE":
            self.pending = PendingInvite(leg, late_offer=not request.body, other_peer=other_peer)

        def relay(response: SipResponse | None) -> None:
            self._relay_in_dialog_response(request, forwarded, response, leg, other_dialog)

        self.services.send_request(forwarded, other_peer, relay)

    def _relay_in_dialog_response(
        self,
        original: SipRequest,
        forwarded: SipRequest,
        response: SipResponse | None,
        leg: str,
        other_dialog: Dialog,
    ) -> None:
        if response is None:
            self.services.send_response(make_response(original, 408))
            return
        if response.status == 100:
            return
        other_leg = "b" if leg == "a" else "a"
        body = response.body
        if body and _is_sdp(response.headers):
            try:
                body = self._sdp_towards(leg, body, learn_from=other_leg, offer=not original.body)
            except SdesRefused as exc:
                self._end_refused(exc, original, forwarded, response, other_dialog, other_leg)
                return
        relayed = make_response(original, response.status, response.reason)
        _copy_passthrough(response.headers, relayed.headers, skip=self._phone_claims(other_leg))
        if 200 <= response.status < 300 and original.method in ("INVITE", "UPDATE"):
            relayed.headers.set("Contact", self.services.contact(self._peer(leg)))
            other_dialog.refresh_target(response)
        relayed.body = body
        if original.method == "INVITE" and 200 <= response.status < 300:
            pending = self.pending
            ack = other_dialog.ack(forwarded)
            ack.headers.add("Via", self.services.via(self._peer(other_leg)), first=True)
            if pending is not None and pending.late_offer and not pending.answered:
                pending.ack_for_other = ack
            else:
                self.services.send_ack(ack, self._peer(other_leg))
            if pending is not None:
                pending.answered = True
        self.services.send_response(relayed)

    def _end_refused(
        self,
        exc: SdesRefused,
        original: SipRequest,
        forwarded: SipRequest,
        response: SipResponse,
        other_dialog: Dialog,
        other_leg: str,
    ) -> None:
        """A re-INVITE's answer was refused for SRTP: complete it on both sides and end
        the call (its media would go in the clear)."""
        log.warning("call %s: %s; ending the call", self.call_id, exc.reason)
        if original.method == "INVITE" and 200 <= response.status < 300:
            ack = other_dialog.ack(forwarded)
            ack.headers.add("Via", self.services.via(self._peer(other_leg)), first=True)
            self.services.send_ack(ack, self._peer(other_leg))
        self.pending = None
        self.services.send_response(_refusal(original, exc))
        self.hang_up(reason=f'SIP ;cause={exc.status} ;text="{exc.reason}"')

    def on_ack(self, request: SipRequest, leg: str) -> None:
        """The ACK for a 2xx we relayed: forward a late-offer answer if one is awaited."""
        pending = self.pending
        if pending is None or pending.ack_for_other is None or pending.from_leg != leg:
            return
        ack = pending.ack_for_other
        if request.body:
            other_leg = "b" if leg == "a" else "a"
            try:
                ack.body = self._sdp_towards(other_leg, request.body, learn_from=leg, offer=False)
            except SdesRefused as exc:
                log.warning("call %s: %s; ending the call", self.call_id, exc.reason)
                ack.body = b""
                self.hang_up(reason=f'SIP ;cause={exc.status} ;text="{exc.reason}"')
            content_type = request.headers.get("Content-Type")
            if content_type:
                ack.headers.set("Content-Type", content_type)
        assert pending.other_peer is not None
        self.services.send_ack(ack, pending.other_peer)
        for branch in self.branches:
            if branch.final is not None and 200 <= branch.final < 300 and branch.ack is None:
                branch.ack = ack
        self.pending = None

    def on_ack_timeout(self) -> None:
        """Our 2xx to the caller was never acknowledged: tear the call down."""
        if self.state == CallState.ENDED:
            return
        log.warning("call %s: no ACK for 2xx, hanging up", self.call_id)
        self._bye_both_legs()
        self._end(disposition="failed")

    def hang_up(self, reason: str | None = None) -> None:
        """End the call from our side (shutdown, media timeout, operator); `reason` is
        an RFC 3326 Reason header value for the BYEs."""
        if self.state == CallState.ENDED:
            return
        if self.state != CallState.CONFIRMED:
            self.on_cancel(reason)
            return
        self._bye_both_legs(reason)
        self._end(disposition="answered")

    def send_dtmf_info(self, leg: str, digit: str, duration: int = DTMF_INFO_DURATION_MS) -> bool:
        """Send key `digit` to `leg` as SIP INFO (`application/dtmf-relay`, `Signal=` and
        `Duration=` in ms): DTMF interworking for a far end whose SDP has no
        telephone-event. INFOs go one at a time, in order (the next once the last is
        answered, RFC 6086 keeps no order otherwise); a refused INFO is logged and the
        next one goes. False if the call is not answered or `digit` is not a key."""
        if digit not in DTMF_KEYS or len(digit) != 1 or leg not in ("a", "b"):
            log.warning("call %s: %r to leg %s is not a DTMF key", self.call_id, digit, leg)
            return False
        if self.state != CallState.CONFIRMED or self._other("b" if leg == "a" else "a") is None:
            return False
        self.dtmf_queue.append((leg, digit, max(1, int(duration))))
        if not self.dtmf_in_flight:
            self._send_next_dtmf_info()
        return True

    def _send_next_dtmf_info(self) -> None:
        if not self.dtmf_queue or self.state != CallState.CONFIRMED:
            self.dtmf_queue.clear()
            self.dtmf_in_flight = False
            return
        leg, digit, duration = self.dtmf_queue.pop(0)
        target = self._other("b" if leg == "a" else "a")
        if target is None:
            self.dtmf_in_flight = False
            return
        dialog, peer = target
        body = f"Signal={digit}\r\nDuration={duration}\r\n".encode("ascii")
        info = dialog.new_request("INFO", body, DTMF_RELAY_TYPE)
        info.headers.add("Via", self.services.via(peer), first=True)
        info.headers.set("Max-Forwards", "70")
        self.dtmf_in_flight = True

        def answered(response: SipResponse | None) -> None:
            if response is not None and response.status < 200:
                return
            if response is None or response.status >= 300:
                status = "no answer" if response is None else str(response.status)
                log.warning(
                    "call %s: INFO with key %s to leg %s refused (%s)",
                    self.call_id,
                    digit,
                    leg,
                    status,
                )
            self._send_next_dtmf_info()

        self.services.send_request(info, peer, answered)

    def on_hold(self) -> bool:
        """True when either leg's last SDP holds the audio (not sendrecv, port 0 or a
        0.0.0.0 / :: address): such a call may carry no RTP for a long time."""
        for body in self.sdp.values():
            try:
                sdp = parse_sdp(body)
            except SdpError:
                continue
            audio = next((m for m in sdp.media if m.kind == "audio" and m.port != 0), None)
            if audio is None:
                return True
            host = audio.connection or sdp.connection or ""
            if audio.direction != "sendrecv" or host in ("0.0.0.0", "::"):
                return True
        return False

    # ----------------------------------------------------------------- helpers
    def _other(self, leg: str) -> tuple[Dialog, Peer] | None:
        if leg == "a":
            if self.dialog_b is None or self.peer_b is None:
                return None
            return self.dialog_b, self.peer_b
        if self.dialog_a is None:
            return None
        return self.dialog_a, self.peer_a

    def _peer(self, leg: str) -> Peer:
        if leg == "a":
            return self.peer_a
        assert self.peer_b is not None
        return self.peer_b

    def _bye_both_legs(self, reason: str | None = None) -> None:
        if self.dialog_a is not None:
            self._send_bye(self.dialog_a, self.peer_a, reason=reason)
        if self.dialog_b is not None and self.peer_b is not None:
            self._send_bye(self.dialog_b, self.peer_b, reason=reason)

    def _send_bye(
        self,
        dialog: Dialog,
        peer: Peer,
        reason_from: SipRequest | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        bye = dialog.new_request("BYE")
        bye.headers.add("Via", self.services.via(peer), first=True)
        bye.headers.set("Max-Forwards", "70")
        if reason_from is not None:
            _copy_passthrough(reason_from.headers, bye.headers)
        if reason is not None:
            bye.headers.set("Reason", reason)
        self.services.send_request(bye, peer, lambda _resp: None)

    def _sdp_towards(self, leg: str, body: bytes, *, learn_from: str, offer: bool) -> bytes:
        """Learn `learn_from`'s media address from its SDP; rewrite it to our `leg` port.

        The SDP sent to leg X names the relay port of leg X, where X's phone must send,
        and carries callrec's own SRTP keys for X, never the other leg's (`offer` says
        whether `body` is an offer or an answer). Raises `SdesRefused`.
        """
        if not body or self.media is None:
            return body
        try:
            sdp = parse_sdp(body)
        except SdpError as exc:
            log.warning("call %s: unparsable SDP passed on without keys: %s", self.call_id, exc)
            return strip_crypto(body)
        if offer:
            secured = self.srtp.offer(learn_from, body)
        else:
            secured, changes = self.srtp.answer(learn_from, body)
            for change in changes:
                # Before the address: the leg's first packets must meet its keys.
                self.media.set_crypto(change.leg, change.receive, change.send)
                log.info(
                    "call %s: leg %s media %s",
                    self.call_id,
                    change.leg,
                    f"SRTP {change.send.suite}" if change.send is not None else "plain RTP",
                )
        self.sdp[learn_from] = strip_crypto(body)
        if not offer and self._keeps_telephone_event(leg):
            # The phone keeps RFC 4733 for the feature code, whatever the far end answered.
            secured = keep_telephone_event(self.sdp[leg], secured)
        if self.state == CallState.CONFIRMED:
            self.services.media_changed(self, learn_from, self.sdp[learn_from])
        ports: list[int] = []
        anchored = False
        for media in sdp.media:
            if not anchored and media.kind == "audio" and media.port != 0:
                anchored = True
                host = media.connection or sdp.connection or "0.0.0.0"
                port = media.port
                if media.direction == "inactive":
                    port = 0
                try:
                    self.media.set_remote(
                        learn_from,
                        host,
                        port,
                        relatch=True,
                        signalled_from=self._signalling_host(learn_from),
                    )
                except ValueError as exc:
                    log.warning("call %s: leg %s media address: %s", self.call_id, learn_from, exc)
                ports.append(self.media.local_port(leg))
            else:
                # Only the first audio stream is relayed and recorded; others are declined.
                ports.append(0)
        return rewrite_sdp(secured, self.services.media_address(), ports)

    def _keeps_telephone_event(self, leg: str) -> bool:
        """True if an answer towards `leg` keeps the telephone-event `leg` offered: `leg`
        is an on-demand user's phone, whose keys callrec must see for the feature code
        (the media side drops the events a far end did not ask for)."""
        return (
            leg in self.watched_legs
            and self.recording_mode == RecordingMode.ON_DEMAND
            and leg in self.sdp
        )

    def _signalling_host(self, leg: str) -> str | None:
        """The host `leg`'s SIP comes from (the relay accepts its media from there when
        its SDP names a private address); None while a forked leg B is undecided."""
        if leg == "a":
            return (self.source_a or self.peer_a).host
        if self.peer_b is not None:
            return self.peer_b.host
        return self.branches[0].target.peer.host if len(self.branches) == 1 else None

    def _end(self, *, disposition: str, ended_by: str | None = None) -> None:
        if self.state == CallState.ENDED:
            return
        self.state = CallState.ENDED
        self.ended_at = self.now()
        if self.media is not None:
            self.media.close()
        self.services.record_cdr(
            self,
            ended_at=self.ended_at,
            disposition=disposition,
            sip_status=self.final_status,
        )
        log.info(
            "call %s: ended (%s%s)",
            self.call_id,
            disposition,
            f", bye from leg {ended_by}" if ended_by else "",
        )
        for callback in self.on_end:
            callback(self)
        self.services.call_ended(self)


def _copy_passthrough(source: Headers, target: Headers, skip: Iterable[str] = ()) -> None:
    skipped = LEG_HEADERS | {s.lower() for s in skip}
    for name, value in source:
        # A control character (a bare CR...) could split the header for the next parser.
        if name.lower() not in skipped and not has_control(value):
            target.add(name, value)


def _drop_reliable_provisionals(headers: Headers) -> None:
    # PRACK would need RSeq/RAck renumbering across legs; leg B is offered plain 18x.
    values = [v for v in headers.get_all("Supported") if v.strip().lower() != "100rel"]
    headers.remove("Supported")
    if values:
        headers.add("Supported", ", ".join(values))


def _refusal(request: SipRequest, exc: SdesRefused, to_tag: str | None = None) -> SipResponse:
    """The answer refusing `request` for an SRTP reason, the reason in a Warning."""
    response = make_response(request, exc.status, to_tag=to_tag)
    response.headers.set("Warning", f'399 callrec "{exc.reason}"')
    return response


def _is_sdp(headers: Headers) -> bool:
    content_type = headers.get("Content-Type") or ""
    return content_type.split(";")[0].strip().lower() == SDP_TYPE


def _best_failure(statuses: list[int]) -> int:
    """RFC 3261 16.7: a 6xx wins; otherwise the lowest class, preferring 486 among 4xx."""
    six = [s for s in statuses if 600 <= s < 700]
    if six:
        return six[0]
    if 486 in statuses:
        return 486
    return min(statuses)


def _disposition(status: int, cancelled: bool) -> str:
    if cancelled or status == 487:
        return "cancelled"
    if status in (486, 600, 603):
        return "busy"
    if status in (408, 480):
        return "no-answer"
    return "failed"


def trunk_target(trunk_uri: str, dialed_user: str | None, peer: Peer) -> Target:
    """The trunk URI with the dialled number as its user part."""
    from b2bua.message import SipUri

    uri = SipUri.parse(trunk_uri)
    if dialed_user:
        uri = replace(uri, user=dialed_user)
    return Target(request_uri=str(uri), peer=peer)
