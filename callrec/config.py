"""callrec configuration: a TOML file checked key by key into frozen dataclasses.

`load_config(None)` gives the embedded defaults (data under ./callrec-data/). Relative
paths in a file ([storage] dir, [recording] announcement) are taken relative to the
folder of that file; without a file, relative to the current directory. Every problem is
reported as one `ConfigError` line naming the section and key.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from callrec.policy import (
    ANNOUNCEMENTS,
    CHANNELS,
    DEFAULT_FEATURE_CODE,
    DEFAULT_LANGUAGE,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_TIMEZONE,
    FORMATS,
    PAUSED_MODES,
    RETENTION_MAX_DAYS,
    RETENTION_MIN_DAYS,
    FeatureCode,
    PolicyError,
    RecordingSettings,
    parse_language,
    parse_timezone,
)

__all__ = [
    "ClusterConfig",
    "Config",
    "ConfigError",
    "HostPort",
    "MediaConfig",
    "PortalConfig",
    "RecordingConfig",
    "RetentionConfig",
    "ServerConfig",
    "SipConfig",
    "SmtpConfig",
    "StorageConfig",
    "TrunkConfig",
    "load_config",
    "parse_host_port",
]


class ConfigError(Exception):
    """The configuration is unusable; str() is one line such as
    "config error: [media] rtp_ports: expected ...".
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"config error: {message}")


class _Invalid(Exception):
    """A value is wrong; the caller adds the section and key to the message."""


# [media] srtp_suites: the SDES suites b2bua.sdes knows, strongest first (the default).
# AES-GCM (RFC 7714) first, then the AES-CM suites of RFC 4568 every SRTP phone has.
SRTP_SUITES = (
    "AEAD_AES_256_GCM",
    "AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
)


