"""kill -9 during calls that have no recording, on a real `callrec serve` (issue 10 item 8).

test_startup covers a recorded call: it is closed at the last write of its recording.
A call with nothing recorded has no file to date its end: at the next start it is
closed at its answer, or at its start if it was still ringing, and marked
`interrupted`, never left open with `ended_at`, `disposition` and `duration_s` null.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from testkit.harness import CallrecServer, make_server
from testkit.sipp_runner import SippProcess, environment_ok
from testkit.waiting import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok())),
]

PASSWORD = "pw-201"


def kill_and_restart(server: CallrecServer, *sipps: SippProcess) -> dict[str, Any]:
    """kill -9 the server, stop the SIPp peers, start again: the one call's CDR."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    server.process = None
    for sipp in sipps:
        sipp.stop(grace_s=1.0)
    [open_call] = server.calls()
    assert open_call["ended_at"] is None  # what the crash leaves
    server.start()
    [call] = server.calls()
    return call


def test_an_answered_unrecorded_call_is_closed_at_its_answer(tmp_path: Path) -> None:
    server = make_server(tmp_path / "callrec", sipp=True)
    server.add_user("201", "Alice Martin", PASSWORD, "--mode", "never")
    server.start()
    try:
        trunk, phone, row = server.start_answered_call(
            tmp_path, caller="201", password=PASSWORD, seconds=20
        )
        assert server.recordings() == []
        call = kill_and_restart(server, phone, trunk)
    finally:
        server.stop()
    assert call["disposition"] == "interrupted", call
    assert call["ended_at"] == row["answered_at"], call
    assert call["duration_s"] == 0, call
    assert "interrupted by a crash" in server.log()


def test_a_ringing_call_is_closed_at_its_start(tmp_path: Path) -> None:
    server = make_server(tmp_path / "callrec", sipp=True)
    server.add_user("201", "Alice Martin", PASSWORD, "--mode", "never")
    server.start()
    try:
        trunk = server.start_sipp_trunk(tmp_path / "uas", "uas_ringing.xml", timeout_s=30)
        phone = server.start_sipp_phone(
            tmp_path / "uac", caller="201", password=PASSWORD, timeout_s=30, ready_wait_s=0
        )
        rows = wait_until(server.calls, timeout=10, what="the ringing call's CDR", interval=0.1)
        assert rows[0]["answered_at"] is None
        call = kill_and_restart(server, phone, trunk)
    finally:
        server.stop()
    assert call["disposition"] == "interrupted", call
    assert call["answered_at"] is None
    assert call["ended_at"] == call["started_at"], call
    assert "interrupted by a crash" in server.log()
