"""TCP exhaustion against a real `callrec serve`: caps per source and in all, idle and
oversized connections closed, and calls over UDP and TCP and the portal unaffected.

The server runs with `tcp_max_connections = 200`, `tcp_max_per_source = 100` and short
timeouts, so a bounded number of sockets (at most a few hundred) proves the caps. The
flood comes from 127.0.0.2 and 127.0.0.3; the real calls from 127.0.0.1.
"""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.harness import (
    HOST,
    SIPP_DIGEST_CONFIG,
    CallrecServer,
    free_port,
    sip_options,
)
from testkit.sipp_runner import environment_ok

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok())),
]

MAX_CONNECTIONS = 200
PER_SOURCE = 100
IDLE_TIMEOUT_S = 3.0
LIMITS = (
    f"tcp_max_connections = {MAX_CONNECTIONS}\n"
    f"tcp_max_per_source = {PER_SOURCE}\n"
    f"tcp_idle_timeout = {IDLE_TIMEOUT_S}\n"
    f"tcp_message_timeout = {IDLE_TIMEOUT_S}\n"
)
PASSWORD = "pw-201"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CallrecServer]:
    rtp_first = free_port(even=True, span=200)
    srv = CallrecServer(
        root=tmp_path / "callrec",
        sip_port=free_port(),
        trunk_port=free_port(),
        rtp_first=rtp_first,
        rtp_last=rtp_first + 199,
        sip_config=SIPP_DIGEST_CONFIG + LIMITS,
    )
    srv.add_user("201", "Alice Martin", PASSWORD)
    yield from srv.serving()


