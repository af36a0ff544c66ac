"""The SIP side of callrec: transports, transaction layer, registrar and calls in asyncio.

`B2bua` is the glue between the sans-IO cores (message, transaction, dialog, digest,
registrar, call) and the outside world: sockets, timers, and, through the Protocols of
`b2bua.services`, the directory (users, registrations, CDRs), the media relay and the
recorder. The application (`callrec.app`) builds and wires it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from b2bua.call import (
    INBOUND,
    INTERNAL,
    OUTBOUND,
    Call,
    CallState,
    Party,
    ResponseHandler,
    Target,
    trunk_target,
)
from b2bua.digest import (
    AuthResult,
    DigestChallenger,
    credentials_header_name,
    credentials_username,
)
from b2bua.digest import Credentials as DigestCredentials
from b2bua.identity import CallerIdentity
from b2bua.limits import AuthLimits, Verdict
from b2bua.message import (
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    generate_branch,
    generate_tag,
    make_response,
    parse_message,
)
from b2bua.peer import Peer
from b2bua.registrar import Binding, Registrar, Remove, RemoveAll, Upsert
from b2bua.registrar import parse_received as parse_received_peer
from b2bua.sdes import SrtpNegotiation
from b2bua.services import (
    AuthLedger,
    CallObserver,
    Directory,
    MediaFactory,
    MediaUnavailable,
    NoObserver,
    Organisation,
    StoredBinding,
    Subscriber,
)
from b2bua.shared_auth import SharedAuth
from b2bua.transaction import (
    RequestReceived,
    ResponseReceived,
    SendMessage,
    TransactionLayer,
    TransactionTimeout,
)
from callrec.config import Config
from callrec.logs import CALL_ID
from callrec.policy import CALLEE, CALLER, InternalCallRecording, internal_call_recording

log = logging.getLogger("callrec.server")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REGISTER"
HOUSEKEEPING_INTERVAL_S = 3600
# Added by a trusted proxy ([sip] proxies, deploy/kamailio/): where the request it
# forwards really came from, as `host:port;transport=udp` (b2bua.registrar's format).
SOURCE_HEADER = "X-Callrec-Source"


@dataclass(frozen=True)
class Route:
    """Where a new call goes, as routing decided it from the INVITE and the directory.

    `owner` is the user the call is set up for (whose organisation it belongs to): the
    caller of a call out or of an internal call, the user rung by a call in. An internal
    call also has `callee_user`, its organisation's `domain` (the caller's identity
    towards the callee) and `recording`, the rule applied to both users' modes.
    """

    direction: str
    caller: Party
    callee: Party
    targets: list[Target]
    owner: Subscriber
    callee_user: Subscriber | None = None
    domain: str | None = None
    recording: InternalCallRecording | None = None

    def party_user_ids(self) -> tuple[int | None, int | None]:
        """The users who are the caller and the callee (None: a number outside the
        organisation), filed on the CDR: a user sees the calls they took part in, never
        a call whose outside number merely equals their extension."""
        if self.direction == INBOUND:
            return None, self.owner.id
        return self.owner.id, self.callee_user.id if self.callee_user is not None else None


def fork_targets(
    bindings: Sequence[StoredBinding], *, limit: int, exclude: Peer | None = None
) -> list[Target]:
    """The branches of a call to a user: one per registered binding, in the directory's
    order (newest first), at most `limit`. A binding whose source address cannot be read
    is skipped, and so is the binding at `exclude`: the device a user calls themselves
    from must not ring (it would be rung by its own call)."""
    targets: list[Target] = []
    for binding in bindings:
        try:
            destination = parse_received_peer(binding.received)
        except ValueError:
            continue
        if destination == exclude:
            continue
        targets.append(Target(binding.contact, destination))
    return targets[:limit]


@dataclass
class Counters:
    """Operational counters, logged at shutdown and exposed to tests."""

    received: int = 0
    parse_errors: int = 0
    calls: int = 0
    auth_challenges: int = 0
    auth_failures: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class B2bua:
    """The SIP side of callrec: one instance per process."""

    def __init__(
        self,
        config: Config,
        store: Directory,
        media: MediaFactory,
        observer: CallObserver | None = None,
        *,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        auth_ledger: AuthLedger | None = None,
    ) -> None:
        self.config = config
        # Starts a background task in the owner's task group (`callrec serve`): call
        # set-ups, REGISTERs, CDR writes and housekeeping all run through it.
        self.spawn = spawn
        self.store = store
        self.media = media
        self.host, self.port = config.sip.listen.host, config.sip.listen.port
        self.transport: Any = None
        self.tls_port: int | None = None  # SIP over TLS, once listening
        self.transactions = TransactionLayer()
        # An INVITE we could not act on within this (a directory that hung) is refused,
        # not forwarded: by Timer B (64*T1) a caller without a provisional has given up.
        self.setup_deadline = 64 * self.transactions.t1
        # A new secret per process: nonces must not outlive the nc table (b2bua.digest).
        # One challenger per organisation's domain (its digest realm), made on first use.
        self._nonce_secret = secrets.token_bytes(32)
        self.challengers: dict[str, DigestChallenger] = {}
        self.challenger = self._challenger(config.sip.realm)
        self.limits = AuthLimits(
            max_failures=config.sip.auth_max_failures,
            window=config.sip.auth_failure_window,
            lockout=config.sip.auth_lockout,
        )
        # Nodes sharing a store share nonces and lock-outs (b2bua.shared_auth).
        self.shared_auth = (
            SharedAuth(auth_ledger, self.limits, nonce_lifetime=config.sip.nonce_lifetime)
            if auth_ledger is not None
            else None
        )
        self.registrar = Registrar(max_contacts=config.sip.max_contacts)
        trunk = config.trunk
        self.trunk_peer = Peer(trunk.host, trunk.port, trunk.transport)
        # The trunk is its URI's host:port over its transport; `trusted` adds whole hosts
        # (any port), over that transport too (callrec.config.TrunkConfig).
        self.trusted_hosts = set(trunk.trusted)
        self.proxies = frozenset(config.sip.proxies)
        self._leg_b_call_ids: dict[str, str] = {}  # leg B's Call-ID -> the call's (leg A's)
        # Called with the seconds from an INVITE to the 2xx callrec sent for it.
        self.setup_observers: list[Callable[[float], None]] = []
        self.calls: set[Call] = set()
        self.dialogs: dict[tuple[str, str], tuple[Call, str]] = {}
        self.setups: dict[tuple[str, str], Call] = {}
        self.invite_calls: dict[str, Call] = {}
        self.handlers: dict[tuple[str, str], ResponseHandler] = {}
        self.counters = Counters()
        self.recordings: CallObserver = observer if observer is not None else NoObserver()
        self._timer: asyncio.TimerHandle | None = None
        # Per call (by id()): the last CDR write, which waits for the one before it, and
        # the CDR's creation while it is under way.
        self._cdr_chains: dict[int, asyncio.Task[Any]] = {}
        self._cdr_creations: dict[int, asyncio.Task[Any]] = {}
        self.accepting_calls = True
        self._parse_error_log = LogLimiter(per_window=20, window_s=10.0)

    def _challenger(self, realm: str) -> DigestChallenger:
        """The digest challenger of one realm (an organisation's SIP domain)."""
        challenger = self.challengers.get(realm)
        if challenger is None:
            challenger = DigestChallenger(
                realm,
                self._nonce_secret,
                nonce_lifetime=self.config.sip.nonce_lifetime,
                algorithms=self.config.sip.digest_algorithms,
            )
            self.challengers[realm] = challenger
        return challenger

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        from b2bua.tls import tls_settings
        from b2bua.transport import SipTransport, TcpLimits

        sip = self.config.sip
        if self.shared_auth is not None:
            # The nodes' common secret: a nonce one node issued is good on the others.
            self._nonce_secret = await self.shared_auth.ledger.nonce_secret()
            self.challengers = {}
            self.challenger = self._challenger(sip.realm)
        limits = TcpLimits(
            max_connections=sip.tcp_max_connections,
            max_per_source=sip.tcp_max_per_source,
            idle_timeout=sip.tcp_idle_timeout,
            message_timeout=sip.tcp_message_timeout,
        )
        self.transport = SipTransport(
            self.host, self.port, self.on_data, limits, tls=tls_settings(sip)
        )
        self.transport.on_unreachable = self._on_unreachable
        await self.transport.start()
        self.port = self.transport.port
        self.tls_port = self.transport.tls_port
        tls = f", tls on {self.hostport(Peer(self.host, 0, 'tls'))}" if self.tls_port else ""
        self.spawn(self._housekeeping())
        loop = type(asyncio.get_running_loop())
        log.info(
            "listening for SIP on %s:%d (udp, tcp%s), event loop %s (%s)",
            self.host,
            self.port,
            tls,
            loop.__module__.partition(".")[0],
            loop.__name__,
        )

    async def _housekeeping(self) -> None:
        """Forget expired registrations now and then (lookups already ignore them);
        runs until the owner's task group cancels it."""
        while True:
            try:
                purged = await self.store.purge_expired_bindings(time.time())
                if purged:
                    log.info("%d expired registration(s) removed", purged)
            except Exception as exc:  # a directory failure must not end housekeeping
                log.error("cannot purge registrations: %s", exc)
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)

    async def stop(self) -> None:
        """Stop taking calls (new INVITEs get 503), end the calls in progress (BYE or
        CANCEL), wait until their CDRs are written, then close the transports. What
        else still runs (set-ups, REGISTERs, housekeeping) is the task group's to cancel."""
        self.accepting_calls = False
        for call in list(self.calls):
            call.hang_up()
        writes = list(self._cdr_chains.values())
        if writes:
            # Bounded: a directory that hangs must not hold the shutdown for ever.
            await asyncio.wait(writes, timeout=5)
        transport, self.transport = self.transport, None
        if transport is not None:
            # Closing flushes what is queued (the BYEs over TCP) before the sockets go.
            await transport.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------------ I/O glue
    def on_data(self, data: bytes, peer: Peer) -> None:
        """Bytes from a transport: parse, match to transactions, act on the events."""
        if not data.strip(b"\r\n"):
            return  # keepalive
        self.counters.received += 1
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self.counters.parse_errors += 1
            if self._parse_error_log.allow(time.monotonic()):
                log.warning("malformed SIP from %s: %s", peer, exc.reason)
            if exc.partial is not None and exc.partial.method != "ACK":
                response = make_response(exc.partial, 400, _reason_phrase(exc.reason))
                self._send_raw(response.to_bytes(), peer)
            return
        if isinstance(message, SipRequest) and self._dropped(
            message, self.source_of(message, peer)
        ):
            return
        # Log lines (and the tasks started) while handling it carry the call's Call-ID
        # (callrec.logs): leg A's, the one its CDR keeps, for leg B's messages too.
        call_id = message.headers.get("Call-ID") or ""
        token = CALL_ID.set(self._leg_b_call_ids.get(call_id, call_id) or None)
        try:
            self._process(self.transactions.receive(message, peer, time.monotonic()))
        except Exception:
            # A message that breaks a handler must not take the process (or other calls) down.
            log.exception("error handling message from %s", peer)
            if isinstance(message, SipRequest) and message.method != "ACK":
                self._send_raw(make_response(message, 500).to_bytes(), peer)
        finally:
            CALL_ID.reset(token)

    def source_of(self, request: SipRequest, peer: Peer) -> Peer:
        """Where `request` really comes from: `peer`, unless `peer` is a trusted proxy
        ([sip] proxies) that named the original source in `X-Callrec-Source`. From
        anyone else the header proves nothing and is ignored."""
        if peer.host not in self.proxies:
            return peer
        named = request.headers.get(SOURCE_HEADER)
        if named is None:
            return peer
        try:
            return parse_received_peer(named.strip())
        except ValueError:
            if self._parse_error_log.allow(time.monotonic()):
                log.warning("proxy %s sent a bad %s: %r", peer, SOURCE_HEADER, named)
            return peer

    def _send_raw(self, data: bytes, peer: Peer) -> None:
        if self.transport is not None:
            self.transport.send(data, peer)

    def _process(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, SendMessage):
                self._send_raw(event.message.to_bytes(), event.peer)
            elif isinstance(event, RequestReceived):
                self.on_request(event.request, event.peer)
            elif isinstance(event, ResponseReceived):
                self._deliver(event.request, event.response)
            elif isinstance(event, TransactionTimeout):
                self._on_timeout(event)
        self._reschedule()

    def _reschedule(self) -> None:
        deadline = self.transactions.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire_timers)

    def _fire_timers(self) -> None:
        self._timer = None
        self._process(self.transactions.poll(time.monotonic()))

    def _deliver(self, request: SipRequest, response: SipResponse) -> None:
        key = _client_key(request)
        handler = self.handlers.get(key)
        if handler is None:
            return
        if response.status >= 200 and not (request.method == "INVITE" and response.status < 300):
            # Finals end the client transaction; 2xx to INVITE may be retransmitted.
            del self.handlers[key]
        handler(response)

    def _on_timeout(self, event: TransactionTimeout) -> None:
        request = event.request
        if event.timer == "L":
            # Our 2xx to an INVITE was never acknowledged: the call cannot go on.
            call = self.invite_calls.get(_client_key(request)[0])
            if call is not None:
                call.on_ack_timeout()
            return
        handler = self.handlers.pop(_client_key(request), None)
        if handler is None:
            return
        if event.timer == "transport":
            # RFC 3261 §8.1.3.1: a transport failure is treated as a 503.
            handler(make_response(request, 503, "Service Unavailable"))
            return
        handler(None)

    def _on_unreachable(self, peer: Peer) -> None:
        """A connection to `peer` could not be opened: what waited for it fails now."""
        self._process(self.transactions.transport_failed(peer, time.monotonic()))

    # ------------------------------------------------------------------ CallServices
    def send_request(self, request: SipRequest, peer: Peer, on_response: ResponseHandler) -> None:
        self.handlers[_client_key(request)] = on_response
        self._process(self.transactions.send_request(request, peer, time.monotonic()))

    def send_response(self, response: SipResponse) -> None:
        self._process(self.transactions.send_response(response, time.monotonic()))

    def send_ack(self, ack: SipRequest, peer: Peer) -> None:
        self._send_raw(ack.to_bytes(), peer)

    def via(self, peer: Peer) -> str:
        return (
            f"SIP/2.0/{peer.transport.upper()} {self.hostport(peer)};branch={generate_branch()}"
            ";rport"
        )

    def contact(self, peer: Peer) -> str:
        transport = f";transport={peer.transport}" if peer.transport in ("tcp", "tls") else ""
        return f"<sip:callrec@{self.hostport(peer)}{transport}>"

    def media_address(self) -> str:
        return self.config.media.address

    def register_dialog(self, call: Call, call_id: str, local_tag: str, leg: str) -> None:
        self.dialogs[(call_id, local_tag)] = (call, leg)
        if leg == "b":
            self._leg_b_call_ids[call_id] = call.call_id

    def call_answered(self, call: Call) -> None:
        if call.answered_at is not None:
            for observe in self.setup_observers:
                observe(max(0.0, call.answered_at - call.started_at))
        creation = self._cdr_creations.get(id(call))
        if creation is None:
            self.recordings.call_answered(call)
            return

        # The recorder files the recording under the CDR: let it start once the CDR
        # exists (it usually does long before the callee answers), unless the call ended.
        def answered(_: asyncio.Task[Any]) -> None:
            if call.state == CallState.CONFIRMED:
                self.recordings.call_answered(call)

        creation.add_done_callback(answered)

    def media_changed(self, call: Call, leg: str, sdp: bytes) -> None:
        self.recordings.media_changed(call, leg, sdp)

    def info_received(self, call: Call, leg: str, request: SipRequest) -> None:
        self.recordings.info_received(call, leg, request)

    def call_ended(self, call: Call) -> None:
        self.recordings.finish(call)
        self.calls.discard(call)
        self._leg_b_call_ids.pop(call.b_call_id, None)
        for dialog_key in [k for k, (c, _) in self.dialogs.items() if c is call]:
            del self.dialogs[dialog_key]
        for setup_key in [k for k, c in self.setups.items() if c is call]:
            del self.setups[setup_key]
        for branch in [k for k, c in self.invite_calls.items() if c is call]:
            del self.invite_calls[branch]

    def record_cdr(self, call: Call, **fields: object) -> None:
        async def update() -> None:
            if call.cdr_id is not None:  # None: its creation failed (logged)
                await self.store.update_call(call.cdr_id, **fields)

        self._chain_cdr(call, update, "update")

    def _create_cdr(self, call: Call, org_id: int, **fields: object) -> None:
        """Write the call's CDR (of organisation `org_id`) in the background: the INVITE
        goes on without waiting, and the call's later updates (`record_cdr`) are chained
        after it."""

        async def create() -> None:
            call.cdr_id = await self.store.create_call(org_id, **fields)

        task = self._chain_cdr(call, create, "creation")
        self._cdr_creations[id(call)] = task
        task.add_done_callback(lambda _: self._cdr_creations.pop(id(call), None))

    def _chain_cdr(
        self, call: Call, action: Callable[[], Awaitable[Any]], what: str
    ) -> asyncio.Task[Any]:
        previous = self._cdr_chains.get(id(call))

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await action()
            except Exception as exc:  # the call goes on without its CDR
                log.error("call %s: CDR %s failed: %s", call.call_id, what, exc)

        task = self.spawn(run())
        self._cdr_chains[id(call)] = task
        task.add_done_callback(
            lambda t: (
                self._cdr_chains.pop(id(call), None)
                if self._cdr_chains.get(id(call)) is t
                else None
            )
        )
        return task

    def hostport(self, peer: Peer | None = None) -> str:
        """callrec's SIP address; toward a `peer` over TLS, its TLS listening address."""
        host, port = self.host, self.port
        if peer is not None and peer.transport == "tls" and self.config.sip.listen_tls:
            host = self.config.sip.listen_tls.host
            port = self.tls_port or self.config.sip.listen_tls.port
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{port}"

    # ------------------------------------------------------------------ requests
    def on_request(self, request: SipRequest, peer: Peer) -> None:
        method = request.method
        to_tag = NameAddr.parse(request.headers.get("To") or "").tag
        call_id = request.headers.get("Call-ID") or ""
        if method == "ACK":
            found = self.dialogs.get((call_id, to_tag or ""))
            if found is not None:
                found[0].on_ack(request, found[1])
            return
        max_forwards = request.headers.get("Max-Forwards")
        if max_forwards is not None and max_forwards.strip() == "0" and method != "OPTIONS":
            self.send_response(make_response(request, 483, to_tag=generate_tag()))
            return
        if to_tag:
            found = self.dialogs.get((call_id, to_tag))
            if found is None:
                self.send_response(make_response(request, 481))
                return
            found[0].on_request(request, found[1])
            return
        if not request.uri.lower().startswith(("sip:", "sips:")):
            self.send_response(make_response(request, 416, to_tag=generate_tag()))
            return
        source = self.source_of(request, peer)
        if method == "CANCEL":
            self._on_cancel(request)
        elif method == "OPTIONS":
            self._answer_options(request)
        elif method == "REGISTER":
            self.spawn(self._unless_directory_fails(request, self._on_register(request, source)))
        elif method == "INVITE":
            self._on_invite(request, peer, source)
        elif method == "BYE":
            self.send_response(make_response(request, 481))
        else:
            response = make_response(request, 405, to_tag=generate_tag())
            response.headers.set("Allow", ALLOW)
            self.send_response(response)

    def _answer_options(self, request: SipRequest) -> None:
        response = make_response(request, 200, to_tag=generate_tag())
        response.headers.set("Allow", ALLOW)
        response.headers.set("Accept", "application/sdp")
        response.headers.set("Server", self.config.sip.user_agent)
        self.send_response(response)

    def _on_cancel(self, cancel: SipRequest) -> None:
        # RFC 3261 9.2: a CANCEL names the INVITE it cancels by that INVITE's server
        # transaction (same branch), not by Call-ID and tags.
        invite = self.transactions.find_invite_server_transaction(cancel)
        if invite is None:
            self.send_response(make_response(cancel, 481, to_tag=generate_tag()))
            return
        call = self.invite_calls.get(_client_key(invite)[0])
        if call is not None:
            self.send_response(make_response(cancel, 200, to_tag=call.a_tag))
            call.on_cancel()
            return
        self.send_response(make_response(cancel, 200, to_tag=generate_tag()))
        if self.transactions.invite_pending(invite) is not None:
            # Its set-up is still looking the caller up: end the INVITE here; the set-up
            # finds it answered and forwards nothing (_still_wanted).
            self.send_response(make_response(invite, 487, to_tag=generate_tag()))

    # ------------------------------------------------------------------ REGISTER
    async def _on_register(self, request: SipRequest, peer: Peer) -> None:
        authenticated = await self._authenticate(request, peer, 401)
        if authenticated is None:
            return
        user, username, _ = authenticated
        now = time.time()
        devices = await self.store.list_devices(user.org_id, user.extension)
        allowed = {user.extension} | {d.username for d in devices if d.username}
        stored = await self.store.bindings(user.org_id, user.extension, now)
        bindings = [Binding(r.contact, r.expires_at, r.call_id, r.cseq, r.received) for r in stored]
        outcome = self.registrar.register(
            request, peer, now, extension=user.extension, allowed_aors=allowed, bindings=bindings
        )
        for change in outcome.changes:
            if isinstance(change, Upsert):
                await self.store.upsert_binding(
                    user.id,
                    change.contact,
                    change.received,
                    change.call_id,
                    change.cseq,
                    change.expires_at,
                    username,
                    user_agent=request.headers.get("User-Agent"),
                )
            elif isinstance(change, Remove):
                await self.store.remove_binding(user.id, change.contact)
            elif isinstance(change, RemoveAll):
                await self.store.remove_all_bindings(user.id)
        log.info(
            "register %s from %s: %d -> %d binding(s)",
            user.extension,
            peer,
            len(bindings),
            len(outcome.bindings),
        )
        self.send_response(outcome.response)

    async def _credentials_for(
        self, request: SipRequest, header: str, org: Organisation
    ) -> tuple[Subscriber, DigestCredentials] | None:
        username = credentials_username(request, header)
        if username is None:
            return None
        found = await self.store.find_credentials(org.id, username)
        if found is None or found.ha1_md5 is None or found.ha1_sha256 is None:
            return None
        if found.realm != org.domain:
            return None  # hashed for another realm (the domain changed since)
        return found.user, DigestCredentials(found.ha1_md5, found.ha1_sha256)

    async def _authenticate(
        self, request: SipRequest, peer: Peer, status: int
    ) -> tuple[Subscriber, str, Organisation] | None:
        """The user, digest username and organisation `request` proves, or None once it
        was answered.

        `status` is the challenge to answer with (401 for REGISTER, 407 otherwise). A
        locked-out source or user gets a 403 before its credentials are looked at.
        """
        header = credentials_header_name(status)
        org = await self.store.organisation_for_domain(_request_domain(request))
        if org is None:
            # A domain no organisation has: nobody here can register or call with it.
            self._answer_setup(
                request, make_response(request, 404, "Unknown Domain", to_tag=generate_tag())
            )
            return None
        challenger = self._challenger(org.domain)
        given = credentials_username(request, header)
        # Usernames repeat across organisations: limits count each one per domain.
        username = f"{given}@{org.domain}" if given is not None else None
        credentials = await self._credentials_for(request, header, org)
        if self.shared_auth is not None:
            await self.shared_auth.before_check(peer.host, username)
        # From here to the failure count nothing awaits: guesses sent in a burst cannot
        # all pass the check before the first of them is counted.
        verdict = self.limits.check(peer.host, username, time.monotonic())
        if verdict is not Verdict.ALLOW:
            self.counters.extra["auth_refused"] = self.counters.extra.get("auth_refused", 0) + 1
            response = make_response(request, 403, "Forbidden", to_tag=generate_tag())
            response.headers.set(
                "Warning", '399 callrec "Too many failed authentications; try again later"'
            )
            self._answer_setup(request, response)
            return None
        result = challenger.verify(
            request,
            time.time(),
            lambda name: credentials[1] if credentials and name == given else None,
            source=peer,
        )
        if result.ok and self.shared_auth is not None and result.username is not None:
            # A right answer only: guesses are counted before anything awaits.
            result = await self.shared_auth.accept(
                result, peer.host, f"{result.username}@{org.domain}"
            )
        if not result.ok or credentials is None or result.username is None:
            self._challenge(
                request, peer, status, result, known_user=credentials is not None, realm=org.domain
            )
            return None
        self.limits.success(peer.host, f"{result.username}@{org.domain}", time.monotonic())
        return credentials[0], result.username, org

    def _challenge(
        self,
        request: SipRequest,
        peer: Peer,
        status: int,
        result: AuthResult,
        *,
        known_user: bool,
        realm: str,
    ) -> None:
        if result.failed:
            self.counters.auth_failures += 1
            now = time.monotonic()
            user = f"{result.username}@{realm}" if known_user else None
            outcome = self.limits.failure(peer.host, user, now)
            if self.shared_auth is not None:
                self.spawn(self.shared_auth.count_failure(peer.host, user))
            if outcome.log:
                log.warning(
                    "auth failed for %s from %s: %s",
                    request.headers.get("From"),
                    peer,
                    result.reason,
                )
            for lockout in outcome.lockouts:
                log.warning("%s", lockout.describe(now))
        if not self._answerable(request):
            return  # the caller cancelled while its credentials were looked up
        self.counters.auth_challenges += 1
        self.send_response(
            self._challenger(realm).challenge_response(
                request, time.time(), status, generate_tag(), source=peer, stale=result.stale
            )
        )

    def _answerable(self, request: SipRequest) -> bool:
        """False for an INVITE that already has its final response (a CANCEL came while
        its set-up awaited the directory): there is nothing left to answer."""
        return request.method != "INVITE" or self.transactions.invite_pending(request) is not None

    def _answer_setup(self, request: SipRequest, response: SipResponse) -> None:
        """Send the final answer to a request whose handling awaited something."""
        if self._answerable(request):
            self.send_response(response)

    def _dropped(self, request: SipRequest, peer: Peer) -> bool:
        """A new REGISTER or INVITE from a locked-out source that keeps going: no answer."""
        if request.method not in ("REGISTER", "INVITE"):
            return False
        if not self.limits.should_drop(peer.host, time.monotonic()) or self._from_trunk(peer):
            return False
        try:
            return NameAddr.parse(request.headers.get("To") or "").tag is None
        except SipParseError:
            return False

    def _from_trunk(self, peer: Peer) -> bool:
        # Over the other transport the trunk's address proves nothing: anyone on its host
        # can open a TCP connection from its UDP port.
        trunk = self.trunk_peer
        if peer.transport != trunk.transport:
            return False
        return peer.host in self.trusted_hosts or (
            peer.host == trunk.host and peer.port == trunk.port
        )

    # ------------------------------------------------------------------ INVITE
    def _on_invite(self, request: SipRequest, peer: Peer, source: Peer) -> None:
        """`peer` sent the INVITE (a proxy, perhaps); `source` is its real origin."""
        key = _setup_key(request)
        if key in self.setups:
            return  # a retransmission the transaction layer did not absorb (new branch)
        require = [v.strip().lower() for v in request.headers.get_all("Require")]
        if require:
            response = make_response(request, 420, to_tag=generate_tag())
            response.headers.set("Unsupported", ", ".join(require))
            self.send_response(response)
            return
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if request.body and content_type != "application/sdp":
            response = make_response(request, 415, to_tag=generate_tag())
            response.headers.set("Accept", "application/sdp")
            self.send_response(response)
            return
        accept = request.headers.get_all("Accept")
        if accept and not any(
            a.split(";")[0].strip().lower() in ("application/sdp", "application/*", "*/*")
            for a in accept
        ):
            response = make_response(request, 406, to_tag=generate_tag())
            response.headers.set("Accept", "application/sdp")
            self.send_response(response)
            return
        if not self.accepting_calls:
            self._refuse_shutting_down(request)
            return
        self.spawn(self._setup_call(request, peer, source, self._from_trunk(source)))

    def _refuse_shutting_down(self, request: SipRequest) -> None:
        response = make_response(request, 503, "Shutting Down", to_tag=generate_tag())
        response.headers.set("Retry-After", "30")
        self.send_response(response)

    async def _unless_directory_fails(self, request: SipRequest, work: Awaitable[None]) -> None:
        """Run `work`; if the directory fails under it, answer 503 instead of nothing."""
        try:
            await work
        except Exception:
            log.exception(
                "%s %s: the directory failed", request.method, request.headers.get("Call-ID")
            )
            response = make_response(request, 503, "Service Unavailable", to_tag=generate_tag())
            response.headers.set("Retry-After", "5")
            self._answer_setup(request, response)

    def _still_wanted(self, request: SipRequest, to_tag: str) -> bool:
        """Whether a set-up that awaited something may go on towards the callee: not
        when the caller cancelled meanwhile (the INVITE has its 487), nor when it waited
        past `setup_deadline` (then it is refused here, with a 503)."""
        received_at = self.transactions.invite_pending(request)
        call_id = request.headers.get("Call-ID")
        if received_at is None:
            log.info("call %s: given up by the caller before it was forwarded", call_id)
            return False
        waited = time.monotonic() - received_at
        if waited > self.setup_deadline:
            log.warning("call %s: not forwarded, its set-up took %.1f s", call_id, waited)
            response = make_response(request, 503, "Set-up Too Slow", to_tag=to_tag)
            response.headers.set("Retry-After", "5")
            self.send_response(response)
            return False
        return True

    async def _route(self, request: SipRequest, peer: Peer, from_trunk: bool) -> Route | None:
        if from_trunk:
            return await self._route_inbound(request)
        return await self._route_outbound(request, peer)

    async def _setup_call(
        self, request: SipRequest, peer: Peer, source: Peer, from_trunk: bool
    ) -> None:
        prepared: Route | None = None

        async def route() -> None:
            nonlocal prepared
            prepared = await self._route(request, source, from_trunk)

        await self._unless_directory_fails(request, route())
        if prepared is None or not self._still_wanted(request, generate_tag()):
            return
        if not self.accepting_calls:
            self._refuse_shutting_down(request)
            return
        chosen = prepared
        direction, caller, callee, owner = (
            chosen.direction,
            chosen.caller,
            chosen.callee,
            chosen.owner,
        )
        call = Call(self, request, peer, direction, caller, callee)
        # Through a proxy leg A is signalled via `peer` but its RTP comes from `source`.
        call.source_a = source if source != peer else None
        call.org_id = owner.org_id
        if chosen.recording is not None and chosen.callee_user is not None:
            self._prepare_internal(call, chosen, chosen.recording, chosen.callee_user)
        else:
            trunk = self.config.trunk
            call.owner_ext = owner.extension
            if direction == OUTBOUND:
                call.identity = CallerIdentity(
                    owner.extension, owner.name, trunk.from_domain or trunk.host, trunk.identity
                )
            call.internal_leg = "a" if direction == OUTBOUND else "b"
            call.srtp = SrtpNegotiation(
                trunk_leg="b" if direction == OUTBOUND else "a",
                trunk_mode=trunk.srtp,
                suites=self.config.media.srtp_suites,
                tls_legs=self._tls_phone_legs(chosen.targets) if direction != OUTBOUND else None,
            )
            call.recording_mode = owner.recording_mode
        key = _setup_key(request)
        self.setups[key] = call
        self.invite_calls[Via.parse(request.headers.get_all("Via")[0]).branch or ""] = call
        self.calls.add(call)
        self.counters.calls += 1
        try:
            call.media = await self.media.open(
                on_silence=lambda leg: log.warning(
                    "call %s: no RTP on leg %s for %.0f s",
                    call.call_id,
                    leg,
                    self.config.media.rtp_timeout,
                ),
                on_idle=lambda: self._media_idle(call),
            )
        except MediaUnavailable as exc:
            log.error("call %s: no media ports: %s", call.call_id, exc)
            self._answer_setup(
                request, make_response(request, 503, "No Media Ports", to_tag=call.a_tag)
            )
            self.call_ended(call)
            return
        if call.state == CallState.ENDED or not self._still_wanted(request, call.a_tag):
            # Cancelled (the call has ended itself) or given up while the ports were opened.
            call.media.close()
            self.call_ended(call)
            return
        caller_user_id, callee_user_id = chosen.party_user_ids()
        self._create_cdr(
            call,
            owner.org_id,
            caller_user_id=caller_user_id,
            callee_user_id=callee_user_id,
            sip_call_id=call.call_id,
            direction=direction,
            caller_ext=caller.extension,
            caller_name=caller.name,
            callee_ext=callee.extension,
            callee_name=callee.name,
            started_at=call.started_at,
            leg_a_call_id=call.call_id,
            leg_b_call_id=call.b_call_id,
        )
        call.start(chosen.targets)

    def _prepare_internal(
        self, call: Call, route: Route, recording: InternalCallRecording, callee: Subscriber
    ) -> None:
        """An internal call: both legs are this organisation's phones. Recorded by the
        rule over both users' modes (`callrec.policy.internal_call_recording`), filed
        under the user whose mode decided it, the feature code watched on each on-demand
        user's leg; leg B gets the authenticated caller in From, as a call out would."""
        legs = {CALLER: "a", CALLEE: "b"}
        users = {CALLER: route.owner, CALLEE: callee}
        owner = recording.owner or CALLER
        call.owner_ext = users[owner].extension
        call.internal_leg = legs[owner]
        call.recording_mode = recording.mode
        call.feature_code_legs = tuple(legs[party] for party in recording.feature_code_parties)
        caller = route.owner
        call.identity = CallerIdentity(caller.extension, caller.name, route.domain or self.host)
        # No trunk on either leg: each phone gets SRTP if it offers it, plain RTP if not.
        call.srtp = SrtpNegotiation(
            trunk_leg=None,
            trunk_mode=self.config.trunk.srtp,
            suites=self.config.media.srtp_suites,
            tls_legs=self._tls_phone_legs(route.targets),
        )

    def _tls_phone_legs(self, targets: list[Target]) -> dict[str, str]:
        """Leg B's SRTP mode when callrec calls phones over TLS (`[sip] tls_phone_srtp`):
        "offer" when any device is on TLS (a plain one ignores the keys), "require" only
        when every one is (a plain device could not answer RTP/SAVP)."""
        mode = self.config.sip.tls_phone_srtp
        on_tls = [target.peer.transport == "tls" for target in targets]
        if mode == "off" or not any(on_tls):
            return {}
        return {"b": "require" if mode == "require" and all(on_tls) else "offer"}

    def _media_idle(self, call: Call) -> None:
        """No RTP either way for [media] hangup_after_silence: a BYE was probably lost."""
        if call.state != CallState.CONFIRMED:
            return
        idle = self.config.media.hangup_after_silence
        if call.on_hold():
            log.info("call %s: no RTP for %.0f s while on hold; kept", call.call_id, idle)
            return
        log.warning("call %s: no RTP either way for %.0f s; ending it", call.call_id, idle)
        call.hang_up(reason=f'SIP ;cause=408 ;text="no RTP for {idle:.0f} s"')

    async def _route_outbound(self, request: SipRequest, peer: Peer) -> Route | None:
        """A phone's call: to a user of its own organisation (an internal call), else to
        the trunk. Only the caller's organisation is searched: another organisation's
        extension is, for this caller, a number like any other, and goes to the trunk."""
        authenticated = await self._authenticate(request, peer, 407)
        if authenticated is None:
            return None
        user, _, org = authenticated
        dialed = _user_part(request.uri)
        callee_user = await self._internal_callee(user.org_id, dialed)
        if callee_user is not None:
            return await self._route_internal(request, peer, user, callee_user, org.domain)
        to = NameAddr.parse(request.headers.get("To") or "")
        caller = Party(user.extension, user.name)
        callee = Party(dialed, to.display)
        target = trunk_target(self.config.trunk.uri, dialed, self.trunk_peer)
        return Route(OUTBOUND, caller, callee, [target], user)

    async def _internal_callee(self, org_id: int, dialed: str | None) -> Subscriber | None:
        """The user of organisation `org_id` that `dialed` names: an extension, or a
        device's SIP username (which rings the device's user); None for anything else."""
        if not dialed:
            return None
        user = await self.store.get_user(org_id, dialed)
        if user is None:
            device = await self.store.find_credentials(org_id, dialed)
            user = device.user if device is not None else None
        return user

    async def _route_internal(
        self, request: SipRequest, peer: Peer, caller: Subscriber, callee: Subscriber, domain: str
    ) -> Route | None:
        """A call between two users of one organisation rings the callee's devices like
        a call from the trunk does. A user may call themselves only to reach another of
        their devices: the calling one is never rung."""
        self_call = callee.id == caller.id
        targets = await self._fork_to_user(request, callee, exclude=peer if self_call else None)
        if targets is None:
            return None
        recording = internal_call_recording(caller.recording_mode, callee.recording_mode)
        return Route(
            INTERNAL,
            Party(caller.extension, caller.name),
            Party(callee.extension, callee.name),
            targets,
            caller,
            callee_user=callee,
            domain=domain,
            recording=recording,
        )

    async def _fork_to_user(
        self, request: SipRequest, user: Subscriber, *, exclude: Peer | None = None
    ) -> list[Target] | None:
        """The branches that ring `user`'s registered devices (`fork_targets`), or None
        once `request` was answered: 480 when no device is registered, 486 when the only
        one is the device calling (`exclude`: a user calling themselves)."""
        bindings = list(await self.store.bindings(user.org_id, user.extension, time.time()))
        targets = fork_targets(bindings, limit=self.config.sip.max_contacts, exclude=exclude)
        if targets:
            return targets
        if exclude is not None and bindings:
            response = make_response(request, 486, "Busy Here", to_tag=generate_tag())
            response.headers.set("Warning", '399 callrec "No other device of yours is registered"')
        else:
            response = make_response(request, 480, "Temporarily Unavailable", to_tag=generate_tag())
        self._answer_setup(request, response)
        return None

    async def _route_inbound(self, request: SipRequest) -> Route | None:
        dialed = _user_part(request.uri) or _user_part(
            NameAddr.parse(request.headers.get("To") or "").uri
        )
        # The number called names the organisation (its DIDs) and the user.
        user = await self.store.route_number(dialed) if dialed else None
        if user is None:
            self._answer_setup(request, make_response(request, 404, to_tag=generate_tag()))
            return None
        targets = await self._fork_to_user(request, user)
        if targets is None:
            return None
        from_ = NameAddr.parse(request.headers.get("From") or "")
        caller = Party(_user_part(from_.uri), from_.display)
        callee = Party(user.extension, user.name)
        return Route(INBOUND, caller, callee, targets, user)


