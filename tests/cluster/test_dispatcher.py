"""Two callrec nodes (127.0.0.2, 127.0.0.3) behind Kamailio's dispatcher (127.0.0.10),
sharing one PostgreSQL and one SeaweedFS S3 store (testkit/cluster.py). One cluster
serves the whole module; the tests run in this order, each leaving it whole.

Phones (SIPp with digest) and the trunk (SIPp from the trunk's address) send everything
to Kamailio only. Checked:
- calls spread over both nodes; their recordings reach the bucket with the SHA-256 the
  writer sealed and play (Range requests) and download from the portal of the other node;
  the month's ZIP holds them; no SQLite file anywhere; /metrics, /healthz, JSON logs;
- a phone that registered through one node is called through both (shared bindings);
- a nonce one node issued is good on the other (answered through Kamailio with new
  Call-IDs until each node has taken one), a count accepted on one node is a replay on
  any, and failures sent to both nodes (directly, from an address of their own) add up
  to one lock-out on both;
- the object store stopped for 30 s during recorded calls: the recordings wait on the
  nodes' disks (alarm, queue gauge), the portal answers 503 for an uploaded one, and
  every recording arrives, verified, once the store is back;
- PostgreSQL stopped for 10 s: the calls in progress keep their audio and recordings,
  a new call gets a clean 503 from each node (Kamailio passes it on as a 500, RFC 3261
  16.7), and new calls succeed afterwards with no restart;
- kill -9 of a node mid-call: Kamailio takes it out and new calls succeed within 5 s,
  the other node's calls go on, the other node closes the dead one's calls
  (`interrupted`) and recordings (`partial`) after `[cluster] node_timeout`, and once the
  dead node is back its partial recordings are uploaded and play from the other node.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import socket
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from b2bua.digest import build_authorization
from b2bua.message import SipResponse, parse_message
from testkit.cluster import Cluster, Kamailio, Node, cluster_missing, wait_log
from testkit.s3 import SeaweedS3
from testkit.sipp_runner import SippProcess, free_port, run_sipp, start_sipp
from testkit.waiting import wait_until
from tests.portal.conftest import login, new_session

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(cluster_missing() is not None, reason=str(cluster_missing())),
    pytest.mark.timeout(240),
]

USER, PASSWORD = "100", "secret-100"
GUESSED, GUESSED_PASSWORD = "199", "secret-199"
ADMIN = ("root", "admin-secret-1")
MAX_FAILURES = 4
NODE_TIMEOUT_S = 4.0
S3_OUTAGE_S = 30.0
PG_OUTAGE_S = 10.0
PREFIX = "cluster"
_CSEQ = itertools.count(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("cluster"),
        users=(
            (USER, "--name", "Ann", "--password", PASSWORD, "--mode", "always"),
            (GUESSED, "--name", "Guy", "--password", GUESSED_PASSWORD),
        ),
        admins=(ADMIN,),
        # The queue alarm at once, and uploads retried at most 2 s apart: the figure
        # after an outage is the outage, not the retry interval.
        storage_extra="upload_queue_alarm = 1\nupload_retry_max = 2\n",
        sip_extra=f"auth_max_failures = {MAX_FAILURES}\n",
        node_extra=f"[cluster]\nnode_timeout = {NODE_TIMEOUT_S}\n",
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _proxy(cluster: Cluster) -> Kamailio:
    assert cluster.proxy is not None
    return cluster.proxy


def _s3(cluster: Cluster) -> SeaweedS3:
    assert cluster.s3 is not None
    return cluster.s3


def _trunk(work: Path, port: int, seconds: float, calls: int = 50) -> SippProcess:
    work.mkdir(parents=True, exist_ok=True)
    return start_sipp(
        "uas_echo.xml",
        work_dir=work,
        local_port=port,
        media_port=free_port(even=True, span=4),
        rtp_echo=True,
        calls=calls,
        timeout_s=seconds + 30,
        ready_wait_s=10,
    )


def _phone_calls(work: Path, proxy: Kamailio, *, calls: int, length_ms: int) -> SippProcess:
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


def _record(cluster: Cluster, work: Path, *, calls: int, length_ms: int) -> None:
    """`calls` recorded calls from phone 100 through Kamailio, all answered and ended."""
    trunk = _trunk(work / "trunk", cluster.trunk_port, length_ms / 1000 + 10)
    try:
        result = _phone_calls(work / "phone", _proxy(cluster), calls=calls, length_ms=length_ms)
        outcome = result.wait()
    finally:
        trunk.stop(grace_s=1)
    assert outcome.successful_calls == calls, outcome.summary()


def _recordings_since(cluster: Cluster, after_id: int) -> list[dict[str, Any]]:
    return cluster.sql(
        "SELECT r.*, c.node, c.sip_call_id FROM recordings r JOIN calls c ON c.id = r.call_id"
        " WHERE r.id > $1 ORDER BY r.id",
        after_id,
    )


def _last_recording_id(cluster: Cluster) -> int:
    return int(cluster.sql("SELECT COALESCE(MAX(id), 0) AS n FROM recordings")[0]["n"])


def _all_uploaded(cluster: Cluster, after_id: int, count: int) -> list[dict[str, Any]] | None:
    rows = _recordings_since(cluster, after_id)
    done = [r for r in rows if r["storage_state"] == "remote"]
    return rows if len(rows) >= count and len(done) == len(rows) else None


def _check_objects(cluster: Cluster, rows: list[dict[str, Any]]) -> None:
    """Each recording is in the bucket with its sealed SHA-256 and size."""
    s3 = _s3(cluster)
    for row in rows:
        data = s3.read(f"{PREFIX}/{row['path']}")
        assert hashlib.sha256(data).hexdigest() == row["sha256"], row
        assert len(data) == row["bytes"] and data.startswith(b"RIFF")


def _all_of(
    fetch: Callable[[], list[dict[str, Any]]],
    condition: Callable[[dict[str, Any]], bool],
    count: int | None = None,
) -> Callable[[], list[dict[str, Any]] | None]:
    """For wait_until: the rows `fetch` gives once there are some (`count` of them, if
    given) and `condition` holds for all; None until then."""

    def check() -> list[dict[str, Any]] | None:
        rows = fetch()
        if not rows or (count is not None and len(rows) != count):
            return None
        return rows if all(condition(row) for row in rows) else None

    return check


def _node_of(cluster: Cluster, name: str) -> Node:
    return next(node for node in cluster.nodes if node.name == name)


def _other(cluster: Cluster, node: Node) -> Node:
    return next(other for other in cluster.nodes if other is not node)


def _metric(node: Node, name: str) -> float | None:
    with urllib.request.urlopen(f"{node.portal_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    line = next((x for x in text.splitlines() if x.startswith(f"{name} ")), None)
    return float(line.split()[-1]) if line else None


async def _play_from(node: Node, row: dict[str, Any], cluster: Cluster) -> None:
    """The recording plays from `node`'s portal: Range requests give the object's bytes."""
    key = f"{PREFIX}/{row['path']}"
    data = _s3(cluster).read(key)
    async with new_session() as session:
        await login(session, node.portal_url, *ADMIN)
        url = f"{node.portal_url}/api/v1/recordings/{row['id']}"
        for byte_range in ("bytes=100-1099", "bytes=-300"):
            async with session.get(f"{url}/audio", headers={"Range": byte_range}) as answer:
                assert answer.status == 206, await answer.text()
                body = await answer.read()
                assert answer.headers["Content-Range"].endswith(f"/{len(data)}")
            assert body == _s3(cluster).read(key, byte_range), byte_range


# -- 1 ------------------------------------------------------------------------------------


async def test_calls_spread_recordings_uploaded_and_played_from_either_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    before = _last_recording_id(cluster)
    _record(cluster, tmp_path, calls=8, length_ms=1500)
    rows = wait_until(
        lambda: _all_uploaded(cluster, before, 8), timeout=30, what="8 recordings uploaded"
    )
    assert {r["status"] for r in rows} == {"complete"}
    by_node = {node.name: [r for r in rows if r["node"] == node.name] for node in cluster.nodes}
    assert all(by_node.values()), f"each node got some of the calls: {by_node.keys()}"
    _check_objects(cluster, rows)
    for node in cluster.nodes:
        assert not list(node.data_dir.rglob("*.wav")), "local copies deleted once uploaded"
        assert not list(node.data_dir.glob("*.db")), "a SQLite file was made beside PostgreSQL"

    # Each node's recording plays from the other node's portal, and downloads whole.
    for node in cluster.nodes:
        row = by_node[node.name][0]
        other = _other(cluster, node)
        await _play_from(other, row, cluster)
    row = rows[0]
    async with new_session() as session:
        await login(session, cluster.nodes[1].portal_url, *ADMIN)
        url = f"{cluster.nodes[1].portal_url}/api/v1/recordings/{row['id']}"
        async with session.get(f"{url}/audio", headers={"Range": "bytes=99999999-"}) as answer:
            assert answer.status == 416
        async with session.get(f"{url}/download") as answer:
            assert answer.status == 200
            assert hashlib.sha256(await answer.read()).hexdigest() == row["sha256"]

    # The month's ZIP, made by one node, holds every node's recordings.
    month = datetime.fromtimestamp(float(row["started_at"]), UTC).strftime("%Y-%m")
    target = tmp_path / "month.zip"
    cluster.nodes[0].cli("settings", "set", "retention_days", "180")
    cluster.nodes[0].cli("settings", "set", "bulk_download", "on")
    cluster.nodes[0].cli("recordings", "export", "--month", month, "-o", str(target))
    with zipfile.ZipFile(io.BytesIO(target.read_bytes())) as archive:
        sums = {
            hashlib.sha256(archive.read(name)).hexdigest()
            for name in archive.namelist()
            if name != "manifest.csv"
        }
    assert {r["sha256"] for r in rows} <= sums

    for node in cluster.nodes:
        log = node.log()
        # The challenge and its answer met on the same node: no stale-nonce loops.
        assert "stale" not in log
        events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        call_ids = {str(r["sip_call_id"]) for r in by_node[node.name]}
        answered = {e["call_id"] for e in events if "answered" in e["message"] and "call_id" in e}
        assert call_ids <= answered
        count = len([c for c in cluster.calls_by_node()[node.name] if c["answered_at"]])
        assert _metric(node, "callrec_call_setup_seconds_count") == float(count)
        assert _metric(node, "callrec_calls_active") == 0.0
        assert (_metric(node, "callrec_rtp_packets_relayed_total") or 0) > 0
        with urllib.request.urlopen(f"{node.portal_url}/healthz", timeout=5) as response:
            assert response.status == 200
            health = json.loads(response.read())
        assert health["status"] == "ok" and health["checks"]["store"]["ok"] is True
        assert health["checks"]["objects"]["ok"] is True


# -- 2 ------------------------------------------------------------------------------------


def _register(
    sock: socket.socket,
    destination: tuple[str, int],
    call_id: str,
    authorization: str = "",
    expires: int = 300,
) -> SipResponse:
    """Send one REGISTER for 100 from `sock` to `destination`; its final answer."""
    return _register_as(sock, destination, call_id, USER, authorization, expires)


def _authorization(
    challenge: SipResponse, uri: str, user: str, password: str, nc: int, cnonce: str
) -> str:
    value = build_authorization(
        challenge.headers.get("WWW-Authenticate") or "",
        "REGISTER",
        uri,
        user,
        password,
        nc=nc,
        cnonce=cnonce,
    )
    return f"Authorization: {value}\r\n"


def test_a_phone_registered_through_one_node_is_called_through_both(
    cluster: Cluster, tmp_path: Path
) -> None:
    proxy = _proxy(cluster)
    phone_port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", phone_port))
        sock.settimeout(5)
        call_id = uuid.uuid4().hex
        challenge = _register(sock, (proxy.host, proxy.port), call_id)
        assert challenge.status == 401
        uri = f"sip:{proxy.address}"
        authorization = _authorization(challenge, uri, USER, PASSWORD, 1, "c0ffee")
        assert _register(sock, (proxy.host, proxy.port), call_id, authorization).status == 200
    # One REGISTER, one node; the binding names the phone, not Kamailio.
    holders = [n for n in cluster.nodes if f"from 127.0.0.1:{phone_port}" in n.log()]
    assert len(holders) == 1, [n.host for n in holders]
    bindings = cluster.sql("SELECT received FROM registrations")
    assert any(f"127.0.0.1:{phone_port}" in str(b["received"]) for b in bindings), bindings

    # The trunk calls 100 through Kamailio: the calls land on both nodes, and both find
    # the phone's binding in the shared store.
    before = {c["id"] for c in cluster.sql("SELECT id FROM calls")}
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
            local_port=cluster.trunk_port,
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
        c
        for c in cluster.sql("SELECT id, node, direction, answered_at FROM calls")
        if c["id"] not in before and c["direction"] == "inbound" and c["answered_at"]
    ]
    assert {c["node"] for c in inbound} == {n.name for n in cluster.nodes}, inbound


# -- 3 ------------------------------------------------------------------------------------


def _register_from_new_port(proxy: Kamailio, challenge: SipResponse, nc: int) -> tuple[int, int]:
    """Answer `challenge` (count `nc`) in a REGISTER through Kamailio, with a new Call-ID
    from a new port of the same address (a nonce is bound to the address, not the port);
    the status and the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        uri = f"sip:{proxy.address}"
        authorization = _authorization(challenge, uri, USER, PASSWORD, nc, "feed")
        # Expires 0: no binding is left behind, the credentials are checked all the same.
        destination = (proxy.host, proxy.port)
        answer = _register(sock, destination, uuid.uuid4().hex, authorization, expires=0)
        return answer.status, sock.getsockname()[1]


