"""Attack: replaying a captured digest header against a real `callrec serve`.

The attacker saw one REGISTER or INVITE of user 201 on the wire and sends its
Authorization / Proxy-Authorization again, from elsewhere (127.0.0.2) or from another
port of the same address, with its own Contact or Call-ID.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from b2bua.digest import build_authorization, preferred_challenge
from testkit.harness import HOST, TRUNK_NUMBER, CallrecServer, make_server
from tests.security.raw_sip import ATTACKER_HOST, RawTrunk, RawUa, bindings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"))
    srv.add_user("201", "Alice Martin", "pw-201")
    yield from srv.serving()


def test_replayed_register_authorization_gets_a_challenge_and_no_binding(
    server: CallrecServer,
) -> None:
    phone, elsewhere, same_host = RawUa(server), RawUa(server, ATTACKER_HOST), RawUa(server)
    try:
        answer, captured = phone.register("201", "pw-201")
        assert answer is not None and answer.status == 200
        assert bindings(server, "201") == [
            (phone.contact_for("201"), f"{HOST}:{phone.port};transport=udp")
        ]
        uri = f"sip:{server.sip_address}"
        for attacker in (elsewhere, same_host):
            call_id = f"replay-{uuid.uuid4().hex}"
            attacker.send(
                attacker.request(
                    "REGISTER",
                    uri,
                    user="201",
                    call_id=call_id,
                    cseq=7,
                    headers=(f"Authorization: {captured}",),
                )
            )
            response = attacker.final(call_id)
            assert response is not None, f"no answer to the replay from {attacker.host}"
            assert response.status == 401, (attacker.host, response.status)
            # A fresh challenge, not "stale": the phone did nothing wrong, the replay did.
            assert all("stale" not in v for v in response.headers.get_all("WWW-Authenticate"))
        # Only the phone's binding: the next call to 201 cannot fork to the attacker.
        assert bindings(server, "201") == [
            (phone.contact_for("201"), f"{HOST}:{phone.port};transport=udp")
        ]
        # The honest phone can still refresh.
        answer, _ = phone.register("201", "pw-201")
        assert answer is not None and answer.status == 200
    finally:
        for ua in (phone, elsewhere, same_host):
            ua.close()


def send_invite(ua: RawUa, call_id: str, cseq: int, credentials: str | None = None) -> None:
    """An INVITE from 201 to the trunk number, with `credentials` if given."""
    ua.send(
        ua.request(
            "INVITE",
            ua.invite_uri(TRUNK_NUMBER),
            user="201",
            to_user=TRUNK_NUMBER,
            call_id=call_id,
            cseq=cseq,
            headers=(f"Proxy-Authorization: {credentials}",) if credentials else (),
            body=ua.sdp(),
        )
    )


def test_replayed_invite_proxy_authorization_gets_407_and_no_call(server: CallrecServer) -> None:
    trunk = RawTrunk(server)
    phone, elsewhere, same_host = RawUa(server), RawUa(server, ATTACKER_HOST), RawUa(server)
    try:
        calls_before = len(server.calls())
        call_id = f"call-{uuid.uuid4().hex}"
        send_invite(phone, call_id, 1)
        challenge = phone.final(call_id)
        assert challenge is not None and challenge.status == 407
        captured = build_authorization(
            preferred_challenge(challenge.headers.get_all("Proxy-Authenticate")),
            "INVITE",
            phone.invite_uri(TRUNK_NUMBER),
            "201",
            "pw-201",
        )
        send_invite(phone, call_id, 2, captured)
        trunk.wait_for_invites(1)
        assert len(trunk.invites) == 1, "the honest call should reach the trunk"
        final = phone.final(call_id)
        assert final is not None and final.status == 486

        # Same nonce, same nc, a new Call-ID: from elsewhere, then from the same host.
        for attacker in (elsewhere, same_host):
            replay_id = f"replay-{uuid.uuid4().hex}"
            send_invite(attacker, replay_id, 2, captured)
            response = attacker.final(replay_id)
            assert response is not None, f"no final answer to the replay from {attacker.host}"
            assert response.status == 407, (attacker.host, response.status)
        # Nothing more reached the trunk, and no CDR was written for the replays.
        trunk.poll(1.0)
        assert len(trunk.invites) == 1
        assert len(server.wait_for_calls(calls_before + 1)) == calls_before + 1
    finally:
        trunk.close()
        for ua in (phone, elsewhere, same_host):
            ua.close()
