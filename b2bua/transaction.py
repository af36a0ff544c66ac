"""SIP transactions: RFC 3261 §17 with the RFC 6026 Accepted state (sans-IO).

The :class:`TransactionLayer` takes parsed messages plus ``now`` and returns events; it never
touches a socket or a clock. The caller sends every :class:`SendMessage`, hands every other
event to the transaction user (TU: dialogs and calls), and calls :meth:`TransactionLayer.poll`
at :meth:`TransactionLayer.next_deadline`.

Choices the RFCs leave open, and the B2BUA's needs:

* Responses of a server transaction go to the :class:`Peer` the request came from (the
  source address, as with ``rport``; for TCP that is the connection the request used).
* A server INVITE transaction sends ``100 Trying`` by itself when the TU has not sent a
  provisional or final response within 200 ms (the event comes out of :meth:`poll`), or at
  once when the INVITE is retransmitted before that.
* A 2xx to an INVITE is retransmitted by the server transaction (interval T1, doubling up
  to T2) until its ACK arrives, on every transport, because RFC 3261 §13.3.1.4 makes 2xx
  retransmission end to end and independent of the transport of this hop. The ACK of a
  2xx has its own branch: it is matched by Call-ID, From tag and CSeq number, passed up
  as :class:`RequestReceived`, and it stops the retransmissions. Without an ACK within
  64*T1 the TU gets ``TransactionTimeout(timer="L")`` and should send a BYE.
* Every other retransmission timer (A, E, G) is off on reliable transports, and Timers
  D, I, J and K are zero there.
* A non-2xx final response to an INVITE (a 407 challenge, a 486...) is retransmitted by
  Timer G only if a provisional response went out before it. Without one, the client
  transaction is still in Calling and retransmits the INVITE itself (Timer A), and each
  retransmission is answered with the same stored response, so a lost response is still
  recovered. This departs from RFC 3261 §17.2.1 on purpose: an INVITE answered at once
  (the usual challenge) costs one response per request received, however many requests
  a flood sends from a spoofed source and however long it leaves them unacknowledged;
  and a client that has already moved on (re-sent the INVITE with credentials) gets no
  stray copy of the challenge. With a provisional sent, Timer G runs as the RFC says
  (at most 10 copies in the 32 s of Timer H at T1 = 0.5 s, T2 = 4 s) until the ACK, which
  matches the transaction and stops it.
* A server INVITE transaction remembers when its request arrived (``received_at``);
  :meth:`TransactionLayer.invite_pending` tells the TU whether the caller may still be
  waiting for its final response (the transaction lives and has sent none), so a set-up
  that had to wait (a directory lookup) can check before it forwards anything.
* The TU answers a CANCEL in its own server transaction and uses
  :meth:`TransactionLayer.find_invite_server_transaction` to find the INVITE it cancels
  (``B2bua._on_cancel``). :func:`make_cancel` builds a CANCEL for a client INVITE
  (``Call`` cancelling a forked branch).
* Requests whose top Via branch lacks the ``z9hG4bK`` cookie (RFC 2543 peers) are matched
  on Call-ID, From tag, CSeq number, top Via sent-by and method, which also matches their
  ACK and CANCEL to the INVITE.
* A response that matches no client transaction, and a message without a usable top Via
  or CSeq, is dropped and counted in :attr:`TransactionLayer.dropped`. An ACK that matches
  nothing is passed up (it is usually a retransmitted ACK of a 2xx; the dialog ignores it).
* A transaction is forgotten as soon as it terminates.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from enum import Enum

from b2bua.message import (
    CSeq,
    Headers,
    NameAddr,
    SipMessage,
    SipRequest,
    SipResponse,
    Via,
    make_response,
)
from b2bua.peer import Peer

MAGIC_COOKIE = "z9hG4bK"
TIMER_D_UNRELIABLE = 32.0  # RFC 3261 §17.1.1.2: "at least 32 seconds", whatever T1 is
TRYING_DELAY = 0.2  # RFC 3261 §17.2.1: 100 Trying if the TU has not answered in 200 ms


@dataclass(frozen=True)
class SendMessage:
    """Send ``message`` to ``peer``."""

    message: SipMessage
    peer: Peer


@dataclass(frozen=True)
class RequestReceived:
    """A request that created a server transaction, or an ACK of a 2xx, for the TU."""

    request: SipRequest
    peer: Peer


@dataclass(frozen=True)
class ResponseReceived:
    """A response of a client transaction for the TU; ``request`` is the one it answers."""

    response: SipResponse
    request: SipRequest


@dataclass(frozen=True)
class TransactionTimeout:
    """A transaction gave up on ``request``.

    ``timer`` says which: "B"/"F" (client: no final response, treat as 408), "transport"
    (client: the peer could not be reached, treat as 503), "H" (server: no ACK for a
    non-2xx final) or "L" (server: no ACK for a 2xx; the TU should send BYE).
    """

    request: SipRequest
    timer: str = ""


Event = SendMessage | RequestReceived | ResponseReceived | TransactionTimeout
TransactionKey = tuple[object, ...]


class TransactionError(Exception):
    """The TU used the transaction layer wrongly, e.g. answered a request it never got."""


class State(Enum):
    """Transaction states of RFC 3261 §17 and RFC 6026 (each kind uses a subset)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class _Transaction:
    """Common part: the request, the peer, timers and the layer's timer heap."""

    def __init__(
        self,
        layer: TransactionLayer,
        key: TransactionKey,
        request: SipRequest,
        peer: Peer,
        state: State,
    ) -> None:
        self.layer = layer
        self.key = key
        self.request = request
        self.peer = peer
        self.state = state
        self.timers: dict[str, float] = {}
        self.intervals: dict[str, float] = {}

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def start_timer(self, name: str, at: float) -> None:
        self.timers[name] = at
        self.layer._schedule(at, self, name)

    def stop_timer(self, *names: str) -> None:
        for name in names:
            self.timers.pop(name, None)

    def start_retransmit_timer(self, name: str, now: float, interval: float) -> None:
        self.intervals[name] = interval
        self.start_timer(name, now + interval)

    def doubled_interval(self, name: str, cap: float | None) -> float:
        interval = self.intervals[name] * 2
        return interval if cap is None else min(interval, cap)

    def wait_then_terminate(self, name: str, duration: float, now: float) -> None:
        """Linger in the current state for ``duration`` (zero on reliable transports)."""
        if duration > 0:
            self.start_timer(name, now + duration)
        else:
            self.terminate()

    def terminate(self) -> None:
        self.state = State.TERMINATED
        self.timers.clear()

    def on_timer(self, name: str, now: float) -> list[Event]:
        raise NotImplementedError


