"""What the SIP side needs from the rest of callrec, as small Protocols.

`b2bua` never imports `media` or `storage`: the application (`callrec.app`) hands the
`B2bua` a `Directory` (organisations, users, credentials, registrations, call detail
records), a `MediaFactory` (one relay session per call), a `CallObserver` (the
recording orchestration) and, when nodes share a store, an `AuthLedger` (nonces and
lock-outs). Each Protocol names only what the SIP side calls, so a new backend (for
example PostgreSQL) only has to offer these methods.

Errors: a `Directory` method may raise anything on a backend failure; the SIP side logs
it and answers 503 (or, for a CDR write, keeps the call going). A `MediaFactory` raises
`MediaUnavailable` when it cannot give a call media ports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from b2bua.call import Call
    from b2bua.message import SipRequest
    from b2bua.sdes import MasterKey


class MediaUnavailable(Exception):
    """No media session could be opened for a call (no free port, a socket error)."""


class Organisation(Protocol):
    """An organisation as the SIP side sees one: its phones' SIP domain, which is also
    the digest realm of the challenges they get."""

    @property
    def id(self) -> int: ...
    @property
    def domain(self) -> str: ...


class Subscriber(Protocol):
    """A user as the SIP side sees one; extensions are unique within `org_id` only."""

    @property
    def id(self) -> int: ...
    @property
    def org_id(self) -> int: ...
    @property
    def extension(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def recording_mode(self) -> str: ...


class CredentialRecord(Protocol):
    """The digest secrets of one authentication username, and whose they are."""

    @property
    def user(self) -> Subscriber: ...
    @property
    def realm(self) -> str: ...
    @property
    def ha1_md5(self) -> str | None: ...
    @property
    def ha1_sha256(self) -> str | None: ...


class DeviceRecord(Protocol):
    @property
    def username(self) -> str | None: ...


class StoredBinding(Protocol):
    """One registration as kept by the directory."""

    @property
    def contact(self) -> str: ...
    @property
    def expires_at(self) -> float: ...
    @property
    def call_id(self) -> str: ...
    @property
    def cseq(self) -> int: ...
    @property
    def received(self) -> str: ...


class Directory(Protocol):
    """Organisations, their users, credentials and registrations, and the call detail
    records. A phone names its organisation by the SIP domain it uses; a call from the
    trunk by the number it calls. Every user lookup then names the organisation."""

    async def organisation_for_domain(self, domain: str | None) -> Organisation | None:
        """The organisation whose SIP domain is `domain` (any case); when only one
        organisation exists, that one whatever the domain (a one-organisation install
        keeps working with phones that register to an address). None otherwise."""
        ...

    async def find_credentials(self, org_id: int, username: str) -> CredentialRecord | None: ...

    async def get_user(self, org_id: int, extension: str) -> Subscriber | None: ...

    async def route_number(self, number: str) -> Subscriber | None:
        """The user a call from the trunk to `number` rings (through the DIDs of the
        organisations), or None."""
        ...

    async def list_devices(self, org_id: int, extension: str) -> Sequence[DeviceRecord]: ...

    async def bindings(
        self, org_id: int, extension: str, now: float
    ) -> Sequence[StoredBinding]: ...

    async def upsert_binding(
        self,
        user_id: int,
        contact: str,
        received: str,
        call_id: str,
        cseq: int,
        expires_at: float,
        device_username: str | None = None,
        *,
        instance: str | None = None,
        user_agent: str | None = None,
    ) -> None: ...

    async def remove_binding(self, user_id: int, contact: str) -> bool: ...

    async def remove_all_bindings(self, user_id: int) -> int: ...

    async def purge_expired_bindings(self, now: float) -> int: ...

    async def create_call(self, org_id: int, **fields: Any) -> int: ...

    async def update_call(self, call_id: int, **fields: Any) -> None: ...


class SharedLocks(Protocol):
    """Until when (unix seconds; 0: not) a source and a user are locked out on any node,
    and until when that user trusts that source (it authenticated from there)."""

    @property
    def source_until(self) -> float: ...
    @property
    def user_until(self) -> float: ...
    @property
    def trusted_until(self) -> float: ...


class AuthLedger(Protocol):
    """SIP authentication state shared by the nodes of one store (`storage.auth`): the
    nonce secret, the accepted nonce counts, failures, lock-outs and trusted sources.
    Without one (one node, SQLite) the SIP side keeps them in memory only. Times are
    unix seconds; `source` is `b2bua.limits.source_key` of the address, `username` the
    digest username with its domain. A method may raise on a backend failure: the SIP
    side then decides with what it holds in memory."""

    async def nonce_secret(self) -> bytes: ...

    async def accept_nonce(
        self,
        nonce: str,
        issued: float,
        nc: int,
        expires_before: float,
        *,
        username: str,
        source: str,
        trusted_until: float,
    ) -> bool:
        """Record an accepted count (and the user's trust of the source); False if a
        node accepted that count or a higher one before: a replay."""
        ...

    async def lock_state(self, source: str, username: str | None, now: float) -> SharedLocks: ...

    async def count_failure(
        self,
        source: str,
        username: str | None,
        now: float,
        *,
        window: float,
        max_failures: int,
        lockout: float,
    ) -> Sequence[tuple[str, str, float]]:
        """Count a failure on every node's behalf; the lock-outs it starts, as
        (kind, key, until)."""
        ...


class MediaLeg(Protocol):
    """One call's relay: two anchored legs, "a" (the caller) and "b" (the callee)."""

    def local_port(self, leg: str) -> int: ...

    def set_remote(
        self,
        leg: str,
        host: str,
        port: int,
        *,
        relatch: bool = False,
        signalled_from: str | None = None,
    ) -> None:
        """`leg`'s SDP names `host:port`; `signalled_from` is the host its SIP message came
        from (media is accepted only from these). Raises ValueError for an address that
        cannot be used."""

    def set_crypto(self, leg: str, receive: MasterKey | None, send: MasterKey | None) -> None:
        """`leg` runs SRTP from now: decrypt what it sends with `receive`, encrypt what
        goes to it with `send` (both None: plain RTP). Keys must never be logged."""

    def mark_media_started(self) -> None: ...

    def close(self) -> None: ...


class MediaFactory(Protocol):
    async def open(
        self, *, on_silence: Callable[[str], None], on_idle: Callable[[], None]
    ) -> MediaLeg:
        """A new relay session; raises `MediaUnavailable`."""
        ...


class CallObserver(Protocol):
    """Told of a call's answer, media changes, INFO requests and end (the recorder)."""

    def call_answered(self, call: Call) -> None: ...

    def media_changed(self, call: Call, leg: str, sdp: bytes) -> None: ...

    def info_received(self, call: Call, leg: str, request: SipRequest) -> None: ...

    def finish(self, call: Call) -> None: ...


class NoObserver:
    """A `CallObserver` that does nothing (a proxy without recording, tests)."""

    def call_answered(self, call: Call) -> None:
        pass

    def media_changed(self, call: Call, leg: str, sdp: bytes) -> None:
        pass

    def info_received(self, call: Call, leg: str, request: SipRequest) -> None:
        pass

    def finish(self, call: Call) -> None:
        pass
