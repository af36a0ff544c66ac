"""Start-up and failure behaviour of a real `callrec serve`: a port in use ends the process
naming the address; an empty or damaged database is refused (`--init` creates a new one,
a missing one is a first start); a call open at kill -9 is closed as `interrupted`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from testkit.harness import CALLREC, HOST, CallrecServer, make_server, sip_options
from testkit.sipp_runner import environment_ok
from testkit.waiting import wait_until

pytestmark = pytest.mark.e2e

PASSWORD = "pw-201"


def serve(
    server: CallrecServer, *extra: str, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run `callrec serve` expecting it to exit by itself (a start-up failure)."""
    return subprocess.run(
        [*CALLREC, "serve", "--config", str(server.config_path), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=server.root,
    )


def wall_time(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("taken", ["sip-udp", "sip-tcp", "portal"])
def test_a_port_in_use_exits_non_zero_naming_the_address(tmp_path: Path, taken: str) -> None:
    server = make_server(tmp_path)
    kind = socket.SOCK_DGRAM if taken == "sip-udp" else socket.SOCK_STREAM
    port = server.portal_port if taken == "portal" else server.sip_port
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind((HOST, port))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        result = serve(server)
    suffix = "udp" if taken == "sip-udp" else "tcp"
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"callrec: error: cannot listen on {HOST}:{port}/{suffix}: address in use"
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_an_empty_database_is_refused_and_init_creates_a_new_one(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    database = server.data_dir / "callrec.db"
    database.parent.mkdir(parents=True)
    database.write_bytes(b"")
    result = serve(server)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "callrec: error: the database data/callrec.db is empty;"
        " run callrec serve --init to create a new one"
    ), result.stderr
    assert database.stat().st_size == 0, "a refused database must be left as it was"
    process = subprocess.Popen(
        [*CALLREC, "serve", "--config", str(server.config_path), "--init"],
        cwd=server.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while sip_options(server.sip_port, timeout=0.3) is None:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "serve --init did not start"
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=15)[0].decode()
    assert "created a new database data/callrec.db" in output, output
    assert database.stat().st_size > 0
    server.add_user("201", "Alice Martin", PASSWORD)  # the new database works


def test_a_damaged_database_is_refused_in_one_line(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    database = server.data_dir / "callrec.db"
    database.parent.mkdir(parents=True)
    database.write_bytes(b"this is not SQLite, it only has the name of it\n" * 200)
    result = serve(server)
    assert result.returncode == 1
    # The error is one line (the store's own log line with the details may precede it).
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "callrec: error: cannot use the database data/callrec.db:"
        " the database file is not a callrec database"
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_database_is_a_first_start(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    assert not (server.data_dir / "callrec.db").exists()
    with_server = server.serving()
    next(with_server)
    try:
        assert "created a new database" in server.log()
    finally:
        with_server.close()


@pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))
def test_a_call_open_at_kill_9_is_closed_as_interrupted_at_restart(tmp_path: Path) -> None:
    server = make_server(tmp_path, '[recording]\nannouncement = "none"\n', sipp=True)
    server.add_user("201", "Alice Martin", PASSWORD, "--mode", "always")
    server.start()
    try:
        trunk = server.start_sipp_trunk(tmp_path / "uas", timeout_s=30)
        phone = server.start_sipp_phone(
            tmp_path / "uac",
            caller="201",
            password=PASSWORD,
            call_length_ms=20000,
            timeout_s=30,
            ready_wait_s=0,
        )
        with trunk, phone:
            rows = wait_until(
                lambda: [row for row in server.calls() if row.get("answered_at")],
                timeout=10,
                what="the answered call",
                interval=0.1,
            )
            answered = wall_time(rows[0]["answered_at"])
            # The scenario is a call three seconds old when the server dies; waiting on a
            # state instead (the file's size) would time the kill to the writer's flushes.
            time.sleep(max(0.0, answered + 3.0 - time.time()))
            assert server.process is not None
            killed_at = time.time()
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
        server.process = None
        [open_call] = server.calls()
        assert open_call["ended_at"] is None  # what the crash leaves
        server.start()
        [call] = server.calls()
    finally:
        server.stop()
    assert call["disposition"] == "interrupted", call
    ended = wall_time(call["ended_at"])
    # The recording's last write was at most a tick (0.25 s) and a second of buffering
    # before the kill.
    assert killed_at - 1.5 <= ended <= killed_at + 0.1, (ended, killed_at)
    assert call["duration_s"] == pytest.approx(ended - answered, abs=0.01)
    assert "interrupted by a crash" in server.log()