class _ClientInvite(_Transaction):
    """RFC 3261 §17.1.1 with RFC 6026: Calling, Proceeding, Completed, Accepted."""

    ack: SipRequest | None = None

    def start(self, now: float) -> list[Event]:
        if not self.peer.reliable:
            self.start_retransmit_timer("A", now, self.layer.t1)
        self.start_timer("B", now + 64 * self.layer.t1)
        return [SendMessage(self.request, self.peer)]

    def on_response(self, response: SipResponse, now: float) -> list[Event]:
        status = response.status
        if self.state in (State.CALLING, State.PROCEEDING):
            self.stop_timer("A", "B")
            if status < 200:
                self.state = State.PROCEEDING
            elif status < 300:
                self.state = State.ACCEPTED
                self.start_timer("M", now + 64 * self.layer.t1)
            else:
                self.state = State.COMPLETED
                ack = self.ack = _ack_for_non_2xx(self.request, response)
                duration = 0.0 if self.peer.reliable else TIMER_D_UNRELIABLE
                self.wait_then_terminate("D", duration, now)
                return [SendMessage(ack, self.peer), ResponseReceived(response, self.request)]
            return [ResponseReceived(response, self.request)]
        if self.state is State.ACCEPTED and 200 <= status < 300:
            # Each 2xx (retransmitted, or from another fork) needs the TU's ACK.
            return [ResponseReceived(response, self.request)]
        if self.state is State.COMPLETED and status >= 300 and self.ack is not None:
            return [SendMessage(self.ack, self.peer)]
        return []

    def on_timer(self, name: str, now: float) -> list[Event]:
        if name == "A" and self.state is State.CALLING:
            # Timer A doubles without the T2 cap (RFC 3261 §17.1.1.2).
            self.start_retransmit_timer("A", now, self.doubled_interval("A", cap=None))
            return [SendMessage(self.request, self.peer)]
        if name == "B" and self.state is State.CALLING:
            self.terminate()
            return [TransactionTimeout(self.request, timer="B")]
        if name in ("D", "M"):
            self.terminate()
        return []


