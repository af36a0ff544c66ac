"""End-to-end: `callrec serve` on each `[server] loop`, with SIPp calls over UDP and TCP.

uvloop is the default where installed ("auto"); these runs pin each loop, so the call
path (datagram endpoints, TCP, signal handlers, socket options, the task group) is
checked on both. The full call-path suite (test_call_path_sipp.py) runs on "auto".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.harness import CallrecServer, make_server
from tests.e2e.test_call_path_sipp import call_through

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CallrecServer]:
    loop = request.param
    srv = make_server(
        tmp_path_factory.mktemp(f"callrec-{loop}"), f'[server]\nloop = "{loop}"\n', sipp=True
    )
    srv.add_user("201", "Alice Martin", "pw-201")
    yield from srv.serving()


def test_serve_logs_its_loop(server: CallrecServer, request: pytest.FixtureRequest) -> None:
    loop = request.node.callspec.params["server"]
    assert f"event loop {loop} " in server.log(), server.log()[-2000:]


def test_calls_over_udp_and_tcp(server: CallrecServer, tmp_path: Path) -> None:
    before = len(server.calls())
    call_through(server, tmp_path / "udp", "uas_echo.xml", "uac_auth_pcap.xml", calls=3)
    call_through(server, tmp_path / "tcp", "uas_echo.xml", "uac_auth_pcap.xml", transport="tcp")
    call_through(server, tmp_path / "cancel", "uas_ringing.xml", "uac_cancel.xml")
    rows = server.wait_for_calls(before + 5)
    assert [r["disposition"] for r in rows[:5]].count("answered") == 4


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    srv = make_server(tmp_path, '[server]\nloop = "uvloop"\n')
    srv.start()
    process = srv.process
    assert process is not None
    os.kill(process.pid, signal.SIGTERM)  # add_signal_handler on uvloop
    assert process.wait(timeout=10) == 0, srv.log()[-2000:]
    srv.process = None
    assert "shutting down" in srv.log()


def test_uvloop_asked_for_but_missing_is_a_config_error(tmp_path: Path) -> None:
    srv = make_server(tmp_path, '[server]\nloop = "uvloop"\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "no-uvloop"))
    blocker = tmp_path / "no-uvloop" / "uvloop"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("uvloop hidden by the test")\n')
    result = subprocess.run(
        [sys.executable, "-m", "callrec.cli", "serve", "--config", str(srv.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "[server] loop: uvloop is not installed" in result.stderr
