"""Attack: guessing a SIP password against a real `callrec serve`.

The attacker at 127.0.0.2 gets one nonce and fires a bounded burst of guesses for
user 201 without waiting for the answers, then tries the right password. Defaults
apply: 10 failures in 60 s lock the source and the user out for 300 s.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from b2bua.digest import build_authorization, preferred_challenge
from b2bua.message import SipResponse
from testkit.harness import CallrecServer, make_server
from tests.security.raw_sip import ATTACKER_HOST, RawUa, bindings, wait_for_log

pytestmark = pytest.mark.e2e

GUESSES = 200


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"))
    srv.add_user("201", "Alice Martin", "pw-201")
    srv.add_user("202", "Bob Stone", "pw-202")
    yield from srv.serving()


def drain(ua: RawUa, call_id: str, quiet: float, limit: float) -> Counter[int]:
    """Status codes of the finals for `call_id` until `quiet` seconds pass with none."""
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        message = ua.receive(quiet)
        if message is None:
            break
        if isinstance(message, SipResponse) and message.headers.get("Call-ID") == call_id:
            statuses[message.status] += 1
    return statuses


def test_guessing_locks_the_source_and_user_out_and_nobody_else(server: CallrecServer) -> None:
    phone = RawUa(server)
    attacker = RawUa(server, ATTACKER_HOST)
    newcomer = RawUa(server, "127.0.0.3")
    try:
        # 201's own phone registered before the attack.
        answer, _ = phone.register("201", "pw-201")
        assert answer is not None and answer.status == 200

        uri = f"sip:{server.sip_address}"
        call_id = f"guess-{uuid.uuid4().hex}"
        attacker.send(attacker.request("REGISTER", uri, user="201", call_id=call_id, cseq=1))
        challenge = attacker.final(call_id)
        assert challenge is not None and challenge.status == 401
        offer = preferred_challenge(challenge.headers.get_all("WWW-Authenticate"))

        def attempt(nc: int, password: str) -> bytes:
            value = build_authorization(offer, "REGISTER", uri, "201", password, nc=nc)
            return attacker.request(
                "REGISTER",
                uri,
                user="201",
                call_id=call_id,
                cseq=nc + 1,
                headers=(f"Authorization: {value}",),
            )

        for nc in range(1, GUESSES + 1):
            attacker.send(attempt(nc, f"guess-{nc}"))
        statuses = drain(attacker, call_id, quiet=1.5, limit=30.0)
        # Exactly the first 10 guesses were checked; the rest were refused (403) or, once
        # 10 refusals had gone out, not answered (how many of each depends on timing).
        assert statuses[401] == 10, statuses
        assert statuses[403] >= 10, statuses
        assert 200 not in statuses

        # The right password, from the same source, while locked out: a source that has had
        # its 10 refusals is not answered at all.
        attacker.send(attempt(GUESSES + 1, "pw-201"))
        response = attacker.final(call_id, timeout=2.0)
        assert response is None, response
        assert bindings(server, "201") == [
            (phone.contact_for("201"), f"127.0.0.1:{phone.port};transport=udp")
        ]

        # Logged once per lock-out, not per request.
        log = wait_for_log(server, "SIP auth lock-out: user 201")
        assert log.count("SIP auth lock-out: source 127.0.0.2") == 1
        assert log.count("SIP auth lock-out: user 201") == 1
        assert log.count("auth failed for") <= 10

        # Another user from another source is unaffected...
        answer, _ = phone.register("202", "pw-202")
        assert answer is not None and answer.status == 200
        # ...and so is 201's own phone, which logged in from its address before.
        answer, _ = phone.register("201", "pw-201")
        assert answer is not None and answer.status == 200
        # 201 from an address it never used is refused while the user is locked out.
        refused, _ = newcomer.register("201", "pw-201")
        assert refused is not None and refused.status == 403
        assert "Too many failed authentications" in (refused.headers.get("Warning") or "")
    finally:
        for ua in (phone, attacker, newcomer):
            ua.close()