class _ClientNonInvite(_Transaction):
    """RFC 3261 §17.1.2: Trying, Proceeding, Completed."""

    def start(self, now: float) -> list[Event]:
        if not self.peer.reliable:
            self.start_retransmit_timer("E", now, self.layer.t1)
        self.start_timer("F", now + 64 * self.layer.t1)
        return [SendMessage(self.request, self.peer)]

    def on_response(self, response: SipResponse, now: float) -> list[Event]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self.stop_timer("E", "F")
            duration = 0.0 if self.peer.reliable else self.layer.t4
            self.wait_then_terminate("K", duration, now)
        return [ResponseReceived(response, self.request)]

    def on_timer(self, name: str, now: float) -> list[Event]:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            if self.state is State.PROCEEDING:
                interval = self.layer.t2
            else:
                interval = self.doubled_interval("E", cap=self.layer.t2)
            self.start_retransmit_timer("E", now, interval)
            return [SendMessage(self.request, self.peer)]
        if name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            self.terminate()
            return [TransactionTimeout(self.request, timer="F")]
        if name == "K":
            self.terminate()
        return []


class _ServerInvite(_Transaction):
    """RFC 3261 §17.2.1 with RFC 6026: Proceeding, Completed, Confirmed, Accepted."""

    last_response: SipResponse | None = None
    acked = False
    dialog_key: TransactionKey | None = None
    received_at = 0.0

    def start(self, now: float) -> list[Event]:
        self.received_at = now
        self.start_timer("trying", now + TRYING_DELAY)
        return [RequestReceived(self.request, self.peer)]

    def send(self, response: SipResponse) -> list[Event]:
        self.last_response = response
        return [SendMessage(response, self.peer)]

    def send_response(self, response: SipResponse, now: float) -> list[Event]:
        status = response.status
        if self.state is State.PROCEEDING:
            self.stop_timer("trying")
            if 200 <= status < 300:
                self.state = State.ACCEPTED
                self.start_retransmit_timer("2xx", now, self.layer.t1)
                self.start_timer("L", now + 64 * self.layer.t1)
                self.layer._index_accepted(self)
            elif status >= 300:
                self.state = State.COMPLETED
                # Without a provisional before it, the client still retransmits the INVITE
                # and gets this response again each time (see the module docstring).
                if not self.peer.reliable and self.last_response is not None:
                    self.start_retransmit_timer("G", now, self.layer.t1)
                self.start_timer("H", now + 64 * self.layer.t1)
            return self.send(response)
        if self.state is State.ACCEPTED and 200 <= status < 300:
            # RFC 6026 §7.1: further 2xx from the TU go straight to the transport.
            return self.send(response)
        raise TransactionError(
            f"cannot send {status} for {self.request.method} in state {self.state.value}"
        )

    def on_retransmission(self) -> list[Event]:
        if self.state is State.PROCEEDING:
            if self.last_response is None:
                self.stop_timer("trying")
                return self.send(make_response(self.request, 100, "Trying"))
            return [SendMessage(self.last_response, self.peer)]
        if self.state is State.COMPLETED and self.last_response is not None:
            return [SendMessage(self.last_response, self.peer)]
        return []  # Confirmed and Accepted absorb retransmitted INVITEs (RFC 6026 §7.1)

    def on_ack(self, ack: SipRequest, peer: Peer, now: float) -> list[Event]:
        if self.state is State.COMPLETED:
            self.state = State.CONFIRMED
            self.stop_timer("G", "H")
            duration = 0.0 if self.peer.reliable else self.layer.t4
            self.wait_then_terminate("I", duration, now)
            return []
        if self.state is State.ACCEPTED:
            return self.on_2xx_ack(ack, peer)
        return []

    def on_2xx_ack(self, ack: SipRequest, peer: Peer) -> list[Event]:
        self.acked = True
        self.stop_timer("2xx")
        return [RequestReceived(ack, peer)]

    def on_timer(self, name: str, now: float) -> list[Event]:
        if name == "trying" and self.state is State.PROCEEDING and self.last_response is None:
            return self.send(make_response(self.request, 100, "Trying"))
        if name == "G" and self.state is State.COMPLETED and self.last_response is not None:
            self.start_retransmit_timer("G", now, self.doubled_interval("G", cap=self.layer.t2))
            return [SendMessage(self.last_response, self.peer)]
        if name == "H" and self.state is State.COMPLETED:
            self.terminate()
            return [TransactionTimeout(self.request, timer="H")]
        if name == "I":
            self.terminate()
        if name == "2xx" and self.state is State.ACCEPTED and self.last_response is not None:
            interval = self.doubled_interval("2xx", cap=self.layer.t2)
            self.start_retransmit_timer("2xx", now, interval)
            return [SendMessage(self.last_response, self.peer)]
        if name == "L" and self.state is State.ACCEPTED:
            self.terminate()
            if not self.acked:
                return [TransactionTimeout(self.request, timer="L")]
        return []


