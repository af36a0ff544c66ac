"""Attack: one account collecting registrations, against a real `callrec serve`.

Defaults apply: `[sip] max_contacts = 10`. Each contact registers from its own UDP
socket, so a forked INVITE shows up as one datagram per target.
"""

from __future__ import annotations

import select
import sqlite3
import time
import uuid
from collections.abc import Iterator

import pytest

from b2bua.message import SipRequest, make_response, parse_message
from testkit.harness import HOST, CallrecServer, make_server
from tests.security.raw_sip import RawUa, bindings, wait_for_log

pytestmark = pytest.mark.e2e

CAP = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"))
    srv.add_user("201", "Alice Martin", "pw-201")
    yield from srv.serving()


def add_stale_looking_bindings(server: CallrecServer, uas: list[RawUa]) -> None:
    """Bindings stored before the cap existed (older than any registered over SIP)."""
    with sqlite3.connect(server.data_dir / "callrec.db", timeout=5) as db:
        (user_id,) = db.execute("SELECT id FROM users WHERE extension = '201'").fetchone()
        for ua in uas:
            db.execute(
                "INSERT INTO registrations (user_id, contact, received, call_id, cseq,"
                " expires_at, updated_at) VALUES (?, ?, ?, ?, 1, ?, ?)",
                (
                    user_id,
                    ua.contact_for("201"),
                    f"{HOST}:{ua.port};transport=udp",
                    f"old-{ua.port}",
                    time.time() + 3600,
                    time.time() - 3600,
                ),
            )


def forks_received(uas: list[RawUa], timeout: float) -> list[RawUa]:
    """The UAs that got an INVITE within `timeout` (each answers it 486)."""
    got: list[RawUa] = []
    by_socket = {ua.sock: ua for ua in uas}
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(list(by_socket), [], [], remaining)
        if not ready:
            break
        for sock in ready:
            data, address = sock.recvfrom(65535)
            message = parse_message(data)
            if isinstance(message, SipRequest) and message.method == "INVITE":
                if by_socket[sock] not in got:
                    got.append(by_socket[sock])
                busy = make_response(message, 486, to_tag=uuid.uuid4().hex[:8])
                sock.sendto(busy.to_bytes(), address)
    return got


def test_eleventh_contact_is_refused_and_forks_are_bounded(server: CallrecServer) -> None:
    phones = [RawUa(server) for _ in range(CAP + 1)]
    legacy = [RawUa(server) for _ in range(5)]
    trunk = RawUa(server, port=server.trunk_port)
    try:
        for i, phone in enumerate(phones[:CAP]):
            answer, _ = phone.register("201", "pw-201")
            assert answer is not None and answer.status == 200, (i, answer)
        answer, _ = phones[CAP].register("201", "pw-201")
        assert answer is not None
        assert (answer.status, answer.reason) == (403, "Too many registrations")
        warning = answer.headers.get("Warning") or ""
        assert warning.startswith(f'399 callrec "at most {CAP} contacts per user'), warning
        assert len(bindings(server, "201")) == CAP

        # More bindings than the cap in the store (from before it existed): a call from
        # the trunk still forks to at most CAP targets, the most recently registered.
        add_stale_looking_bindings(server, legacy)
        assert len(bindings(server, "201")) == CAP + len(legacy)
        call_id = f"inbound-{uuid.uuid4().hex}"
        trunk.send(
            trunk.request(
                "INVITE",
                trunk.invite_uri("201"),
                user="+15550100",
                to_user="201",
                call_id=call_id,
                cseq=1,
                body=trunk.sdp(),
            )
        )
        wait_for_log(server, "inbound +15550100 -> 201")
        reached = forks_received(phones + legacy, timeout=1.0)
        assert len(reached) == CAP, len(reached)
        assert sorted(ua.port for ua in reached) == sorted(ua.port for ua in phones[:CAP])
        assert f"inbound +15550100 -> 201, {CAP} target(s)" in server.log()
    finally:
        for ua in [*phones, *legacy, trunk]:
            ua.close()