@dataclass(frozen=True)
class HostPort:
    """A host (IP literal or name, IPv6 without brackets) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class SipConfig:
    """[sip]: where callrec listens for SIP (UDP and TCP on the same port), and its trust.

    A digest nonce lives `nonce_lifetime` seconds; `auth_max_failures` failed logins in
    `auth_failure_window` seconds lock the source (or the user) out for `auth_lockout`
    seconds; a user may hold at most `max_contacts` registrations.
    """

    listen: HostPort
    realm: str
    user_agent: str
    # One MD5 challenge by default: SIPp, baresip and most deployed phones answer only the
    # first challenge and only MD5. ("SHA-256", "MD5") offers both, SHA-256 first.
    digest_algorithms: tuple[str, ...] = ("MD5",)
    nonce_lifetime: float = 60.0
    auth_max_failures: int = 10
    auth_failure_window: float = 60.0
    auth_lockout: float = 300.0
    max_contacts: int = 10
    # TCP: connections in all and per source IP; seconds a new connection may take to
    # deliver its first complete message, and any message from its first byte to its last.
    tcp_max_connections: int = 2000
    tcp_max_per_source: int = 200
    tcp_idle_timeout: float = 60.0
    tcp_message_timeout: float = 10.0
    # SIP over TLS: on when `tls_certificate` is set; `listen_tls` defaults to port 5061 on
    # the host of `listen`. `tls_key` may be left out when the certificate file holds the
    # key; `tls_ca` verifies client certificates (`tls_client_certificates` "optional" or
    # "required") and the trunk's (the system store when unset). A TLS connection must
    # finish its handshake within `tls_handshake_timeout` seconds; the tcp_* caps and
    # timeouts count TLS connections too.
    listen_tls: HostPort | None = None
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_client_certificates: str = "none"
    tls_handshake_timeout: float = 10.0
    # SRTP toward a phone callrec calls over TLS (its registration's transport), when the
    # other leg did not bring SRTP already: "offer" (RTP/AVP with a=crypto, so a phone
    # without SRTP still answers plain), "require" (RTP/SAVP, when every device called is
    # on TLS) or "off" (follow the other leg). Keys over TLS are protected; over UDP or
    # TCP anyone on the path reads them, so callrec offers none there.
    tls_phone_srtp: str = "offer"
    # SIP proxies in front of callrec (a Kamailio dispatcher, deploy/kamailio/): from
    # these addresses only, the `X-Callrec-Source` header names the phone's or the
    # trunk's own address, which digest nonces, lock-outs, registrations, trunk
    # recognition and the RTP NAT latch then use instead of the proxy's.
    proxies: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        """Whether callrec listens for SIP over TLS."""
        return self.tls_certificate is not None


@dataclass(frozen=True)
class TrunkConfig:
    """[trunk]: the SIP trunk calls go out to, and who is taken for it.

    A request is from the trunk (no digest; routed to a user) when it arrives over the
    trunk's `transport` (udp unless the URI says `;transport=tcp` or `;transport=tls`;
    tls for a `sips:` URI) from the URI's host
    and port, or over that same transport from any port of a `trusted` host. Over the
    other transport, even from those addresses, it is a phone's: challenged.

    Calls out assert the authenticated user, never what the phone wrote: `identity`
    "from" puts `"Name" <sip:EXT@from_domain>` in From; "pai" adds the same in
    P-Asserted-Identity. `from_domain` defaults to the trunk URI's host. A phone asking
    for privacy (`Privacy: id|user|header`) gets an anonymous From, with the identity
    in P-Asserted-Identity and `Privacy: id` (RFC 3325).

    `srtp` is what callrec offers the trunk (b2bua.sdes): "off" plain RTP/AVP, "offer"
    RTP/AVP with SDES keys (SRTP if the trunk answers with a key), "require" RTP/SAVP:
    a trunk answer without a key fails the call (488), and so is a plain offer from it.
    Phones are answered as they offer, whatever this says.
    """

    uri: str
    host: str
    port: int
    transport: str
    trusted: tuple[str, ...]
    identity: str = "from"
    from_domain: str | None = None
    srtp: str = "off"


@dataclass(frozen=True)
class MediaConfig:
    """[media]: the RTP relay's address, its port range (even first) and idle timeout."""

    address: str
    rtp_port_first: int
    rtp_port_last: int
    rtp_timeout: float
    # Seconds with no RTP from either leg (neither on hold) before callrec ends the call
    # with a BYE to both sides (a lost BYE); 0 never does.
    hangup_after_silence: float = 120.0
    # A leg's media is accepted only from the address its SDP names. With `nat`, a phone
    # whose SDP names another host than its SIP came from (behind NAT) is also accepted
    # from its SIP host, at the port its first packet shows within `latch_window` seconds
    # of its SDP (or of the answer).
    nat: bool = True
    latch_window: float = 3.0
    # Media worker processes (relay and recording), each with a slice of the port range;
    # the file's default is one per core.
    workers: int = 1
    # A phone keeps RFC 4733 towards callrec when the far end's answer has no
    # telephone-event (for the feature code); its other keys reach that far end as
    # nothing ("none"), in-band tones ("inband") or SIP INFO ("info").
    dtmf_interworking: str = "none"
    # The SDES suites callrec offers on an SRTP leg, in this order, and the only ones it
    # accepts (b2bua.sdes; the offerer's order decides among them when callrec answers).
    srtp_suites: tuple[str, ...] = SRTP_SUITES


@dataclass(frozen=True)
class RecordingConfig:
    """[recording]: file layout and the on-demand feature code and announcement.

    `announcement` is "default", "beep", "none" or the absolute path of a WAV file.
    """

    channels: str
    format: str
    feature_code: FeatureCode
    announcement: str
    feature_code_timeout: float = 2.0
    paused: str = "skip"
    swallow_feature_code: bool = False

    @property
    def announcement_path(self) -> Path | None:
        if self.announcement in ANNOUNCEMENTS:
            return None
        return Path(self.announcement)


@dataclass(frozen=True)
class StorageConfig:
    """[storage]: the data folder (absolute) and the database file inside it; with
    `objects` ("s3://bucket/prefix"), finished recordings go to that S3-compatible store
    (`s3_endpoint`, `s3_region`, `s3_access_key`/`s3_secret_key`; unset: the
    environment's AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
    and an ERROR is logged while more than `upload_queue_alarm` wait to be uploaded;
    while the store is down, uploads are retried 1 s apart doubling to
    `upload_retry_max` seconds."""

    dir: Path
    # A file name in `dir` (SQLite), or a "postgresql://user:password@host:port/name" URL
    # (several nodes sharing one database); not in repr: a URL may hold a password.
    db: str = field(repr=False)
    objects: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = field(default=None, repr=False)  # never logged
    upload_queue_alarm: int = 100
    upload_retry_max: float = 60.0

    @property
    def db_path(self) -> Path:
        return self.dir / self.db

    @property
    def database(self) -> str | Path:
        """Where the store is: the PostgreSQL URL, or the SQLite file in `dir`."""
        return self.db if _is_database_url(self.db) else self.db_path

    @property
    def recordings_dir(self) -> Path:
        return self.dir / "recordings"