class _ServerNonInvite(_Transaction):
    """RFC 3261 §17.2.2: Trying, Proceeding, Completed."""

    last_response: SipResponse | None = None

    def start(self, now: float) -> list[Event]:
        return [RequestReceived(self.request, self.peer)]

    def send_response(self, response: SipResponse, now: float) -> list[Event]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise TransactionError(
                f"cannot send {response.status} for {self.request.method}"
                f" in state {self.state.value}"
            )
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            duration = 0.0 if self.peer.reliable else 64 * self.layer.t1
            self.wait_then_terminate("J", duration, now)
        self.last_response = response
        return [SendMessage(response, self.peer)]

    def on_retransmission(self) -> list[Event]:
        if self.last_response is None:
            return []
        return [SendMessage(self.last_response, self.peer)]

    def on_timer(self, name: str, now: float) -> list[Event]:
        if name == "J":
            self.terminate()
        return []


_ServerTransaction = _ServerInvite | _ServerNonInvite
_ClientTransaction = _ClientInvite | _ClientNonInvite


class TransactionLayer:
    """All client and server transactions of one SIP endpoint, driven by messages and ``now``.

    ``t1``, ``t2`` and ``t4`` are the RFC 3261 timer values in seconds. :attr:`dropped`
    counts messages that matched nothing or could not be matched at all.
    """

    def __init__(self, *, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0) -> None:
        if not 0 < t1 <= t2:
            raise ValueError(f"timers need 0 < T1 <= T2, got T1={t1} T2={t2}")
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.dropped = 0
        self._clients: dict[TransactionKey, _ClientTransaction] = {}
        self._servers: dict[TransactionKey, _ServerTransaction] = {}
        self._accepted: dict[TransactionKey, _ServerInvite] = {}
        self._timers: list[tuple[float, int, _Transaction, str]] = []
        self._timer_order = itertools.count()

    def __len__(self) -> int:
        """Number of live transactions (client and server)."""
        return len(self._clients) + len(self._servers)

    # --- input from the network -------------------------------------------------------

    def receive(self, message: SipMessage, peer: Peer, now: float) -> list[Event]:
        """Feed a message that arrived from ``peer``."""
        if isinstance(message, SipResponse):
            return self._receive_response(message, now)
        return self._receive_request(message, peer, now)

    def _receive_response(self, response: SipResponse, now: float) -> list[Event]:
        key = _client_key(response)
        client = self._clients.get(key) if key is not None else None
        if client is None:
            self.dropped += 1
            return []
        return self._settle(client, client.on_response(response, now))

    def _receive_request(self, request: SipRequest, peer: Peer, now: float) -> list[Event]:
        method = request.method
        key = _server_key(request, "INVITE" if method == "ACK" else method)
        if key is None:
            self.dropped += 1
            return []
        server = self._servers.get(key)
        if method == "ACK":
            if isinstance(server, _ServerInvite):
                return self._settle(server, server.on_ack(request, peer, now))
            accepted = self._accepted.get(_dialog_key(request))
            if accepted is not None:
                return accepted.on_2xx_ack(request, peer)
            return [RequestReceived(request, peer)]
        if server is not None:
            # Answer the retransmission where it came from: a NAT may have rebound.
            server.peer = peer
            return self._settle(server, server.on_retransmission())
        if method == "INVITE":
            server = _ServerInvite(self, key, request, peer, State.PROCEEDING)
        else:
            server = _ServerNonInvite(self, key, request, peer, State.TRYING)
        self._servers[key] = server
        return server.start(now)

    # --- input from the TU ------------------------------------------------------------

    def send_request(self, request: SipRequest, peer: Peer, now: float) -> list[Event]:
        """Start a client transaction; the top Via must already carry a fresh branch.

        An ACK (of a 2xx) is sent without a transaction.
        """
        if request.method == "ACK":
            return [SendMessage(request, peer)]
        key = _client_key(request)
        if key is None:
            raise TransactionError(f"{request.method} needs a top Via with a branch and a CSeq")
        if key in self._clients:
            raise TransactionError(f"a client transaction with key {key!r} already exists")
        client: _ClientTransaction
        if request.method == "INVITE":
            client = _ClientInvite(self, key, request, peer, State.CALLING)
        else:
            client = _ClientNonInvite(self, key, request, peer, State.TRYING)
        self._clients[key] = client
        return self._settle(client, client.start(now))

    def send_response(self, response: SipResponse, now: float) -> list[Event]:
        """Send the TU's response through the server transaction of its request."""
        cseq = _cseq(response)
        key = _server_key(response, cseq.method) if cseq is not None else None
        server = self._servers.get(key) if key is not None else None
        if server is None:
            raise TransactionError(f"no server transaction for response {response.status}")
        return self._settle(server, server.send_response(response, now))

    def transport_failed(self, peer: Peer, now: float) -> list[Event]:
        """The transport could not reach ``peer`` (a TCP or TLS connection that failed to
        open, its handshake or certificate refused): every client transaction towards it
        that has had no response yet ends now (RFC 3261 §17.1.4) with
        ``TransactionTimeout(timer="transport")``, which the TU treats as a 503
        (§8.1.3.1), rather than waiting for Timer B or F."""
        events: list[Event] = []
        for client in list(self._clients.values()):
            if client.peer != peer or client.state not in (State.CALLING, State.TRYING):
                continue
            client.terminate()
            self._settle(client, [])
            events.append(TransactionTimeout(client.request, timer="transport"))
        return events

    def find_invite_server_transaction(self, cancel: SipRequest) -> SipRequest | None:
        """The INVITE that ``cancel`` cancels, while its server transaction lives.

        The TU answers the CANCEL itself (200, or 481 when this returns None) and, if it has
        not sent a final response to the INVITE yet, answers the INVITE with 487.
        """
        key = _server_key(cancel, "INVITE")
        server = self._servers.get(key) if key is not None else None
        return server.request if server is not None else None

    def invite_pending(self, invite: SipRequest) -> float | None:
        """When ``invite`` arrived, while the caller may still be waiting for its final
        response: its server transaction lives and has sent no final response (it may
        have sent 100 Trying). None once it was answered (a 487 after a CANCEL, a
        challenge...) or its transaction is gone."""
        key = _server_key(invite, "INVITE")
        server = self._servers.get(key) if key is not None else None
        if not isinstance(server, _ServerInvite) or server.state is not State.PROCEEDING:
            return None
        return server.received_at

    # --- time -------------------------------------------------------------------------

    def poll(self, now: float) -> list[Event]:
        """Fire every timer due at or before ``now``."""
        events: list[Event] = []
        while self._timers and self._timers[0][0] <= now:
            at, _, transaction, name = heapq.heappop(self._timers)
            if transaction.timers.get(name) != at:
                continue  # stopped or restarted since it was scheduled
            del transaction.timers[name]
            events.extend(self._settle(transaction, transaction.on_timer(name, now)))
        return events

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has something to do next, or None."""
        while self._timers:
            at, _, transaction, name = self._timers[0]
            if transaction.timers.get(name) == at:
                return at
            heapq.heappop(self._timers)
        return None

    # --- internals --------------------------------------------------------------------

    def _schedule(self, at: float, transaction: _Transaction, name: str) -> None:
        heapq.heappush(self._timers, (at, next(self._timer_order), transaction, name))

    def _index_accepted(self, server: _ServerInvite) -> None:
        server.dialog_key = _dialog_key(server.request)
        self._accepted[server.dialog_key] = server

    def _settle(self, transaction: _Transaction, events: list[Event]) -> list[Event]:
        """Forget ``transaction`` once terminated, so memory stays flat."""
        if transaction.terminated:
            if isinstance(transaction, _ClientInvite | _ClientNonInvite):
                self._clients.pop(transaction.key, None)
            else:
                self._servers.pop(transaction.key, None)
                key = transaction.dialog_key if isinstance(transaction, _ServerInvite) else None
                if key is not None and self._accepted.get(key) is transaction:
                    del self._accepted[key]
        return events


# --- matching helpers ---------------------------------------------------------------------


def _top_via(message: SipMessage) -> Via | None:
    values = message.headers.get_all("Via")
    if not values:
        return None
    try:
        return Via.parse(values[0])
    except ValueError:
        return None


def _cseq(message: SipMessage) -> CSeq | None:
    value = message.headers.get("CSeq")
    if value is None:
        return None
    try:
        return CSeq.parse(value)
    except ValueError:
        return None


def _from_tag(message: SipMessage) -> str | None:
    value = message.headers.get("From")
    if value is None:
        return None
    try:
        return NameAddr.parse(value).tag
    except ValueError:
        return None


def _client_key(message: SipMessage) -> TransactionKey | None:
    """RFC 3261 §17.1.3: top Via branch and CSeq method."""
    via = _top_via(message)
    cseq = _cseq(message)
    if via is None or cseq is None or not via.branch:
        return None
    return ("client", via.branch, cseq.method)


def _server_key(message: SipMessage, method: str) -> TransactionKey | None:
    """RFC 3261 §17.2.3: branch, sent-by and method; RFC 2543 peers by dialog fields."""
    via = _top_via(message)
    if via is None:
        return None
    default_port = 5061 if via.transport.upper() == "TLS" else 5060
    sent_by = (via.host.lower(), via.port if via.port is not None else default_port)
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return ("rfc3261", branch, *sent_by, method)
    cseq = _cseq(message)
    if cseq is None:
        return None
    call_id = message.headers.get("Call-ID")
    return ("rfc2543", call_id, _from_tag(message), cseq.seq, *sent_by, method)


def _dialog_key(request: SipRequest) -> TransactionKey:
    """What an INVITE and the ACK of its 2xx share (the ACK has its own branch)."""
    cseq = _cseq(request)
    return (request.headers.get("Call-ID"), _from_tag(request), cseq.seq if cseq else None)


# --- requests built by the transaction layer ----------------------------------------------


def _ack_for_non_2xx(invite: SipRequest, response: SipResponse) -> SipRequest:
    """RFC 3261 §17.1.1.3: same branch, To from the response, the INVITE's Route set."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    headers.add("Max-Forwards", "70")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    _copy(invite.headers, headers, "From")
    _copy(response.headers, headers, "To")
    _copy(invite.headers, headers, "Call-ID")
    cseq = _cseq(invite)
    headers.add("CSeq", str(CSeq(cseq.seq if cseq else 1, "ACK")))
    return SipRequest("ACK", invite.uri, headers)


def make_cancel(invite: SipRequest) -> SipRequest:
    """RFC 3261 §9.1: a CANCEL for ``invite`` (same top Via/branch, To, CSeq number, Route).

    Send it with :meth:`TransactionLayer.send_request` once a provisional response arrived.
    """
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    headers.add("Max-Forwards", "70")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    for name in ("From", "To", "Call-ID"):
        _copy(invite.headers, headers, name)
    cseq = _cseq(invite)
    headers.add("CSeq", str(CSeq(cseq.seq if cseq else 1, "CANCEL")))
    return SipRequest("CANCEL", invite.uri, headers)


def _copy(source: Headers, target: Headers, name: str) -> None:
    value = source.get(name)
    if value is not None:
        target.add(name, value)
