"""SIP transport limits: the sans-IO clock and admission on a fake clock, then the real
`SipTransport` on loopback sockets (caps, header size, idle and slowloris timeouts, UDP
at the TCP cap, and accept() out of descriptors in a child process)."""

from __future__ import annotations

import asyncio
import errno
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import pytest

import b2bua.transport as transport_module
from b2bua.peer import Peer
from b2bua.transport import (
    ConnectionClock,
    ListenError,
    RateLimitedLog,
    SipTransport,
    TcpLimits,
    admission,
)
from testkit.waiting import wait_until_async

LIMITS = TcpLimits(max_connections=10, max_per_source=4, idle_timeout=60, message_timeout=10)


def options(port: int, transport: str = "TCP") -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:1;branch=z9hG4bK1\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: x\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


# ------------------------------------------------------------------ sans-IO
def test_admission_caps_in_all_and_per_source() -> None:
    assert admission(LIMITS, 0, 0) is None
    assert admission(LIMITS, 9, 3) is None
    assert "tcp_max_per_source" in (admission(LIMITS, 5, 4) or "")
    assert "tcp_max_connections" in (admission(LIMITS, 10, 0) or "")


def test_a_connection_without_a_message_expires_after_the_idle_timeout() -> None:
    clock = ConnectionClock(100.0)
    assert clock.expiry(160.0, LIMITS) is None
    clock.received(150.0, complete=0, pending=0)  # CRLF only: not a message
    assert "no complete message" in (clock.expiry(160.5, LIMITS) or "")


def test_an_established_connection_lives_on_keepalives() -> None:
    clock = ConnectionClock(0.0)
    clock.received(1.0, complete=1, pending=0)
    for at in range(100, 10_000, 100):  # a CRLF keep-alive every 100 s
        clock.received(float(at), complete=0, pending=0)
        assert clock.expiry(at + 99.0, LIMITS) is None
    silent_from = 9_900.0
    assert clock.expiry(silent_from + LIMITS.established_idle_timeout - 1, LIMITS) is None
    assert "idle" in (clock.expiry(silent_from + LIMITS.established_idle_timeout + 1, LIMITS) or "")


def test_a_message_trickled_in_slowly_expires_even_on_an_established_connection() -> None:
    clock = ConnectionClock(0.0)
    clock.received(1.0, complete=1, pending=0)
    clock.received(2.0, complete=0, pending=10)
    for at in range(3, 12):  # a byte a second keeps traffic flowing
        clock.received(float(at), complete=0, pending=10 + at)
    assert "not completed within 10 s" in (clock.expiry(12.5, LIMITS) or "")


def test_a_message_completed_in_time_resets_the_message_clock() -> None:
    clock = ConnectionClock(0.0)
    clock.received(1.0, complete=0, pending=10)
    clock.received(5.0, complete=1, pending=0)
    assert clock.expiry(20.0, LIMITS) is None


def test_rate_limited_log_reports_at_most_once_per_interval_with_a_count() -> None:
    limiter = RateLimitedLog(1.0)
    reported = [limiter.note(i / 1000) for i in range(3000)]  # 3000 events in 3 s
    lines = [count for count in reported if count]
    assert len(lines) == 3
    assert sum(lines) == 3000 - 999  # the events of the last second are still held


# ------------------------------------------------------------------ real sockets
class Received:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, Peer]] = []
        self.event = asyncio.Event()

    def __call__(self, data: bytes, peer: Peer) -> None:
        self.messages.append((data, peer))
        self.event.set()


@pytest.fixture
async def transport() -> AsyncIterator[tuple[SipTransport, Received]]:
    received = Received()
    limits = TcpLimits(max_connections=6, max_per_source=3, idle_timeout=0.4, message_timeout=0.4)
    sip = SipTransport("127.0.0.1", 0, received, limits)
    await sip.start()
    try:
        yield sip, received
    finally:
        await sip.close()


async def connect(
    port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(65536), timeout)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return data == b""