@dataclass(frozen=True)
class RetentionConfig:
    """[retention]: days a recording is kept unless a setting says otherwise."""

    default_days: int


@dataclass(frozen=True)
class PortalConfig:
    """[portal]: where the web portal and REST API listen, the base URL put in mailed
    links (`public_url`, default http://<listen>) and the link-signing `secret` (None:
    a random one persisted in the store). `language` ("en" or "nl") and `timezone` (an
    IANA name) are the defaults of the stored settings of the same names: the language
    of the portal, the mails and the spoken notice, and the zone times are shown in."""

    listen: HostPort
    public_url: str | None = None
    secret: str | None = None
    # Serve Prometheus metrics (no login) at /metrics.
    metrics: bool = False
    language: str = DEFAULT_LANGUAGE
    timezone: str = DEFAULT_TIMEZONE

    @property
    def base_url(self) -> str:
        """The portal's URL as people reach it, without a trailing slash."""
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        return f"http://{self.listen}"

    def link_warning(self) -> str | None:
        """Why the links callrec mails will not reach people, if they will not: no
        `public_url` while the portal listens on a wildcard (0.0.0.0, ::) or loopback
        address, which a reader elsewhere cannot open. None when links look usable."""
        if self.public_url is not None:
            return None
        try:
            address = ipaddress.ip_address(self.listen.host)
        except ValueError:
            if self.listen.host.lower() != "localhost":
                return None  # a host name: presumably how people reach the portal
        else:
            if not (address.is_unspecified or address.is_loopback):
                return None
        return (
            f"[portal] public_url is not set, so links in e-mails point to {self.base_url},"
            " which people elsewhere cannot open; set public_url to the portal's address"
            " as people reach it (e.g. https://rec.example.org)"
        )


@dataclass(frozen=True)
class SmtpConfig:
    """[smtp]: the mail relay for notifications (optionally STARTTLS and a login)."""

    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    """[server]: how the `callrec serve` process runs. `loop`: the asyncio event loop,
    "uvloop" (required), "asyncio" (the standard one) or "auto" (uvloop when installed)."""

    loop: str = "auto"
    # "text" (one line per event, for people) or "json" (one JSON object per line with
    # `call_id` when the event belongs to a call, for log collectors).
    log_format: str = "text"


