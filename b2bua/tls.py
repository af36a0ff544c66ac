"""The TLS side of SIP over TLS: what `b2bua.transport` needs to listen and connect.

`TlsSettings` holds the two contexts, built once from `[sip] tls_*` (`tls_settings`):
- `server`: callrec's certificate and key; client certificates are not asked for
  ("none"), asked for and verified against `tls_ca` when shown ("optional"), or required
  ("required": a phone without one, or with one `tls_ca` did not sign, fails the
  handshake).
- `client`: for connections callrec opens (the trunk, a phone whose connection went
  away). The peer's certificate is verified against `tls_ca`, or the system store when
  it is unset, and must name the host connected to (SNI is that host). callrec shows its
  own certificate when the peer asks for one.
Both refuse TLS below 1.2. The config (`callrec.config`) has already checked the files,
so building the contexts here does not fail on a config that loaded.

`SSLKEYLOGFILE` in the environment makes both write their TLS secrets there (NSS key log
format, which Wireshark reads to decrypt a capture), as Python's default contexts, curl
and browsers do: a debugging aid, which tests use to read the SDES keys a phone sent
over TLS. Whoever can read that file reads the calls' SIP, SRTP keys included: never
set it in production.
"""

from __future__ import annotations

import os
import ssl
import sys
from dataclasses import dataclass

from callrec.config import SipConfig

_VERIFY = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True)
class TlsSettings:
    """Where and how callrec speaks SIP over TLS (see the module docstring)."""

    host: str
    port: int  # 0: any free port (tests)
    server: ssl.SSLContext
    client: ssl.SSLContext
    handshake_timeout: float = 10.0


def server_context(sip: SipConfig) -> ssl.SSLContext:
    assert sip.tls_certificate is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(sip.tls_certificate, sip.tls_key, password=lambda: b"")
    context.verify_mode = _VERIFY[sip.tls_client_certificates]
    if sip.tls_ca is not None:
        context.load_verify_locations(cafile=sip.tls_ca)
    # ssl.create_default_context (the client's) reads SSLKEYLOGFILE; a bare context not.
    key_log = os.environ.get("SSLKEYLOGFILE")
    if key_log and not sys.flags.ignore_environment:
        context.keylog_filename = key_log
    return context


def client_context(sip: SipConfig) -> ssl.SSLContext:
    if sip.tls_ca is not None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(sip.tls_ca))
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if sip.tls_certificate is not None:
        context.load_cert_chain(sip.tls_certificate, sip.tls_key, password=lambda: b"")
    return context


def tls_settings(sip: SipConfig) -> TlsSettings | None:
    """The TLS settings of `[sip]`, or None when TLS is off (no certificate)."""
    if not sip.tls or sip.listen_tls is None:
        return None
    return TlsSettings(
        host=sip.listen_tls.host,
        port=sip.listen_tls.port,
        server=server_context(sip),
        client=client_context(sip),
        handshake_timeout=sip.tls_handshake_timeout,
    )
