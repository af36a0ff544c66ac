"""End-to-end: RFC 4475 torture messages and garbage sent to a live `callrec serve`.

Every valid message gets an answer (or, for responses, is absorbed), every invalid one
that can be answered gets 400, the rest are dropped, and the server keeps serving: OPTIONS
is still answered and a call still goes through.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from b2bua.message import SipParseError, SipRequest, parse_message
from testkit.harness import HOST, CallrecServer, make_server, sip_options

DATA = Path(__file__).parent.parent / "data" / "sip" / "rfc4475"
MESSAGES = sorted(DATA.glob("*/*.sip"))

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"))
    srv.add_user("201", "Alice Martin", "pw-201")
    yield from srv.serving()


def exchange(port: int, data: bytes, wait: float = 0.6) -> list[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(wait)
        sock.bind((HOST, 0))
        sock.sendto(data, (HOST, port))
        answers: list[bytes] = []
        try:
            while True:
                answers.append(sock.recv(65535))
                sock.settimeout(0.2)
        except OSError:
            pass
    return answers


def expected(data: bytes) -> str:
    """'400', 'answer' (any final response), or 'none' for what the server may not answer."""
    try:
        message = parse_message(data)
    except SipParseError as exc:
        if exc.partial is not None and exc.partial.method != "ACK":
            return "400"
        return "none"
    if isinstance(message, SipRequest) and message.method != "ACK":
        return "answer"
    return "none"


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_torture_message_gets_the_right_answer(server: CallrecServer, path: Path) -> None:
    data = path.read_bytes()
    answers = exchange(server.sip_port, data)
    statuses = [status_of(a) for a in answers if a.startswith(b"SIP/2.0 ")]
    want = expected(data)
    if want == "400":
        assert 400 in statuses, (statuses, server.log()[-2000:])
    elif want == "answer":
        finals = [s for s in statuses if s >= 200]
        assert finals, (statuses, server.log()[-2000:])
        assert 500 not in finals, server.log()[-2000:]
    else:
        assert not [s for s in statuses if s >= 200], statuses
    assert sip_options(server.sip_port) == "SIP/2.0 200 OK"


def test_garbage_does_not_stop_the_server(server: CallrecServer) -> None:
    rng = random.Random(4475)
    valid = (DATA / "valid" / "wsinv.sip").read_bytes()
    for _ in range(300):
        choice = rng.random()
        if choice < 0.3:
            data = os.urandom(rng.randint(1, 1400))
        else:
            mutated = bytearray(valid)
            for _ in range(rng.randint(1, 20)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, (HOST, server.sip_port))
    assert sip_options(server.sip_port, timeout=2) == "SIP/2.0 200 OK"
    assert server.process is not None and server.process.poll() is None
    assert "Traceback" not in server.log()