class LogLimiter:
    """Lets `per_window` log lines through per window, then says how many it held back."""

    def __init__(self, per_window: int, window_s: float) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self.window_start = -window_s
        self.count = 0
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        if now - self.window_start >= self.window_s:
            if self.suppressed:
                log.warning("%d more malformed SIP message(s) not logged", self.suppressed)
            self.window_start, self.count, self.suppressed = now, 0, 0
        self.count += 1
        if self.count <= self.per_window:
            return True
        self.suppressed += 1
        return False


def _client_key(request: SipRequest) -> tuple[str, str]:
    vias = request.headers.get_all("Via")
    branch = Via.parse(vias[0]).branch if vias else None
    method = "INVITE" if request.method == "ACK" else request.method
    return branch or "", method


def _setup_key(request: SipRequest) -> tuple[str, str]:
    from_tag = NameAddr.parse(request.headers.get("From") or "").tag or ""
    return request.headers.get("Call-ID") or "", from_tag


def _request_domain(request: SipRequest) -> str | None:
    """The SIP domain a phone names its organisation by: the To AOR's host for a
    REGISTER, the From host for anything else."""
    header = request.headers.get("To" if request.method == "REGISTER" else "From") or ""
    try:
        return SipUri.parse(NameAddr.parse(header).uri).host or None
    except SipParseError:
        return None


def _user_part(uri: str) -> str | None:
    try:
        return SipUri.parse(uri).user
    except SipParseError:
        return None


def _reason_phrase(reason: str) -> str:
    text = "".join(ch if ch.isprintable() and ch not in "\r\n" else " " for ch in reason)
    return ("Bad Request - " + text)[:120]
