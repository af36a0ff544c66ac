"""End-to-end: a call whose media stops both ways (its BYE lost) is ended by callrec.

SIPp phones send no RTP and never hang up; with `[media] hangup_after_silence = 2`
callrec sends a BYE to both sides after two seconds, writes the CDR and finishes the
recording, and the ports go back to the pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.harness import CallrecServer, make_server

pytestmark = pytest.mark.e2e

IDLE_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(
        tmp_path_factory.mktemp("callrec"),
        # No legal notice: the SIPp trunk would echo it back, and that is RTP.
        '[recording]\nannouncement = "none"\n',
        sipp=True,
        media_config=f"rtp_timeout = 1\nhangup_after_silence = {IDLE_S}\n",
    )
    srv.add_user("202", "Bob Always", "pw-202", "--mode", "always")
    yield from srv.serving()


def test_a_call_with_no_rtp_either_way_is_ended_with_a_bye_to_both_sides(
    server: CallrecServer, tmp_path: Path
) -> None:
    before = len(server.calls())
    trunk = server.start_sipp_trunk(tmp_path / "uas", timeout_s=30)
    phone = server.run_sipp_phone(
        tmp_path / "uac", "uac_await_bye.xml", caller="202", password="pw-202", timeout_s=30
    )
    # Both SIPp scenarios end only on a BYE from callrec, answered with 200.
    assert phone.ok, phone.summary()
    assert trunk.wait().ok
    call = server.wait_for_calls(before + 1)[0]
    assert call["disposition"] == "answered"
    # The idle check runs every quarter second (a quarter of the 1 s report timeout).
    assert IDLE_S <= call["duration_s"] <= IDLE_S + 1.0, call
    recording = server.wait_for_recording(call["id"])
    assert recording["status"] == "complete"
    assert "no RTP either way for 2 s; ending it" in server.log()
