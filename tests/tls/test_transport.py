"""SIP over TLS in `SipTransport`, on loopback sockets with `trustme` certificates, on
both event loops (conftest.py): the handshake and framing, the TCP caps counting
connections still in their handshake, the handshake timeout, client certificates when
required, the header cap, plain SIP sent to the TLS port, and outgoing TLS with its
certificate checks."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trustme

from b2bua.peer import Peer
from b2bua.tls import TlsSettings
from b2bua.transport import ListenError, SipTransport, TcpLimits
from testkit.waiting import wait_until_async
from tests.b2bua.test_transport import Received, closed_by_server, options


@dataclass
class Pki:
    ca: trustme.CA
    server: trustme.LeafCert
    phone: trustme.LeafCert  # a client certificate the CA signed
    stranger: trustme.LeafCert  # one another CA signed


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = trustme.CA()
    return Pki(
        ca,
        ca.issue_cert("127.0.0.1", "localhost"),
        ca.issue_cert("phone-100.example"),
        trustme.CA().issue_cert("phone-100.example"),
    )


def settings(pki: Pki, verify: ssl.VerifyMode = ssl.CERT_NONE, timeout: float = 5.0) -> TlsSettings:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.server.configure_cert(server)
    server.verify_mode = verify
    pki.ca.configure_trust(server)
    client = ssl.create_default_context()
    pki.ca.configure_trust(client)
    return TlsSettings("127.0.0.1", 0, server, client, handshake_timeout=timeout)


def phone_context(pki: Pki, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    pki.ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


async def start(
    pki: Pki,
    limits: TcpLimits | None = None,
    *,
    verify: ssl.VerifyMode = ssl.CERT_NONE,
    timeout: float = 5.0,
) -> tuple[SipTransport, Received]:
    received = Received()
    sip = SipTransport(
        "127.0.0.1", 0, received, limits or TcpLimits(), tls=settings(pki, verify, timeout)
    )
    await sip.start()
    return sip, received


@pytest.fixture
async def tls(pki: Pki) -> AsyncIterator[tuple[SipTransport, Received]]:
    sip, received = await start(pki)
    try:
        yield sip, received
    finally:
        await sip.close()


async def open_tls(
    port: int, context: ssl.SSLContext, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1", local_addr=(source, 0)
    )


async def test_messages_over_tls_are_framed_and_answered_on_the_same_connection(
    tls: tuple[SipTransport, Received], pki: Pki
) -> None:
    sip, received = tls
    assert sip.tls_port and sip.tls_port != sip.port
    reader, writer = await open_tls(sip.tls_port, phone_context(pki))
    first, second = options(sip.tls_port, "TLS"), options(sip.tls_port, "TLS")
    writer.write(first + second[:40])  # one and a half messages in one record
    await writer.drain()
    await wait_until_async(lambda: len(received.messages) == 1, timeout=3, what="message 1")
    writer.write(second[40:])
    await wait_until_async(lambda: len(received.messages) == 2, timeout=3, what="message 2")
    assert [data for data, _ in received.messages] == [first, second]
    peer = received.messages[0][1]
    assert peer.transport == "tls" and peer.host == "127.0.0.1"
    assert peer == Peer("127.0.0.1", writer.get_extra_info("sockname")[1], "tls")
    # Sending to that peer uses its connection: no new one is opened.
    sip.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", peer)
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3) == (
        b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    assert list(sip.tcp_connections) == [peer]
    writer.close()


async def test_plain_tcp_and_udp_keep_working_beside_tls(
    tls: tuple[SipTransport, Received],
) -> None:
    sip, received = tls
    _, writer = await asyncio.open_connection("127.0.0.1", sip.port)
    writer.write(options(sip.port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(options(sip.port, "UDP"), ("127.0.0.1", sip.port))
        await wait_until_async(
            lambda: {p.transport for _, p in received.messages} == {"tcp", "udp"},
            timeout=3,
            what="one message over TCP and one over UDP",
        )
    writer.close()


async def test_connections_in_their_handshake_count_against_the_caps(pki: Pki) -> None:
    limits = TcpLimits(max_connections=10, max_per_source=3, idle_timeout=60, message_timeout=10)
    sip, received = await start(pki, limits)
    assert sip.tls_port is not None
    try:
        # Three bare TCP connections to the TLS port, never starting a handshake.
        stalled = [
            await asyncio.open_connection("127.0.0.1", sip.tls_port, local_addr=("127.0.0.2", 0))
            for _ in range(3)
        ]
        await wait_until_async(
            lambda: sip.handshaking.get("127.0.0.2") == 3, timeout=3, what="three handshakes"
        )
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", sip.tls_port, local_addr=("127.0.0.2", 0)
        )
        assert await closed_by_server(reader, 2.0)
        assert sip.refused == 1
        # Plain TCP from that source is over the same cap: TLS and TCP share it.
        reader2, writer2 = await asyncio.open_connection(
            "127.0.0.1", sip.port, local_addr=("127.0.0.2", 0)
        )
        assert await closed_by_server(reader2, 2.0)
        assert sip.refused == 2
        # Another source completes its handshake and is heard.
        _, phone = await open_tls(sip.tls_port, phone_context(pki), "127.0.0.3")
        phone.write(options(sip.tls_port, "TLS"))
        await wait_until_async(lambda: received.messages, timeout=3, what="a message")
        for _, w in [*stalled, (reader, writer), (reader2, writer2)]:
            w.close()
        phone.close()
    finally:
        await sip.close()


async def test_a_handshake_that_does_not_finish_in_time_is_closed(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    sip, _ = await start(pki, timeout=0.3)
    assert sip.tls_port is not None
    try:
        caplog.set_level(logging.WARNING, "callrec.transport")
        reader, writer = await asyncio.open_connection("127.0.0.1", sip.tls_port)
        writer.write(b"\x16\x03\x01")  # the first bytes of a ClientHello, then silence
        assert await closed_by_server(reader, 3.0)
        await wait_until_async(lambda: sip.handshake_failures == 1, timeout=3, what="failure")
        assert not sip.handshaking and not sip.tcp_connections
        assert "not completed within 0.3 s" in caplog.text
        writer.close()
    finally:
        await sip.close()


async def test_plain_sip_sent_to_the_tls_port_is_refused_not_read(
    tls: tuple[SipTransport, Received],
) -> None:
    sip, received = tls
    assert sip.tls_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", sip.tls_port)
    writer.write(options(sip.tls_port))
    assert await closed_by_server(reader, 3.0)
    await wait_until_async(lambda: sip.handshake_failures == 1, timeout=3, what="failure")
    assert received.messages == []
    writer.close()


async def test_a_20_kib_header_over_tls_closes_the_connection(
    tls: tuple[SipTransport, Received], pki: Pki
) -> None:
    sip, received = tls
    assert sip.tls_port is not None
    reader, writer = await open_tls(sip.tls_port, phone_context(pki))
    head = options(sip.tls_port, "TLS").replace(
        b"Content-Length", b"X-Pad: " + b"a" * 20 * 1024 + b"\r\nContent-Length"
    )
    writer.write(head)
    assert await closed_by_server(reader, 3.0)
    assert received.messages == []
    writer.close()


async def test_required_client_certificates_refuse_phones_without_one_or_with_a_stranger(
    pki: Pki,
) -> None:
    sip, received = await start(pki, verify=ssl.CERT_REQUIRED)
    assert sip.tls_port is not None
    try:
        for cert in (None, pki.stranger):
            # TLS 1.3: the client's handshake ends before the server checked its
            # certificate; the refusal shows as the connection closing.
            try:
                reader, writer = await open_tls(sip.tls_port, phone_context(pki, cert))
            except (ssl.SSLError, ConnectionError):
                continue
            writer.write(options(sip.tls_port, "TLS"))
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), 3)
            writer.close()
        await wait_until_async(lambda: sip.handshake_failures == 2, timeout=3, what="refusals")
        assert received.messages == []
        # The phone with a certificate the CA signed gets in.
        _, writer = await open_tls(sip.tls_port, phone_context(pki, pki.phone))
        writer.write(options(sip.tls_port, "TLS"))
        await wait_until_async(lambda: received.messages, timeout=3, what="the phone's message")
        writer.close()
    finally:
        await sip.close()


async def trunk_listener(
    context: ssl.SSLContext,
) -> tuple[asyncio.Server, int, list[bytes]]:
    chunks: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            chunks.append(data)

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1], chunks


async def test_outgoing_tls_verifies_the_peer_and_delivers_what_was_queued(
    tls: tuple[SipTransport, Received], pki: Pki
) -> None:
    sip, _ = tls
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.server.configure_cert(context)
    server, port, chunks = await trunk_listener(context)
    async with server:
        trunk = Peer("127.0.0.1", port, "tls")
        sip.send(b"first", trunk)
        sip.send(b"second", trunk)
        await wait_until_async(
            lambda: b"".join(chunks) == b"firstsecond", timeout=3, what="both messages"
        )
        assert trunk in sip.tcp_connections  # later sends reuse it
        sip.send(b"third", trunk)
        await wait_until_async(
            lambda: b"".join(chunks).endswith(b"third"), timeout=3, what="the third"
        )


async def test_outgoing_tls_to_a_peer_with_an_untrusted_certificate_sends_nothing(
    tls: tuple[SipTransport, Received], caplog: pytest.LogCaptureFixture
) -> None:
    sip, _ = tls
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    server, port, chunks = await trunk_listener(context)
    caplog.set_level(logging.WARNING, "callrec.transport")
    async with server:
        sip.send(b"secret", Peer("127.0.0.1", port, "tls"))
        await wait_until_async(
            lambda: "tls connect to 127.0.0.1" in caplog.text, timeout=5, what="the failure"
        )
        assert "certificate verify failed" in caplog.text
        assert chunks == [] and not sip.tcp_connections


async def test_outgoing_tls_checks_the_name_in_the_certificate(
    tls: tuple[SipTransport, Received], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    sip, _ = tls
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.ca.issue_cert("trunk.example").configure_cert(context)  # not 127.0.0.1
    server, port, chunks = await trunk_listener(context)
    caplog.set_level(logging.WARNING, "callrec.transport")
    async with server:
        sip.send(b"secret", Peer("127.0.0.1", port, "tls"))
        await wait_until_async(
            lambda: "tls connect to 127.0.0.1" in caplog.text, timeout=5, what="the failure"
        )
        assert "IP address mismatch" in caplog.text or "doesn't match" in caplog.text
        assert chunks == []


async def test_without_tls_settings_a_tls_peer_gets_nothing_and_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sip = SipTransport("127.0.0.1", 0, Received(), TcpLimits())
    await sip.start()
    caplog.set_level(logging.WARNING, "callrec.transport")
    try:
        assert sip.tls_port is None
        sip.send(b"x", Peer("127.0.0.1", 5061, "tls"))
        assert "SIP over TLS is not configured" in caplog.text
        assert not [t for t in asyncio.all_tasks() if "connect" in t.get_name()]
    finally:
        await sip.close()


async def test_a_tls_port_in_use_names_the_address_and_tls(pki: Pki) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = settings(pki)
        sip = SipTransport(
            "127.0.0.1",
            0,
            Received(),
            tls=TlsSettings("127.0.0.1", port, base.server, base.client),
        )
        with pytest.raises(ListenError) as error:
            await sip.start()
    assert str(error.value) == f"cannot listen on 127.0.0.1:{port}/tls: address in use"
    await sip.close()


async def test_close_ends_tls_tasks_and_connections(pki: Pki) -> None:
    sip, _ = await start(pki)
    assert sip.tls_port is not None
    stalled = await asyncio.open_connection("127.0.0.1", sip.tls_port)
    await wait_until_async(lambda: sip.handshaking, timeout=3, what="a handshake under way")
    await sip.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("sip-tls")]
    assert await closed_by_server(stalled[0], 3.0)
    stalled[1].close()