async def test_connections_over_the_per_source_cap_are_closed_at_once(
    transport: tuple[SipTransport, Received],
) -> None:
    sip, _ = transport
    kept = [await connect(sip.port, "127.0.0.2") for _ in range(3)]
    await wait_until_async(
        lambda: len(sip.tcp_connections) == 3, timeout=3.0, what="three connections kept"
    )
    reader, writer = await connect(sip.port, "127.0.0.2")
    assert await closed_by_server(reader, 1.0)
    assert sip.refused == 1
    # Another source still gets in, and its message is delivered.
    reader3, writer3 = await connect(sip.port, "127.0.0.3")
    writer3.write(options(sip.port))
    await wait_until_async(
        lambda: any(p.host == "127.0.0.3" for _, p in transport[1].messages),
        timeout=3.0,
        what="a message from 127.0.0.3",
    )
    for _, w in [*kept, (reader, writer), (reader3, writer3)]:
        w.close()


async def test_the_overall_cap_holds_and_udp_still_works_at_it(
    transport: tuple[SipTransport, Received],
) -> None:
    sip, received = transport
    kept = []
    for source in ("127.0.0.2", "127.0.0.3"):
        kept += [await connect(sip.port, source) for _ in range(3)]
    await wait_until_async(
        lambda: len(sip.tcp_connections) == 6, timeout=3.0, what="six connections kept"
    )
    reader, writer = await connect(sip.port, "127.0.0.4")
    assert await closed_by_server(reader, 1.0)
    assert sip.refused == 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(options(sip.port, "UDP"), ("127.0.0.1", sip.port))
        await wait_until_async(
            lambda: any(p.transport == "udp" for _, p in received.messages),
            timeout=3.0,
            what="a message over UDP",
        )
    for _, w in [*kept, (reader, writer)]:
        w.close()


async def test_a_20_kib_header_closes_the_connection(
    transport: tuple[SipTransport, Received],
) -> None:
    sip, received = transport
    reader, writer = await connect(sip.port)
    head = options(sip.port).replace(
        b"Content-Length", b"X-Pad: " + b"a" * 20 * 1024 + b"\r\nContent-Length"
    )
    writer.write(head)
    assert await closed_by_server(reader, 2.0)
    assert received.messages == []
    writer.close()


async def test_idle_and_slowloris_connections_are_closed_but_a_busy_one_is_kept(
    transport: tuple[SipTransport, Received],
) -> None:
    sip, received = transport
    idle_reader, idle_writer = await connect(sip.port)
    slow_reader, slow_writer = await connect(sip.port)
    busy_reader, busy_writer = await connect(sip.port)
    busy_writer.write(options(sip.port))
    await wait_until_async(
        lambda: len(received.messages) == 1, timeout=3.0, what="the first message"
    )
    message = options(sip.port)

    async def trickle() -> None:
        for i in range(len(message) - 1):
            slow_writer.write(message[i : i + 1])
            await asyncio.sleep(0.02)  # a byte every 20 ms is the slowloris under test

    trickling = asyncio.create_task(trickle())
    started = time.monotonic()
    assert await closed_by_server(idle_reader, 3.0)
    assert await closed_by_server(slow_reader, 3.0)
    assert time.monotonic() - started < 2.0
    trickling.cancel()
    # The established connection keeps going on CRLF keep-alives (and gets its pong).
    for _ in range(4):
        busy_writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(busy_reader.readexactly(2), 1.0) == b"\r\n"
        # Under test: real time passes (0.8 s in all, past the 0.4 s idle and message
        # timeouts) and the keep-alives alone keep the connection open.
        await asyncio.sleep(0.2)
    assert len(sip.tcp_connections) == 1
    for w in (idle_writer, slow_writer, busy_writer):
        w.close()


def transport_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("sip-tcp")]