def options(port: int, local: tuple[str, int]) -> bytes:
    return (
        f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        f"From: <sip:flood@{local[0]}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{HOST}:{port}>\r\nCall-ID: {uuid.uuid4().hex}\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def connect(server: CallrecServer, source: str) -> socket.socket | None:
    """A TCP connection from `source`, or None when the server reset it so fast that
    connect() itself saw the reset (a connection over a cap)."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(5.0)
    try:
        sock.connect((HOST, server.sip_port))
    except ConnectionResetError:
        sock.close()
        return None
    return sock


def connected(server: CallrecServer, source: str) -> socket.socket:
    sock = connect(server, source)
    assert sock is not None, f"a connection from {source} was refused"
    return sock


def answered(sock: socket.socket, server: CallrecServer) -> bool:
    """Send an OPTIONS on the connection: True if a response comes back, False if the
    server closes it instead."""
    try:
        sock.sendall(options(server.sip_port, sock.getsockname()))
        data = sock.recv(65535)
    except OSError:
        return False
    return data.startswith(b"SIP/2.0 ")


def closed_by_server(sock: socket.socket | None, timeout: float) -> bool:
    if sock is None:
        return True
    sock.settimeout(timeout)
    try:
        return sock.recv(65535) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def flood(server: CallrecServer, source: str, count: int) -> tuple[list[socket.socket], int]:
    """`count` connections from `source`, each carrying one OPTIONS (so none is idle);
    returns the ones the server kept and how many it closed."""
    kept: list[socket.socket] = []
    refused = 0
    for _ in range(count):
        sock = connect(server, source)
        if sock is not None and answered(sock, server):
            kept.append(sock)
        else:
            refused += 1
            if sock is not None:
                sock.close()
    return kept, refused


def portal_answers(server: CallrecServer) -> bool:
    with urllib.request.urlopen(f"{server.portal_url}/login", timeout=5) as response:
        return bool(response.status == 200)


def sipp_call(server: CallrecServer, work: Path, transport: str) -> None:
    trunk = server.start_sipp_trunk(work / "uas", timeout_s=30)
    with trunk:
        phone = server.run_sipp_phone(
            work / "uac",
            caller="201",
            password=PASSWORD,
            local_port=free_port(),
            transport=transport,
            call_length_ms=1000,
            timeout_s=30,
        )
        assert phone.ok, phone.summary() + server.log()[-3000:]
        assert trunk.wait().ok


def refusal_lines(server: CallrecServer) -> list[str]:
    return [line for line in server.log().splitlines() if "refused" in line and "TCP" in line]


def test_caps_hold_and_calls_over_udp_and_tcp_and_the_portal_still_work(
    server: CallrecServer, tmp_path: Path
) -> None:
    started = time.monotonic()
    first, refused_first = flood(server, "127.0.0.2", PER_SOURCE + 50)
    assert len(first) == PER_SOURCE and refused_first == 50
    # The per-source cap leaves room for others: a call over TCP from 127.0.0.1.
    sipp_call(server, tmp_path / "tcp", "tcp")
    second, refused_second = flood(server, "127.0.0.3", PER_SOURCE + 20)
    assert len(second) == MAX_CONNECTIONS - PER_SOURCE and refused_second == 20
    # At the overall cap: a new TCP connection from anywhere is closed at once...
    late = connect(server, "127.0.0.4")
    assert closed_by_server(late, 2.0)
    if late is not None:
        late.close()
    # ...while UDP, the RTP pool and the portal go on.
    assert sip_options(server.sip_port) == "SIP/2.0 200 OK"
    sipp_call(server, tmp_path / "udp", "udp")
    assert portal_answers(server)
    for sock in second:
        sock.close()
    sipp_call(server, tmp_path / "tcp-again", "tcp")
    for sock in first:
        sock.close()
    elapsed = time.monotonic() - started
    lines = refusal_lines(server)
    assert lines, server.log()[-3000:]
    # 71 refusals, at most one line a second about them.
    assert len(lines) <= elapsed + 2, (len(lines), elapsed, lines)
    assert "Traceback" not in server.log()


def test_idle_connections_are_closed_and_a_busy_one_is_kept(server: CallrecServer) -> None:
    idle = [connected(server, "127.0.0.2") for _ in range(20)]
    busy = connected(server, "127.0.0.3")
    assert answered(busy, server)
    opened = time.monotonic()
    for sock in idle:
        assert closed_by_server(sock, IDLE_TIMEOUT_S + 3), "an idle connection stayed open"
        sock.close()
    assert time.monotonic() - opened < IDLE_TIMEOUT_S + 3
    # The connection that carried a message lives on its CRLF keep-alives (and pongs).
    until = time.monotonic() + IDLE_TIMEOUT_S + 1
    while time.monotonic() < until:
        busy.sendall(b"\r\n\r\n")
        busy.settimeout(2.0)
        assert busy.recv(2) == b"\r\n"
        time.sleep(0.5)  # under test: time passes, and the keep-alives keep it open
    assert answered(busy, server)
    busy.close()


def test_a_header_over_16_kib_closes_the_connection(server: CallrecServer) -> None:
    sock = connected(server, "127.0.0.2")
    message = options(server.sip_port, sock.getsockname()).replace(
        b"Content-Length", b"X-Padding: " + b"p" * (20 * 1024) + b"\r\nContent-Length"
    )
    sock.sendall(message)
    sock.settimeout(5.0)
    try:
        reply = sock.recv(65535)
    except ConnectionResetError:
        reply = b""
    assert reply == b"", reply[:200]
    sock.close()
    assert sip_options(server.sip_port, transport="tcp") == "SIP/2.0 200 OK"


def test_a_message_trickled_in_is_cut_off(server: CallrecServer) -> None:
    sock = connected(server, "127.0.0.2")
    message = options(server.sip_port, sock.getsockname())
    started = time.monotonic()
    closed = False
    for index in range(len(message) - 1):
        try:
            sock.sendall(message[index : index + 1])
        except OSError:
            closed = True
            break
        if closed_by_server(sock, 0.1):
            closed = True
            break
    assert closed, "a message sent a byte every 0.1 s was never cut off"
    assert time.monotonic() - started < IDLE_TIMEOUT_S + 3
    sock.close()