@dataclass(frozen=True)
class ClusterConfig:
    """[cluster]: nodes sharing one store (PostgreSQL). Each writes its heartbeat every
    `node_timeout` / 3 seconds; a node silent for `node_timeout` seconds is dead, and
    another node closes its open calls as interrupted and their recordings as partial
    (`storage.nodes`). Unused on a store of one node (SQLite)."""

    node_timeout: float = 15.0

    @property
    def heartbeat_interval(self) -> float:
        return self.node_timeout / 3


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `[server] loop` asks for: uvloop's for "uvloop", and for "auto"
    when it is installed; None (asyncio's own) otherwise. ConfigError if "uvloop" is
    asked for and missing."""
    if choice == "asyncio":
        return None
    try:
        uvloop: Any = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "[server] loop: uvloop is not installed (pip install uvloop)"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


@dataclass(frozen=True)
class Config:
    """The whole configuration; `source` is the file it came from (None: defaults)."""

    sip: SipConfig
    trunk: TrunkConfig
    media: MediaConfig
    recording: RecordingConfig
    storage: StorageConfig
    retention: RetentionConfig
    portal: PortalConfig
    smtp: SmtpConfig
    server: ServerConfig = ServerConfig()
    cluster: ClusterConfig = ClusterConfig()
    source: Path | None = None

    @property
    def recording_settings(self) -> RecordingSettings:
        """The recording settings this file gives, before the stored settings."""
        recording = self.recording
        return RecordingSettings(
            feature_code=recording.feature_code,
            retention_days=self.retention.default_days,
            announcement=recording.announcement,
            channels=recording.channels,
            format=recording.format,
            paused=recording.paused,
            swallow_feature_code=recording.swallow_feature_code,
            language=self.portal.language,
            timezone=self.portal.timezone,
        )


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
# [trunk] identity: which header asserts the caller toward the trunk.
TRUNK_IDENTITY_MODES = ("from", "pai")
# [trunk] srtp: plain RTP, SRTP offered, or SRTP only toward the trunk.
TRUNK_SRTP_MODES = ("off", "offer", "require")
DTMF_INTERWORKING_MODES = ("none", "inband", "info")
# [server] loop: which asyncio event loop `callrec serve` runs on.
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
# [server] log_format: how `callrec serve` writes its log lines.
LOG_FORMATS = ("text", "json")
# [sip] tls_client_certificates: whether phones must show a certificate tls_ca signed.
TLS_CLIENT_CERTIFICATES = ("none", "optional", "required")
SIP_TLS_PORT = 5061
MAX_MEDIA_WORKERS = 256


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_show(value)}")
    return value


def _nonempty(value: object) -> str:
    text = _string(value)
    if not text.strip():
        raise _Invalid("expected a non-empty string, got ''")
    return text


def _is_database_url(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


def _database(value: object) -> str:
    """A SQLite file name, or a PostgreSQL URL with a host and a database name."""
    text = _nonempty(value)
    if _is_database_url(text):
        parts = urlsplit(text)
        if not parts.hostname or not parts.path.strip("/"):
            raise _Invalid("expected postgresql://user:password@host:port/database")
    elif "://" in text:
        raise _Invalid("expected a file name or a postgresql:// URL")
    return text


def _integer(value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected an integer {low}-{high}, got {_show(value)}")
    if not low <= value <= high:
        raise _Invalid(f"expected an integer {low}-{high}, got {value}")
    return value


def _port(value: object) -> int:
    return _integer(value, 1, 65535)


def _choice(value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        options = " or ".join(repr(choice) for choice in choices)
        raise _Invalid(f"expected {options}, got {_show(value)}")
    return value


def _host(text: str) -> str:
    """An IP literal (canonical form) or a DNS name; raises _Invalid."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(text):
        raise _Invalid(f"expected an IP address or host name, got {text!r}")
    return text


def parse_host_port(text: str) -> HostPort:
    """Parse "host:port", "1.2.3.4:5060" or "[::1]:5060"; raises ValueError."""
    try:
        return _host_port(text)
    except _Invalid as exc:
        raise ValueError(str(exc)) from None


def _host_port(value: object) -> HostPort:
    text = _string(value)
    expected = f"expected 'HOST:PORT' (IPv6 as '[::1]:5060'), got {text!r}"
    match = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text)
    if match is None:
        raise _Invalid(expected)
    if match.group(1) is not None:
        try:
            host = str(ipaddress.IPv6Address(match.group(1)))
        except ValueError:
            raise _Invalid(expected) from None
        port_text = match.group(2)
    else:
        host = _host(match.group(3))
        port_text = match.group(4)
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise _Invalid(f"port must be 1-65535, got {text!r}")
    return HostPort(host, port)


