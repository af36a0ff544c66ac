"""Two callrec nodes (127.0.0.2, 127.0.0.3) behind Kamailio's dispatcher (127.0.0.10).

Phones (SIPp with digest) and the trunk (SIPp from the trunk's address) send everything
to Kamailio only. Checked: new calls spread over both nodes, a challenge and its answer
reach the same node, the trunk is recognised through the proxy (X-Callrec-Source), a
phone registers through Kamailio with its own address, the nodes' /metrics and /healthz,
JSON log lines with call_id, and kill -9 of a node: Kamailio takes it out, new calls go
to the other within 5 s, the other node's calls go on, and the dead node's interrupted
calls and recordings are closed when it starts again.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from b2bua.digest import build_authorization
from b2bua.message import SipResponse, parse_message
from testkit.sipp_runner import SippProcess, free_port, run_sipp, start_sipp
from testkit.waiting import wait_until
from tests.cluster.cluster import Kamailio, Node, kamailio_missing, wait_log

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(kamailio_missing() is not None, reason=str(kamailio_missing())),
]

USER, PASSWORD = "100", "secret-100"


@pytest.fixture
def trunk_port() -> int:
    return free_port()


@pytest.fixture
def cluster(tmp_path: Path, trunk_port: int) -> Iterator[tuple[Kamailio, list[Node]]]:
    nodes = [Node(tmp_path / f"node{i}", f"127.0.0.{i + 2}", trunk_port) for i in range(2)]
    for node in nodes:
        node.cli("users", "add", USER, "--name", "Ann", "--password", PASSWORD, "--mode", "always")
    proxy = Kamailio(tmp_path / "kamailio", nodes)
    try:
        for node in nodes:
            node.start()
        proxy.start()
        yield proxy, nodes
    finally:
        proxy.stop()
        for node in nodes:
            node.stop()


def _trunk(work: Path, port: int, seconds: float) -> SippProcess:
    work.mkdir(parents=True, exist_ok=True)
    return start_sipp(
        "uas_echo.xml",
        work_dir=work,
        local_port=port,
        media_port=free_port(even=True, span=4),
        rtp_echo=True,
        calls=50,
        timeout_s=seconds + 30,
        ready_wait_s=10,
    )


def _phone_calls(
    work: Path, proxy: Kamailio, *, calls: int, length_ms: int, wait: bool = True
) -> SippProcess:
    work.mkdir(parents=True, exist_ok=True)
    return start_sipp(
        "uac_auth_pcap.xml",
        work_dir=work,
        remote=proxy.address,
        media_port=free_port(even=True, span=4),
        callee="300",
        caller=USER,
        user=USER,
        password=PASSWORD,
        calls=calls,
        rate=20,
        call_length_ms=length_ms,
        timeout_s=length_ms / 1000 + 30,
        ready_wait_s=0,
        extra=["-auth_uri", f"300@{proxy.address}"],
    )


def _answered(node: Node) -> list[dict[str, object]]:
    return [row for row in node.calls() if row.get("answered_at")]


def _register(proxy: Kamailio, local_port: int, call_id: str) -> SipResponse:
    """REGISTER 100 through Kamailio from 127.0.0.1:`local_port`, answering the 401."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", local_port))
        sock.settimeout(5)
        authorization = ""
        for cseq in (1, 2):
            message = (
                f"REGISTER sip:{proxy.address} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{uuid.uuid4().hex}"
                ";rport\r\n"
                f"From: <sip:{USER}@callrec>;tag={uuid.uuid4().hex[:8]}\r\n"
                f"To: <sip:{USER}@callrec>\r\nCall-ID: {call_id}\r\n"
                f"CSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{USER}@127.0.0.1:{local_port}>\r\nExpires: 300\r\n"
                f"{authorization}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            sock.sendto(message, (proxy.host, proxy.port))
            while True:
                response = parse_message(sock.recv(65535))
                assert isinstance(response, SipResponse)
                if response.status >= 200:
                    break
            if response.status != 401:
                return response
            challenge = response.headers.get("WWW-Authenticate") or ""
            value = build_authorization(
                challenge, "REGISTER", f"sip:{proxy.address}", USER, PASSWORD
            )
            authorization = f"Authorization: {value}\r\n"
        return response


def test_calls_spread_over_both_nodes_and_logs_and_metrics(
    cluster: tuple[Kamailio, list[Node]], tmp_path: Path, trunk_port: int
) -> None:
    proxy, nodes = cluster
    trunk = _trunk(tmp_path / "trunk", trunk_port, 20)
    try:
        phone = _phone_calls(tmp_path / "phone", proxy, calls=12, length_ms=1500)
        result = phone.wait()
    finally:
        trunk.stop(grace_s=1)
    assert result.successful_calls == 12, result.summary()
    per_node = [
        wait_until(lambda n=node: _answered(n) or None, timeout=10, what="CDRs", interval=0.2)
        for node in nodes
    ]
    assert sum(len(rows) for rows in per_node) == 12
    assert all(per_node), "each node got some of the calls"

    for node in nodes:
        # The challenge and its answer met on the same node: no stale-nonce loops.
        log = node.log()
        assert "stale" not in log
        # JSON lines, the call's lines with its Call-ID.
        events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        call_ids = {str(row["sip_call_id"]) for row in _answered(node)}
        answered = [e for e in events if "answered" in e["message"] and "call_id" in e]
        assert {e["call_id"] for e in answered} == call_ids
        recordings = wait_until(
            lambda n=node: [r for r in n.recordings() if r["status"] != "recording"] or None,
            timeout=10,
            what="recordings filed",
        )
        assert {r["status"] for r in recordings} == {"complete"}

        with urllib.request.urlopen(f"{node.portal_url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        count = len(_answered(node))
        assert f"callrec_call_setup_seconds_count {float(count)}" in metrics
        assert "callrec_recordings_active 0.0" in metrics
        assert "callrec_calls_active 0.0" in metrics
        relayed = next(
            line for line in metrics.splitlines() if line.startswith("callrec_rtp_packets_relayed")
        )
        assert float(relayed.split()[-1]) > 0
        with urllib.request.urlopen(f"{node.portal_url}/healthz", timeout=5) as response:
            assert response.status == 200
            health = json.loads(response.read())
        assert health["status"] == "ok" and health["checks"]["store"]["ok"] is True


def test_trunk_and_registration_through_the_proxy(
    cluster: tuple[Kamailio, list[Node]], tmp_path: Path, trunk_port: int
) -> None:
    proxy, nodes = cluster
    phone_port = free_port()
    # Register from the phone's port until both nodes hold a binding (the Call-ID hash
    # picks the node): each binding must name the phone, not Kamailio.
    registered: set[str] = set()
    for _ in range(20):
        response = _register(proxy, phone_port, uuid.uuid4().hex)
        assert response.status == 200, response.status
        registered = {n.host for n in nodes if f"from 127.0.0.1:{phone_port}" in n.log()}
        if len(registered) == 2:
            break
    assert len(registered) == 2
    for node in nodes:
        assert "from 127.0.0.10" not in node.log()

    # The phone answers on the port it registered from; the trunk calls through Kamailio.
    work = tmp_path / "answer"
    work.mkdir()
    answering = start_sipp(
        "uas_echo.xml",
        work_dir=work,
        local_port=phone_port,
        media_port=free_port(even=True, span=4),
        rtp_echo=True,
        calls=8,
        timeout_s=60,
        ready_wait_s=10,
    )
    try:
        from_trunk = tmp_path / "from_trunk"
        from_trunk.mkdir()
        result = run_sipp(
            "uac_auth_pcap.xml",
            work_dir=from_trunk,
            remote=proxy.address,
            local_port=trunk_port,
            media_port=free_port(even=True, span=4),
            callee=USER,
            caller="+3120555",
            calls=8,
            rate=20,
            call_length_ms=1000,
            timeout_s=40,
        )
    finally:
        answering.stop(grace_s=2)
    # No 407: each node knew the trunk by the address Kamailio vouched for.
    assert result.successful_calls == 8, result.summary()
    inbound = [
        [row for row in _answered(node) if row.get("direction") == "inbound"] for node in nodes
    ]
    assert all(inbound), "trunk calls landed on both nodes"


def test_kill_one_node(
    cluster: tuple[Kamailio, list[Node]], tmp_path: Path, trunk_port: int
) -> None:
    proxy, nodes = cluster
    trunk = _trunk(tmp_path / "trunk", trunk_port, 60)
    try:
        long_calls = _phone_calls(tmp_path / "long", proxy, calls=8, length_ms=15000)
        try:
            wait_until(
                lambda: all(_answered(node) for node in nodes),
                timeout=15,
                what="calls answered on both nodes",
                interval=0.2,
            )
            victim, survivor = nodes
            killed_at = time.monotonic()
            victim.kill()
            down_after = wait_log(proxy.log_path, "is down", timeout=10)
            assert down_after < 6, f"Kamailio took {down_after:.1f} s to take the node out"

            before = {str(row["sip_call_id"]) for row in survivor.calls()}
            new_call = _phone_calls(tmp_path / "after", proxy, calls=1, length_ms=1000)
            wait_until(
                lambda: any(
                    row.get("answered_at") and str(row["sip_call_id"]) not in before
                    for row in survivor.calls()
                ),
                timeout=max(0.1, 5 - (time.monotonic() - killed_at)),
                what="a new call answered on the other node within 5 s of the kill",
                interval=0.1,
            )
            answered_after = time.monotonic() - killed_at
            assert new_call.wait().successful_calls == 1
            print(f"node out after {down_after:.1f} s; new call answered {answered_after:.1f} s")
        finally:
            long_calls.stop(grace_s=25)
    finally:
        trunk.stop(grace_s=1)
    # The survivor's calls went on to their end with their recordings complete.
    survivor_rows = [row for row in survivor.calls() if row.get("answered_at")]
    assert survivor_rows and all(row["disposition"] == "answered" for row in survivor_rows)
    # The dead node's calls: closed as interrupted at its next start, recordings kept.
    lost = [row for row in victim.calls() if row.get("answered_at")]
    assert lost and not any(row.get("ended_at") for row in lost)
    victim.start()
    rows = victim.calls()
    assert {row["disposition"] for row in rows if row.get("answered_at")} == {"interrupted"}
    statuses = {r["status"] for r in victim.recordings()}
    assert statuses <= {"recovered", "partial"} and statuses, statuses
    for recording in victim.recordings():
        path = victim.root / "data" / recording["path"]
        assert recording["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
