"""TCP exhaustion as issue 10 item 3 saw it: default config, the usual open-file limit.

test_tcp_exhaustion proves the caps with small configured values. This one writes no
TCP key at all (the defaults: 200 connections per source) and starts `callrec serve`
with a soft RLIMIT_NOFILE of 1024, what a login shell or a systemd unit gives. One host
(127.0.0.2) then opens more idle, half-sent connections than that limit (bounded at
1,100). Before the fix every descriptor went to them: new calls got 503, the portal
stopped answering and each failed accept() logged a traceback. Now the host keeps at
most its 200 and a call, a TCP OPTIONS and the portal from 127.0.0.1 all work.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.harness import HOST, CallrecServer, free_port, make_server, sip_options
from testkit.sipp_runner import environment_ok

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok())),
]

PASSWORD = "pw-201"
ATTACKER_HOST = "127.0.0.2"
SOFT_NOFILE = 1024
ATTEMPTS = 1100  # more than SOFT_NOFILE: enough to exhaust a server that takes them all
PER_SOURCE_DEFAULT = 200


@contextlib.contextmanager
def soft_nofile(limit: int) -> Iterator[None]:
    """The soft open-file limit a child started inside inherits (this process's own is
    restored at once: it needs more than `limit` for the attack)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CallrecServer]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < ATTEMPTS + 256:
        pytest.skip(f"the hard open-file limit {hard} is too low for the attack")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, ATTEMPTS + 256), hard))
    srv = make_server(tmp_path / "callrec", sipp=True, rtp_ports=100)
    srv.add_user("201", "Alice Martin", PASSWORD)
    try:
        with soft_nofile(SOFT_NOFILE):
            srv.start()
        yield srv
    finally:
        srv.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def slowloris(server: CallrecServer, count: int) -> tuple[list[socket.socket], int]:
    """Up to `count` connections from ATTACKER_HOST, each with the start of a request
    that never ends; stops after 20 that cannot even connect (a full backlog). A
    connection the server closes at once still counts as made."""
    connections: list[socket.socket] = []
    failed = 0
    for _ in range(count):
        sock = socket.socket()
        sock.bind((ATTACKER_HOST, 0))
        sock.settimeout(0.5)
        try:
            sock.connect((HOST, server.sip_port))
        except ConnectionResetError:
            pass  # closed so fast that connect() saw it: over a cap
        except OSError:
            sock.close()
            failed += 1
            if failed >= 20:
                break
            continue
        with contextlib.suppress(OSError):
            sock.send(f"OPTIONS sip:{HOST} SIP/2.0\r\nVia: SIP/2.0/TCP x".encode())
        connections.append(sock)
    return connections, failed


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def portal_answers(server: CallrecServer) -> bool:
    try:
        with urllib.request.urlopen(f"{server.portal_url}/login", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_one_host_cannot_take_every_descriptor(server: CallrecServer, tmp_path: Path) -> None:
    connections, _failed = slowloris(server, ATTEMPTS)
    try:
        assert len(connections) > SOFT_NOFILE, "the attack did not get its connections out"
        # The legitimate side, from 127.0.0.1, while the host holds what it was given.
        assert sip_options(server.sip_port, timeout=5.0, transport="tcp") is not None
        assert portal_answers(server), server.log()[-3000:]
        trunk = server.start_sipp_trunk(tmp_path / "uas", timeout_s=30)
        with trunk:
            phone = server.run_sipp_phone(
                tmp_path / "uac",
                caller="201",
                password=PASSWORD,
                local_port=free_port(),
                call_length_ms=1000,
                timeout_s=30,
            )
            assert phone.ok, phone.summary() + server.log()[-3000:]
            assert trunk.wait().ok
        held = sum(still_open(sock) for sock in connections)
        assert held <= PER_SOURCE_DEFAULT, held
    finally:
        for sock in connections:
            sock.close()
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert len(log) < 200_000, f"the log grew to {len(log)} characters"