async def test_an_outgoing_connection_delivers_what_was_sent_before_it_was_up(
    transport: tuple[SipTransport, Received],
) -> None:
    sip, _ = transport
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        peer = Peer("127.0.0.1", listener.getsockname()[1], "tcp")
        sip.send(b"first", peer)
        sip.send(b"second", peer)  # queued behind the same connect, not a second one
        assert len([t for t in transport_tasks() if "connect" in t.get_name()]) == 1
        loop = asyncio.get_running_loop()
        accepted, _ = await asyncio.wait_for(loop.sock_accept(listener), 3.0)
        with accepted:
            received = b""
            while received != b"firstsecond":
                chunk = await asyncio.wait_for(loop.sock_recv(accepted, 64), 3.0)
                assert chunk, received
                received += chunk
    await wait_until_async(
        lambda: not [t for t in transport_tasks() if "connect" in t.get_name()],
        timeout=3.0,
        what="the connect task to end",
    )


async def test_close_ends_every_task_of_the_transport_including_pending_connects() -> None:
    sip = SipTransport("127.0.0.1", 0, Received(), TcpLimits())
    await sip.start()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sip.send(b"hello", Peer("127.0.0.1", listener.getsockname()[1], "tcp"))
        names = sorted(task.get_name().split("-")[2] for task in transport_tasks())
        assert names == ["accept", "connect", "expire"]
        await sip.close()
    assert transport_tasks() == []
    sip.send(b"after close", Peer("127.0.0.1", 9, "tcp"))  # starts nothing
    assert transport_tasks() == []


async def test_a_port_in_use_names_the_address_and_the_transport() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as error:
            await SipTransport("127.0.0.1", port, Received()).start()
    assert str(error.value) == f"cannot listen on 127.0.0.1:{port}/udp: address in use"
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    udp.close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(ListenError) as error:
            await SipTransport("127.0.0.1", port, Received()).start()
    assert str(error.value) == f"cannot listen on 127.0.0.1:{port}/tcp: address in use"


CHILD = textwrap.dedent(
    """
    import asyncio, logging, resource, sys
    from b2bua.transport import SipTransport, TcpLimits
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")

    async def main():
        sip = SipTransport("127.0.0.1", 0, lambda data, peer: None, TcpLimits())
        await sip.start()
        # Few descriptors left: accept() fails with EMFILE while the clients stay.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        import os
        used = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 8, hard))
        print("PORT", sip.port, flush=True)
        # Under test: how often the EMFILE error is logged over these seconds.
        await asyncio.sleep(float(sys.argv[1]))
        print("FAILURES", sip.accept_failures, "OPEN", len(sip.tcp_connections), flush=True)
        await sip.close()

    asyncio.run(main())
    """
)


def test_accept_out_of_descriptors_backs_off_and_logs_once_a_second() -> None:
    seconds = 3.0
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdout is not None
    try:
        line = child.stdout.readline()
        assert line.startswith("PORT"), line
        port = int(line.split()[1])
        clients = []
        for _ in range(40):
            client = socket.socket()
            client.settimeout(1.0)
            client.connect(("127.0.0.1", port))  # the kernel completes it from the backlog
            clients.append(client)
        output, _ = child.communicate(timeout=seconds + 10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    for client in clients:
        client.close()
    assert child.returncode == 0, output
    failures = int(output.split("FAILURES")[1].split()[0])
    opened = int(output.split("OPEN")[1].split()[0])
    errors = [line for line in output.splitlines() if "cannot accept TCP" in line]
    assert opened >= 1 and failures >= 1, output
    assert 1 <= len(errors) <= seconds + 1, output
    assert "Traceback" not in output and "out of system resource" not in output, output


async def test_port_0_draws_another_port_when_its_tcp_side_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = transport_module._listen_tcp
    tried: list[int] = []

    def taken_once(host: str, port: int) -> socket.socket:
        tried.append(port)
        if len(tried) == 1:  # another process holds TCP on the first port UDP drew
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return real(host, port)

    monkeypatch.setattr(transport_module, "_listen_tcp", taken_once)
    sip = SipTransport("127.0.0.1", 0, Received(), TcpLimits())
    await sip.start()
    try:
        assert len(tried) == 2 and sip.port == tried[1] != 0
        assert sip.udp is not None and sip.udp.transport is not None
        assert sip.udp.transport.get_extra_info("sockname")[1] == sip.port
    finally:
        await sip.close()
