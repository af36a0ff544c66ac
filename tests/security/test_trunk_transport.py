"""The trunk is its address, port AND transport, against a real `callrec serve`.

Before the fix an INVITE over TCP from the trunk's UDP host:port was taken for the
trunk: no digest, routed in to a user. Anyone on the trunk's host (here the loopback)
can open a TCP connection from that port number. Now only the trunk's own transport
counts; the other one is a phone's, challenged with 407. `[trunk] trusted` hosts are
trusted over the trunk's transport only.

Each INVITE calls extension 201, which exists but has no registration: taken as from
the trunk it is routed in and answered 480; taken as from a phone it is challenged (407).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.harness import HOST, CallrecServer, free_port, make_server

pytestmark = pytest.mark.e2e

ROUTED_IN = 480  # 201 exists and is not registered
CHALLENGED = 407


def start(root: Path, trunk_lines: str = "", tcp_trunk: bool = False) -> CallrecServer:
    server = make_server(root)
    text = server.config_path.read_text()
    uri = f'uri = "sip:{HOST}:{server.trunk_port}"\n'
    assert uri in text
    new_uri = uri.replace('"\n', ';transport=tcp"\n') if tcp_trunk else uri
    server.config_path.write_text(text.replace(uri, new_uri + trunk_lines))
    server.add_user("201", "Alice Martin", "pw-201")
    server.start()
    return server


@pytest.fixture(scope="module")
def udp_trunk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    server = start(tmp_path_factory.mktemp("udp-trunk"))
    try:
        yield server
    finally:
        server.stop()


def invite_status(
    server: CallrecServer, transport: str, local_port: int, timeout: float = 5.0
) -> int:
    """Send one INVITE for 201 from HOST:local_port over `transport`; its final status."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, local_port))
        sock.settimeout(timeout)
        if transport == "tcp":
            sock.connect((HOST, server.sip_port))
        tag = uuid.uuid4().hex[:8]
        branch = "z9hG4bK" + uuid.uuid4().hex
        message = (
            f"INVITE sip:201@{server.sip_address} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} {HOST}:{local_port};branch={branch}\r\n"
            f"From: <sip:0612345678@{HOST}:{local_port}>;tag={tag}\r\n"
            f"To: <sip:201@{server.sip_address}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@{HOST}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:trunk@{HOST}:{local_port};transport={transport}>\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        if transport == "tcp":
            sock.sendall(message)
        else:
            sock.sendto(message, (HOST, server.sip_port))
        deadline = time.monotonic() + timeout
        buffer = b""
        while time.monotonic() < deadline:
            data = sock.recv(65535)
            if not data:
                break
            buffer += data
            for line in buffer.split(b"\r\n"):
                if line.startswith(b"SIP/2.0 "):
                    status = int(line.split(b" ")[1])
                    if status >= 200:
                        return status
        raise AssertionError(f"no final response over {transport}: {buffer!r}")


def test_udp_from_the_trunk_address_is_the_trunk(udp_trunk: CallrecServer) -> None:
    assert invite_status(udp_trunk, "udp", udp_trunk.trunk_port) == ROUTED_IN


def test_tcp_from_the_trunk_udp_address_is_a_phone(udp_trunk: CallrecServer) -> None:
    assert invite_status(udp_trunk, "tcp", udp_trunk.trunk_port) == CHALLENGED


def test_other_ports_of_the_trunk_host_are_phones(udp_trunk: CallrecServer) -> None:
    assert invite_status(udp_trunk, "udp", free_port()) == CHALLENGED


def test_a_tcp_trunk_is_not_matched_over_udp(tmp_path: Path) -> None:
    server = start(tmp_path, tcp_trunk=True)
    try:
        assert invite_status(server, "tcp", server.trunk_port) == ROUTED_IN
        assert invite_status(server, "udp", server.trunk_port) == CHALLENGED
    finally:
        server.stop()


def test_trusted_hosts_count_over_the_trunk_transport_only(tmp_path: Path) -> None:
    server = start(tmp_path, f'trusted = ["{HOST}"]\n')
    try:
        assert invite_status(server, "udp", free_port()) == ROUTED_IN
        assert invite_status(server, "tcp", free_port()) == CHALLENGED
        assert invite_status(server, "tcp", server.trunk_port) == CHALLENGED
    finally:
        server.stop()