def _node_that_took(cluster: Cluster, port: int) -> Node:
    (node,) = [n for n in cluster.nodes if f"from 127.0.0.1:{port};" in n.log()]
    return node


def test_nonces_and_lockouts_are_shared_by_the_nodes(cluster: Cluster) -> None:
    proxy = _proxy(cluster)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        challenge = _register(sock, (proxy.host, proxy.port), uuid.uuid4().hex)
    assert challenge.status == 401
    # The nonce answered with new Call-IDs, which Kamailio hashes to either node: it is
    # accepted wherever it lands (each time with a higher count), until one answer has
    # landed on each node.
    took: set[str] = set()
    nc = 0
    while len(took) < 2 and nc < 16:
        nc += 1
        status, port = _register_from_new_port(proxy, challenge, nc)
        assert status == 200, (nc, status)
        took.add(_node_that_took(cluster, port).host)
    assert len(took) == 2, "both nodes accepted the one nonce"
    # The last count again: a replay on whichever node it lands (nonce counts are shared).
    # Twice only: each is a failure of this address, which the later tests call from.
    for _ in range(2):
        status, _ = _register_from_new_port(proxy, challenge, nc)
        assert status == 401, status
    assert any("replayed" in node.log() for node in cluster.nodes)

    # Wrong passwords from one source, spread over both nodes: MAX_FAILURES in all lock
    # it out on both, though each node saw only half of them.
    guesser = "127.0.0.50"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((guesser, 0))
        sock.settimeout(5)

        def attempt(node: Node, password: str) -> int:
            call_id = uuid.uuid4().hex
            destination = (node.host, node.sip_port)
            challenge = _register_as(sock, destination, call_id, GUESSED)
            if challenge.status != 401:
                return challenge.status
            uri = f"sip:{node.host}:{node.sip_port}"
            value = build_authorization(
                challenge.headers.get("WWW-Authenticate") or "", "REGISTER", uri, GUESSED, password
            )
            answer = _register_as(
                sock, destination, call_id, GUESSED, f"Authorization: {value}\r\n"
            )
            return answer.status

        for i in range(MAX_FAILURES):
            assert attempt(cluster.nodes[i % 2], "wrong") == 401
        wait_until(
            lambda: cluster.sql(
                "SELECT 1 FROM auth_locks WHERE kind = 'source' AND key = $1", guesser
            ),
            timeout=5,
            what="the shared lock-out",
            interval=0.1,
        )
        for node in cluster.nodes:
            assert attempt(node, GUESSED_PASSWORD) == 403, node.host


