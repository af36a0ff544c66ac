"""End-to-end: the SIP side's credential cache against changes made by the CLI, a
separate process, while `callrec serve` runs (callrec.directory).

The stated bound: a password changed or a user removed by another process stops working
within `POLL_INTERVAL_S` plus one reload. The test allows a second of slack on top for a
loaded machine (and the REGISTER round trips it measures with); it could only pass
without the cache's invalidation if the cache were never used.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from callrec.directory import POLL_INTERVAL_S
from testkit.harness import CallrecServer, make_server
from testkit.waiting import wait_until
from tests.security.raw_sip import RawUa

pytestmark = pytest.mark.e2e

BOUND_S = POLL_INTERVAL_S + 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"))
    srv.add_user("201", "Alice Martin", "old-201")
    srv.add_user("202", "Bob Stone", "pw-202")
    yield from srv.serving()


def registers(ua: RawUa, user: str, password: str) -> bool:
    response, _ = ua.register(user, password)
    assert response is not None
    return response.status == 200


def test_password_changed_by_the_cli_stops_working_within_the_bound(
    server: CallrecServer,
) -> None:
    ua = RawUa(server)
    try:
        assert registers(ua, "201", "old-201")  # the cache is loaded and says yes
        server.cli("users", "set-password", "201", "--password", "new-201")
        changed_at = time.monotonic()
        wait_until(
            lambda: not registers(ua, "201", "old-201"),
            timeout=10,
            what="the old password refused",
        )
        refused_after = time.monotonic() - changed_at
        assert registers(ua, "201", "new-201")
    finally:
        ua.close()
    assert refused_after < BOUND_S, refused_after


def test_user_removed_by_the_cli_stops_working_within_the_bound(server: CallrecServer) -> None:
    ua = RawUa(server)
    try:
        assert registers(ua, "202", "pw-202")
        server.cli("users", "remove", "202")
        removed_at = time.monotonic()
        wait_until(
            lambda: not registers(ua, "202", "pw-202"),
            timeout=10,
            what="the removed user refused",
        )
        refused_after = time.monotonic() - removed_at
    finally:
        ua.close()
    assert refused_after < BOUND_S, refused_after