def _ip_address(value: object) -> str:
    text = _string(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _Invalid(f"expected an IP address, got {text!r}") from None


def _rtp_ports(value: object) -> tuple[int, int]:
    text = _string(value)
    match = re.fullmatch(r"(\d{1,5})-(\d{1,5})", text.strip())
    first, last = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if match is None or first % 2 or not 1024 <= first < last <= 65535:
        raise _Invalid(f"expected 'FIRST-LAST' with even FIRST < LAST (1024-65535), got {text!r}")
    return first, last


def _seconds(value: object, low: float, high: float, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _Invalid(f"expected {expected}, got {_show(value)}")
    return float(value)


def _timeout(value: object) -> float:
    return _seconds(value, 1, 3600, "seconds (a number 1-3600)")


def _optional_timeout(value: object) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return _seconds(value, 1, 86400, "seconds (0 for never, or 1-86400)")


def _code_timeout(value: object) -> float:
    return _seconds(value, 0.5, 10, "seconds between 0.5 and 10")


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _email(value: object) -> str:
    text = _string(value)
    if not _EMAIL.fullmatch(text):
        raise _Invalid(f"expected an email address, got {text!r}")
    return text


@dataclass(frozen=True)
class _TrunkUri:
    uri: str
    host: str
    port: int
    transport: str


def _trunk_uri(value: object) -> _TrunkUri:
    text = _string(value)
    expected = (
        f"expected 'sip:HOST[:PORT][;transport=udp|tcp|tls]' or 'sips:HOST[:PORT]', got {text!r}"
    )
    match = re.fullmatch(
        r"(?i)(sips?):(?:[^@\s]+@)?(\[[^\]]+\]|[^:;?\s\[\]@]+)(?::(\d{1,5}))?((?:;[^;?\s]*)*)",
        text.strip(),
    )
    if match is None:
        raise _Invalid(expected)
    scheme, host_text, port_text, params_text = match.groups()
    if host_text.startswith("["):
        try:
            host = str(ipaddress.IPv6Address(host_text[1:-1]))
        except ValueError:
            raise _Invalid(expected) from None
    else:
        try:
            host = _host(host_text)
        except _Invalid:
            raise _Invalid(expected) from None
    secure = scheme.lower() == "sips"
    port = int(port_text) if port_text else (5061 if secure else 5060)
    if not 1 <= port <= 65535:
        raise _Invalid(expected)
    transport = "tls" if secure else "udp"
    for param in params_text.split(";")[1:]:
        name, _, param_value = param.partition("=")
        if name.lower() == "transport":
            transport = param_value.lower()
    if secure:
        # RFC 5630: a sips: URI is TLS on every hop; ";transport=tcp" means TLS over TCP.
        if transport not in ("tcp", "tls"):
            raise _Invalid(f"a sips: URI goes over TLS, not {transport}, got {text!r}")
        transport = "tls"
    elif transport not in ("udp", "tcp", "tls"):
        raise _Invalid(f"transport must be udp, tcp or tls, got {text!r}")
    return _TrunkUri(text.strip(), host, port, transport)


def _digest_algorithms(value: object) -> tuple[str, ...]:
    return _distinct_choices(value, ("SHA-256", "MD5"))


def _distinct_choices(value: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A non-empty list of distinct values from `allowed`, in the order given."""
    if (
        not isinstance(value, list)
        or not value
        or any(item not in allowed for item in value)
        or len(set(value)) != len(value)
    ):
        raise _Invalid(
            f"expected a list of distinct values among {list(allowed)}, got {_show(value)}"
        )
    return tuple(value)


def _trusted(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of IP addresses or host names, got {_show(value)}")
    hosts: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise _Invalid(f"expected a list of strings, got an element {_show(item)}")
        hosts.append(_host(item))
    return tuple(hosts)


def _proxies(value: object) -> tuple[str, ...]:
    """[sip] proxies: IP addresses, not names, since a source address is compared."""
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of IP addresses, got {_show(value)}")
    return tuple(_ip_address(item) for item in value)


# section -> key -> (default, parser). A parser takes the raw TOML value and the
# folder relative paths are resolved against.
_Parser = Callable[[Any, Path], Any]
_SCHEMA: dict[str, dict[str, tuple[Any, _Parser]]] = {
    "sip": {
        "listen": ("127.0.0.1:5060", lambda v, _: _host_port(v)),
        "realm": ("callrec", lambda v, _: _realm(v)),
        "user_agent": ("callrec", lambda v, _: _nonempty(v)),
        "digest_algorithms": (["MD5"], lambda v, _: _digest_algorithms(v)),
        "nonce_lifetime": (60.0, lambda v, _: _seconds(v, 5, 3600, "seconds (a number 5-3600)")),
        "auth_max_failures": (10, lambda v, _: _integer(v, 1, 1000)),
        "auth_failure_window": (60.0, lambda v, _: _timeout(v)),
        "auth_lockout": (300.0, lambda v, _: _seconds(v, 1, 86400, "seconds (a number 1-86400)")),
        "max_contacts": (10, lambda v, _: _integer(v, 1, 100)),
        "tcp_max_connections": (2000, lambda v, _: _integer(v, 1, 1_000_000)),
        "tcp_max_per_source": (200, lambda v, _: _integer(v, 1, 1_000_000)),
        "tcp_idle_timeout": (60.0, lambda v, _: _seconds(v, 0.1, 3600, "seconds (0.1-3600)")),
        "tcp_message_timeout": (10.0, lambda v, _: _seconds(v, 0.1, 600, "seconds (0.1-600)")),
        "listen_tls": (None, lambda v, _: _host_port(v)),
        "tls_certificate": (None, lambda v, base: _readable_file(v, base)),
        "tls_key": (None, lambda v, base: _readable_file(v, base)),
        "tls_ca": (None, lambda v, base: _readable_file(v, base)),
        "tls_client_certificates": ("none", lambda v, _: _choice(v, TLS_CLIENT_CERTIFICATES)),
        "tls_handshake_timeout": (10.0, lambda v, _: _seconds(v, 0.1, 600, "seconds (0.1-600)")),
        "tls_phone_srtp": ("offer", lambda v, _: _choice(v, TRUNK_SRTP_MODES)),
        "proxies": ([], lambda v, _: _proxies(v)),
    },
    "trunk": {
        "uri": ("sip:127.0.0.1:5080", lambda v, _: _trunk_uri(v)),
        "trusted": (None, lambda v, _: _trusted(v)),
        "identity": ("from", lambda v, _: _choice(v, TRUNK_IDENTITY_MODES)),
        "from_domain": (None, lambda v, _: _host(_string(v))),
        "srtp": ("off", lambda v, _: _choice(v, TRUNK_SRTP_MODES)),
    },
    "media": {
        "address": ("127.0.0.1", lambda v, _: _ip_address(v)),
        "rtp_ports": ("20000-29999", lambda v, _: _rtp_ports(v)),
        "rtp_timeout": (30.0, lambda v, _: _timeout(v)),
        "hangup_after_silence": (120.0, lambda v, _: _optional_timeout(v)),
        "nat": (True, lambda v, _: _boolean(v)),
        "latch_window": (3.0, lambda v, _: _seconds(v, 0.5, 30, "seconds between 0.5 and 30")),
        "workers": (None, lambda v, _: _integer(v, 1, MAX_MEDIA_WORKERS)),
        "dtmf_interworking": ("none", lambda v, _: _choice(v, DTMF_INTERWORKING_MODES)),
        "srtp_suites": (list(SRTP_SUITES), lambda v, _: _distinct_choices(v, SRTP_SUITES)),
    },
    "recording": {
        "channels": ("mono", lambda v, _: _choice(v, CHANNELS)),
        "format": ("wav", lambda v, _: _choice(v, FORMATS)),
        "feature_code": (DEFAULT_FEATURE_CODE.text, lambda v, _: FeatureCode.parse(_string(v))),
        "announcement": ("default", lambda v, base: _announcement(v, base)),
        "feature_code_timeout": (2.0, lambda v, _: _code_timeout(v)),
        "paused": ("skip", lambda v, _: _choice(v, PAUSED_MODES)),
        "swallow_feature_code": (False, lambda v, _: _boolean(v)),
    },
    "storage": {
        "dir": ("./callrec-data", lambda v, base: _folder(v, base)),
        "db": ("callrec.db", lambda v, _: _database(v)),
        "objects": (None, lambda v, _: _objects_url(v)),
        "s3_endpoint": (None, lambda v, _: _http_url(v)),
        "s3_region": (None, lambda v, _: _nonempty(v)),
        "s3_access_key": (None, lambda v, _: _nonempty(v)),
        "s3_secret_key": (None, lambda v, _: _nonempty(v)),
        "upload_queue_alarm": (100, lambda v, _: _integer(v, 1, 10_000_000)),
        "upload_retry_max": (60.0, lambda v, _: _seconds(v, 1, 3600, "seconds (1-3600)")),
    },
    "retention": {
        "default_days": (
            DEFAULT_RETENTION_DAYS,
            lambda v, _: _integer(v, RETENTION_MIN_DAYS, RETENTION_MAX_DAYS),
        ),
    },
    "portal": {
        "listen": ("127.0.0.1:8080", lambda v, _: _host_port(v)),
        "public_url": (None, lambda v, _: _http_url(v)),
        "secret": (None, lambda v, _: _secret(v)),
        "metrics": (False, lambda v, _: _boolean(v)),
        "language": (DEFAULT_LANGUAGE, lambda v, _: parse_language(_string(v))),
        "timezone": (DEFAULT_TIMEZONE, lambda v, _: parse_timezone(_string(v))),
    },
    "server": {
        "loop": ("auto", lambda v, _: _choice(v, EVENT_LOOPS)),
        "log_format": ("text", lambda v, _: _choice(v, LOG_FORMATS)),
    },
    "cluster": {
        "node_timeout": (15.0, lambda v, _: _seconds(v, 1, 3600, "seconds (a number 1-3600)")),
    },
    "smtp": {
        "host": ("127.0.0.1", lambda v, _: _host(_nonempty(v))),
        "port": (25, lambda v, _: _port(v)),
        "sender": ("callrec@localhost", lambda v, _: _email(v)),
        "starttls": (False, lambda v, _: _boolean(v)),
        "username": (None, lambda v, _: _nonempty(v)),
        "password": (None, lambda v, _: _string(v)),
    },
}


def _http_url(value: object) -> str:
    """An absolute http(s) URL with a host and an optional path: the base of the links
    mailed to people (no user name, query or fragment, which a link would garble)."""
    text = _nonempty(value).strip()
    problem = None
    if not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#]*)?", text, flags=re.IGNORECASE):
        problem = "expected an absolute http:// or https:// URL such as https://rec.example.org"
    else:
        parts = urlsplit(text)
        try:
            port = parts.port  # ValueError past 65535 or not a number
        except ValueError:
            port = 0
        if port == 0:
            problem = "the port must be a number from 1 to 65535"
        if not parts.hostname:
            problem = "the URL has no host"
    if problem is not None:
        raise _Invalid(f"{problem}, got {text!r}")
    return text


def _objects_url(value: object) -> str:
    """[storage] objects: "s3://bucket" or "s3://bucket/prefix"."""
    text = _nonempty(value).strip()
    if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s]*)?", text) or (
        ".." in text.split("/")
    ):
        raise _Invalid(f"expected 's3://BUCKET[/PREFIX]' (a lower-case bucket name), got {text!r}")
    return text


def _secret(value: object) -> str:
    text = _nonempty(value)
    if len(text) < 16:
        raise _Invalid("expected at least 16 characters")
    return text


def _realm(value: object) -> str:
    text = _nonempty(value)
    if '"' in text or "\\" in text:
        raise _Invalid(f"must not contain quotes or backslashes, got {text!r}")
    return text


def _announcement(value: object, base: Path) -> str:
    text = _nonempty(value)
    if text in ANNOUNCEMENTS:
        return text
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        keywords = ", ".join(repr(keyword) for keyword in ANNOUNCEMENTS)
        raise _Invalid(f"expected {keywords} or an existing file, got {text!r}")
    return str(path.resolve())


def _folder(value: object, base: Path) -> Path:
    path = Path(_nonempty(value)).expanduser()
    if not path.is_absolute():
        path = base / path
    if path.exists() and not path.is_dir():
        raise _Invalid(f"expected a folder, but {str(path)!r} is a file")
    return path.resolve()


def _parse(document: Mapping[str, Any], base: Path, source: Path | None) -> Config:
    for section, table in document.items():
        if section not in _SCHEMA:
            if isinstance(table, dict):
                raise ConfigError(
                    f"unknown section [{section}] (expected one of {', '.join(_SCHEMA)})"
                )
            raise ConfigError(f"{section}: unknown key outside any section")
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}]: expected a table, got {_show(table)}")
        for key in table:
            if key not in _SCHEMA[section]:
                raise ConfigError(
                    f"[{section}] {key}: unknown key "
                    f"(expected one of {', '.join(_SCHEMA[section])})"
                )
    values: dict[str, dict[str, Any]] = {}
    for section, keys in _SCHEMA.items():
        table = document.get(section, {})
        values[section] = {}
        for key, (default, parser) in keys.items():
            raw = table.get(key, default)
            if raw is None:
                values[section][key] = None
                continue
            try:
                values[section][key] = parser(raw, base)
            except (_Invalid, PolicyError) as exc:
                raise ConfigError(f"[{section}] {key}: {exc}") from None

    trunk_uri: _TrunkUri = values["trunk"]["uri"]
    rtp_first, rtp_last = values["media"]["rtp_ports"]
    return Config(
        sip=_sip_tls(SipConfig(**values["sip"]), trunk_uri),
        trunk=TrunkConfig(
            uri=trunk_uri.uri,
            host=trunk_uri.host,
            port=trunk_uri.port,
            transport=trunk_uri.transport,
            trusted=values["trunk"]["trusted"] or (),
            identity=values["trunk"]["identity"],
            from_domain=values["trunk"]["from_domain"],
            srtp=values["trunk"]["srtp"],
        ),
        media=MediaConfig(
            address=values["media"]["address"],
            rtp_port_first=rtp_first,
            rtp_port_last=rtp_last,
            rtp_timeout=values["media"]["rtp_timeout"],
            hangup_after_silence=values["media"]["hangup_after_silence"],
            nat=values["media"]["nat"],
            latch_window=values["media"]["latch_window"],
            workers=_media_workers(values["media"]["workers"], rtp_first, rtp_last),
            dtmf_interworking=values["media"]["dtmf_interworking"],
            srtp_suites=values["media"]["srtp_suites"],
        ),
        recording=RecordingConfig(**values["recording"]),
        storage=StorageConfig(**values["storage"]),
        retention=RetentionConfig(**values["retention"]),
        portal=PortalConfig(**values["portal"]),
        smtp=SmtpConfig(**values["smtp"]),
        server=ServerConfig(**values["server"]),
        cluster=ClusterConfig(**values["cluster"]),
        source=source,
    )


def _readable_file(value: object, base: Path) -> Path:
    path = Path(_nonempty(value)).expanduser()
    if not path.is_absolute():
        path = base / path
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        raise _Invalid(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return path.resolve()


def _sip_tls(sip: SipConfig, trunk: _TrunkUri) -> SipConfig:
    """[sip] tls_* checked together (files that hold what they should, a key that
    matches the certificate), with `listen_tls` defaulted; SIP over TLS toward the trunk
    needs them, since the trunk sends its requests to callrec's TLS port."""
    if sip.tls_certificate is None:
        for key in ("listen_tls", "tls_key", "tls_ca"):
            if getattr(sip, key) is not None:
                raise ConfigError(f"[sip] {key}: needs tls_certificate (TLS is off without it)")
        if sip.tls_client_certificates != "none":
            raise ConfigError("[sip] tls_client_certificates: needs tls_certificate and tls_ca")
        if trunk.transport == "tls":
            raise ConfigError(
                f"[trunk] uri: {trunk.uri!r} is over TLS, which needs [sip] tls_certificate"
                " (and tls_key): callrec must listen on TLS for the trunk's requests"
            )
        return sip
    _check_certificates(sip.tls_certificate, "tls_certificate")
    if sip.tls_ca is not None:
        _check_certificates(sip.tls_ca, "tls_ca")
    elif sip.tls_client_certificates != "none":
        raise ConfigError(
            f"[sip] tls_client_certificates: {sip.tls_client_certificates!r} needs tls_ca"
            " (the CA that signs the phones' certificates)"
        )
    try:
        # A password callback that gives none: an encrypted key fails here, no prompt.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            sip.tls_certificate, sip.tls_key, password=lambda: b""
        )
    except (ssl.SSLError, OSError) as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(
                f"[sip] tls_key: {str(sip.tls_key)!r} does not match the certificate"
                f" {str(sip.tls_certificate)!r}"
            ) from None
        where = "tls_key" if sip.tls_key is not None else "tls_certificate"
        shown = sip.tls_key if sip.tls_key is not None else sip.tls_certificate
        raise ConfigError(
            f"[sip] {where}: no usable private key in {str(shown)!r} (PEM, not encrypted"
            f"{'' if sip.tls_key is not None else '; or set tls_key'}): {exc}"
        ) from None
    listen_tls = sip.listen_tls or HostPort(sip.listen.host, SIP_TLS_PORT)
    if listen_tls == sip.listen:
        raise ConfigError(
            f"[sip] listen_tls: {listen_tls} is also [sip] listen (TCP): give TLS its own port"
        )
    return replace(sip, listen_tls=listen_tls)


def _check_certificates(path: Path, key: str) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"[sip] {key}: no PEM certificate in {str(path)!r}: {exc}") from None


def _media_workers(workers: int | None, rtp_first: int, rtp_last: int) -> int:
    """[media] workers, checked against the port range: each worker needs two port
    pairs (one call). Unset: one per core, as many as the range allows."""
    pairs = (rtp_last - rtp_first + 1) // 2
    if workers is None:
        return max(1, min(os.cpu_count() or 1, pairs // 2))
    if pairs < 2 * workers:
        raise ConfigError(
            f"[media] workers: {workers} workers need at least {4 * workers} RTP ports"
            f" (two pairs each); rtp_ports {rtp_first}-{rtp_last} holds {pairs} pair(s)"
        )
    return workers


def load_config(path: str | Path | None) -> Config:
    """Read and check a TOML file; None gives the embedded defaults."""
    if path is None:
        return _parse({}, Path.cwd(), None)
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    return _parse(document, source.resolve().parent, source.resolve())