def _register_as(
    sock: socket.socket,
    destination: tuple[str, int],
    call_id: str,
    user: str,
    authorization: str = "",
    expires: int = 300,
) -> SipResponse:
    local = sock.getsockname()
    message = (
        f"REGISTER sip:{destination[0]}:{destination[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"From: <sip:{user}@callrec>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{user}@callrec>\r\nCall-ID: {call_id}\r\nCSeq: {next(_CSEQ)} REGISTER\r\n"
        f"Contact: <sip:{user}@{local[0]}:{local[1]}>\r\nExpires: {expires}\r\n"
        f"{authorization}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    sock.sendto(message, destination)
    while True:
        response = parse_message(sock.recv(65535))
        assert isinstance(response, SipResponse)
        if response.status >= 200:
            return response


# -- 4 ------------------------------------------------------------------------------------


async def test_recordings_made_while_the_object_store_is_down_arrive_after_it_returns(
    cluster: Cluster, tmp_path: Path
) -> None:
    s3 = _s3(cluster)
    uploaded = _recordings_since(cluster, 0)
    assert uploaded and uploaded[0]["storage_state"] == "remote", "test 1 left one uploaded"
    before = _last_recording_id(cluster)
    alarms = sum(node.log().count("ALARM:") for node in cluster.nodes)
    s3.stop()
    stopped_at = time.monotonic()
    try:
        _record(cluster, tmp_path, calls=6, length_ms=2000)
        rows = wait_until(
            _all_of(
                lambda: _recordings_since(cluster, before),
                lambda r: r["status"] == "complete",
                count=6,
            ),
            timeout=20,
            what="6 recordings filed",
            interval=0.3,
        )
        # They wait on the nodes' disks, queued, and the alarm says so.
        for row in rows:
            assert row["storage_state"] == "uploading", row
            assert (_node_of(cluster, row["upload_node"]).data_dir / row["path"]).exists()
        wait_until(
            lambda: sum(node.log().count("ALARM:") for node in cluster.nodes) > alarms,
            timeout=10,
            what="the queue alarm",
            interval=0.2,
        )
        # The gauges follow at each queue's next attempt.
        wait_until(
            lambda: sum(_metric(n, "callrec_upload_queue_depth") or 0 for n in cluster.nodes) == 6,
            timeout=10,
            what="the queue gauges at 6 in all",
            interval=0.3,
        )
        # An uploaded recording cannot be played meanwhile: a clean 503 naming no bucket.
        node = cluster.nodes[0]
        async with new_session() as session:
            await login(session, node.portal_url, *ADMIN)
            url = f"{node.portal_url}/api/v1/recordings/{uploaded[0]['id']}/audio"
            async with session.get(url) as answer:
                assert answer.status == 503, await answer.text()
                assert s3.bucket not in await answer.text()
        wait_until(
            lambda: time.monotonic() - stopped_at >= S3_OUTAGE_S,
            timeout=S3_OUTAGE_S,
            what="the end of the outage",
            interval=0.2,
        )
    finally:
        s3.start()
    back_at = time.monotonic()
    done = wait_until(
        lambda: _all_uploaded(cluster, before, 6), timeout=30, what="every recording uploaded"
    )
    arrived_after = time.monotonic() - back_at
    _check_objects(cluster, done)
    for row in done:
        assert not (_node_of(cluster, row["node"]).data_dir / row["path"]).exists()
    print(
        json.dumps(
            {
                "outage_s": round(back_at - stopped_at, 1),
                "uploaded_after_s": round(arrived_after, 1),
            }
        )
    )


# -- 5 ------------------------------------------------------------------------------------


def _invite_status(destination: tuple[str, int], timeout: float = 2.0) -> str | None:
    """One INVITE from a phone without credentials: the final answer's status line
    (407 when the node can read its directory, 503 when it cannot)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        sdp += "m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
        message = (
            f"INVITE sip:300@{destination[0]}:{destination[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            f"From: <sip:{USER}@callrec>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:300@callrec>\r\nCall-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:{USER}@127.0.0.1:{local}>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        ).encode()
        sock.sendto(message, destination)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                data = sock.recv(65535)
            except TimeoutError:
                return None
            status = data.split(b"\r\n", 1)[0].decode(errors="replace")
            if not status.startswith("SIP/2.0 1"):
                return status
    return None


def _refused(destination: tuple[str, int]) -> bool:
    return (_invite_status(destination, 1.0) or "").startswith("SIP/2.0 503")


def test_postgresql_stopped_for_10_s(cluster: Cluster, tmp_path: Path) -> None:
    proxy = _proxy(cluster)
    postgres = cluster.postgres
    assert postgres is not None
    seconds = 14.0
    before = _last_recording_id(cluster)
    trunk = _trunk(tmp_path / "trunk", cluster.trunk_port, seconds + 20)
    try:
        calls = _phone_calls(tmp_path / "long", proxy, calls=4, length_ms=int(seconds * 1000))
        wait_until(
            lambda: len(_recordings_since(cluster, before)) == 4,
            timeout=10,
            what="4 calls answered and recording",
            interval=0.2,
        )
        postgres.stop()
        stopped_at = time.monotonic()
        try:
            # New calls: a clean 503 from each node (once its directory's cache is stale).
            for node in cluster.nodes:
                destination = (node.host, node.sip_port)
                wait_until(
                    functools.partial(_refused, destination),
                    timeout=PG_OUTAGE_S - 2,
                    what=f"a new call refused with 503 by {node.host}",
                    interval=0.2,
                )
            # Through Kamailio the phone gets a 5xx too (RFC 3261 16.7: a proxy turns a
            # 503 into a 500, so that the phone does not take Kamailio for the one out).
            through = _invite_status((proxy.host, proxy.port), 1.0)
            assert through == "SIP/2.0 500 Service Unavailable", through
            wait_until(
                lambda: time.monotonic() - stopped_at >= PG_OUTAGE_S,
                timeout=PG_OUTAGE_S,
                what="the end of the outage",
                interval=0.2,
            )
        finally:
            postgres.start_again()
        back_at = time.monotonic()
        # Service resumes by itself: a new call through Kamailio is challenged again...
        wait_until(
            lambda: (
                _invite_status((proxy.host, proxy.port), 1.0)
                == "SIP/2.0 407 Proxy Authentication Required"
            ),
            timeout=10,
            what="the nodes answering with their directory again",
            interval=0.2,
        )
        resumed_after = time.monotonic() - back_at
        # ... and the calls in progress went on to their end, recorded whole.
        outcome = calls.wait()
        assert outcome.successful_calls == 4, outcome.summary()
    finally:
        trunk.stop(grace_s=1)
    rows = wait_until(
        lambda: _all_uploaded(cluster, before, 4), timeout=30, what="the 4 recordings uploaded"
    )
    assert {r["status"] for r in rows} == {"complete"}, rows
    assert all(float(r["duration_s"]) >= seconds - 2 for r in rows), rows
    _check_objects(cluster, rows)
    # And new calls succeed, with no restart.
    after = _last_recording_id(cluster)
    _record(cluster, tmp_path / "after", calls=2, length_ms=1000)
    assert len(_recordings_since(cluster, after)) == 2
    assert resumed_after < 10


# -- 6 ------------------------------------------------------------------------------------


async def test_kill_one_node_mid_call(cluster: Cluster, tmp_path: Path) -> None:
    proxy = _proxy(cluster)
    before = _last_recording_id(cluster)
    seconds = 10.0

    def open_calls() -> dict[str, list[dict[str, Any]]]:
        rows = cluster.sql(
            "SELECT c.node, c.id FROM recordings r JOIN calls c ON c.id = r.call_id"
            " WHERE r.id > $1 AND r.status = 'recording'",
            before,
        )
        return {n.name: [r for r in rows if r["node"] == n.name] for n in cluster.nodes}

    trunk = _trunk(tmp_path / "trunk", cluster.trunk_port, seconds + 20)
    try:
        long_calls = _phone_calls(tmp_path / "long", proxy, calls=8, length_ms=int(seconds * 1000))
        try:
            wait_until(
                lambda: all(open_calls().values()),
                timeout=10,
                what="calls recording on both nodes",
                interval=0.2,
            )
            victim, survivor = cluster.nodes
            lost = [r["id"] for r in open_calls()[victim.name]]
            kept = [r["id"] for r in open_calls()[survivor.name]]
            killed_at = time.monotonic()
            victim.kill()
            down_after = wait_log(proxy.log_path, "is down", timeout=10)
            assert down_after < 6, f"Kamailio took {down_after:.1f} s to take the node out"
            known = {c["id"] for c in cluster.sql("SELECT id FROM calls")}
            new_call = _phone_calls(tmp_path / "after", proxy, calls=1, length_ms=1000)
            wait_until(
                lambda: cluster.sql(
                    "SELECT id FROM calls WHERE node = $1 AND answered_at IS NOT NULL"
                    " AND NOT (id = ANY($2::bigint[]))",
                    survivor.name,
                    list(known),
                ),
                timeout=max(0.1, 5 - (time.monotonic() - killed_at)),
                what="a new call answered on the other node within 5 s of the kill",
                interval=0.1,
            )
            answered_after = time.monotonic() - killed_at
            assert new_call.wait().successful_calls == 1
            # The survivor closes the dead node's calls once its heartbeat is too old.
            closed = wait_until(
                _all_of(
                    lambda: cluster.sql(
                        "SELECT id, ended_at, disposition FROM calls WHERE id = ANY($1::bigint[])",
                        lost,
                    ),
                    lambda r: r["disposition"] == "interrupted",
                ),
                timeout=NODE_TIMEOUT_S * 2 + 5,
                what="the dead node's calls closed by the other",
                interval=0.2,
            )
            closed_after = time.monotonic() - killed_at
            assert all(r["ended_at"] for r in closed)
            assert f"cluster: node {victim.name} silent" in survivor.log()
            # The survivor's calls go on to their end, recorded whole.
            survivor_rows = wait_until(
                _all_of(
                    lambda: cluster.sql(
                        "SELECT status, duration_s FROM recordings"
                        " WHERE call_id = ANY($1::bigint[])",
                        kept,
                    ),
                    lambda r: r["status"] == "complete",
                ),
                timeout=seconds + 10,
                what="the survivor's recordings complete",
                interval=0.3,
            )
            assert all(float(r["duration_s"]) >= seconds - 2 for r in survivor_rows)
        finally:
            long_calls.stop(grace_s=1)
    finally:
        trunk.stop(grace_s=1)
    partial = cluster.sql("SELECT * FROM recordings WHERE call_id = ANY($1::bigint[])", lost)
    assert {r["status"] for r in partial} == {"partial"}, partial
    assert all(r["sha256"] is None for r in partial), "the files are on the dead node's disk"
    print(
        json.dumps(
            {
                "node_out_s": round(down_after, 1),
                "new_call_answered_s": round(answered_after, 1),
                "calls_closed_s": round(closed_after, 1),
            }
        )
    )

    # The dead node comes back: it repairs and files what it wrote, and uploads it; the
    # other node's portal plays it.
    victim.start()
    rows = wait_until(
        _all_of(
            lambda: cluster.sql("SELECT * FROM recordings WHERE call_id = ANY($1::bigint[])", lost),
            lambda r: r["storage_state"] == "remote",
        ),
        timeout=30,
        what="the partial recordings uploaded once their node is back",
        interval=0.3,
    )
    assert {r["status"] for r in rows} == {"partial"}
    _check_objects(cluster, rows)
    assert all(float(r["duration_s"]) > 0 for r in rows), rows
    await _play_from(survivor, rows[0], cluster)
