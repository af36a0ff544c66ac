"""The node-side pieces of the cluster, in this process: trust in a proxy's
X-Callrec-Source, JSON log lines with call_id, /healthz, the set-up histogram, the
authentication state shared through a ledger (b2bua.shared_auth), the heartbeat's rule
for judging other nodes (callrec.app.NodeWatch) and the [cluster] config.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from b2bua.call import LEG_HEADERS
from b2bua.digest import AuthResult
from b2bua.limits import AuthLimits, Verdict
from b2bua.message import SipRequest, parse_message
from b2bua.peer import Peer
from b2bua.server import B2bua
from b2bua.services import Directory, MediaFactory
from b2bua.shared_auth import SharedAuth
from callrec.app import NodeWatch
from callrec.config import ConfigError, load_config
from callrec.logs import CALL_ID, configure_logging
from portal.health import health_route, run_checks
from portal.metrics import SetupLatency
from storage.errors import StorageUnavailable
from storage.nodes import DeadNode

PROXY = Peer("127.0.0.10", 5060, "udp")


def _b2bua(proxies: tuple[str, ...]) -> B2bua:
    config = load_config(None)
    config = dataclasses.replace(config, sip=dataclasses.replace(config.sip, proxies=proxies))
    return B2bua(
        config,
        cast(Directory, object()),
        cast(MediaFactory, object()),
        spawn=lambda work: cast(Any, work.close()),
    )


def _request(source: str | None) -> SipRequest:
    header = f"X-Callrec-Source: {source}\r\n" if source is not None else ""
    message = parse_message(
        (
            "REGISTER sip:callrec SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK1\r\n"
            "From: <sip:100@callrec>;tag=1\r\nTo: <sip:100@callrec>\r\nCall-ID: a\r\n"
            f"CSeq: 1 REGISTER\r\n{header}Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, SipRequest)
    return message


def test_source_named_by_a_trusted_proxy_is_believed() -> None:
    b2bua = _b2bua(("127.0.0.10",))
    source = b2bua.source_of(_request("192.0.2.7:5062;transport=udp"), PROXY)
    assert source == Peer("192.0.2.7", 5062, "udp")
    assert b2bua.source_of(_request("[2001:db8::1]:5070;transport=tcp"), PROXY) == Peer(
        "2001:db8::1", 5070, "tcp"
    )


def test_source_header_from_anyone_else_proves_nothing() -> None:
    phone = Peer("127.0.0.1", 5070, "udp")
    assert _b2bua(("127.0.0.10",)).source_of(_request("192.0.2.7:5062"), phone) == phone
    # No proxies configured: not even the proxy's address is believed.
    assert _b2bua(()).source_of(_request("192.0.2.7:5062"), PROXY) == PROXY


def test_proxy_without_or_with_a_bad_header_is_the_source() -> None:
    b2bua = _b2bua(("127.0.0.10",))
    assert b2bua.source_of(_request(None), PROXY) == PROXY
    assert b2bua.source_of(_request("not an address"), PROXY) == PROXY


def test_source_header_never_reaches_the_other_leg() -> None:
    assert "x-callrec-source" in LEG_HEADERS


def test_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "callrec.toml"
    path.write_text('[sip]\nproxies = ["127.0.0.10"]\n[server]\nlog_format = "json"\n')
    config = load_config(path)
    assert config.sip.proxies == ("127.0.0.10",)
    assert config.server.log_format == "json"
    path.write_text('[sip]\nproxies = ["kamailio.example"]\n')
    with pytest.raises(ConfigError, match=r"\[sip\] proxies"):
        load_config(path)
    path.write_text('[server]\nlog_format = "xml"\n')
    with pytest.raises(ConfigError, match=r"\[server\] log_format"):
        load_config(path)


@pytest.fixture
def restore_logging() -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


async def test_json_lines_carry_the_call_id(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream)
    log = logging.getLogger("callrec.test")
    log.info("outside any call")
    token = CALL_ID.set("abc@host")
    try:

        async def in_a_task() -> None:
            log.warning("inside: %s", "set-up")

        # A task started while a message is handled inherits its Call-ID.
        await asyncio.create_task(in_a_task())
        log.info("explicit", extra={"call_id": "other@host"})
        try:
            raise ValueError("line one\nline two")
        except ValueError:
            log.exception("failed")
    finally:
        CALL_ID.reset(token)
    lines = stream.getvalue().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(lines) == 4
    assert "call_id" not in events[0]
    assert events[1]["call_id"] == "abc@host" and events[1]["message"] == "inside: set-up"
    assert events[1]["level"] == "WARNING" and events[1]["logger"] == "callrec.test"
    assert events[2]["call_id"] == "other@host"
    assert "line two" in events[3]["exc"]


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[str, dict[str, bool]]]:
    state = {"objects": True}

    async def store() -> None:
        return None

    async def objects() -> None:
        if not state["objects"]:
            raise ConnectionRefusedError("s3 at /secret/path refused")

    app = web.Application()
    app.add_routes([health_route({"store": store, "objects": objects})])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/healthz", state
    finally:
        await runner.cleanup()


async def test_healthz_answers_200_then_503(health_server: tuple[str, dict[str, bool]]) -> None:
    url, state = health_server
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 200
            body = await response.json()
        assert body["status"] == "ok" and body["checks"]["objects"]["ok"] is True
        state["objects"] = False
        async with session.get(url) as response:
            assert response.status == 503
            text = await response.text()
        body = json.loads(text)
        assert body["status"] == "failing"
        assert body["checks"]["objects"] == {"ok": False, "error": "ConnectionRefusedError"}
        assert body["checks"]["store"]["ok"] is True
        assert "/secret/path" not in text


async def test_a_check_that_hangs_fails_within_the_timeout() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    results = await run_checks({"store": hangs}, timeout=0.05)
    assert results["store"]["ok"] is False and results["store"]["error"] == "TimeoutError"


def test_setup_histogram_is_cumulative() -> None:
    latency = SetupLatency(buckets=(0.5, 1.0))
    for seconds in (0.1, 0.5, 0.7, 3.0):
        latency.observe(seconds)
    assert latency.cumulative() == [("0.5", 2), ("1.0", 3), ("+Inf", 4)]
    assert latency.total == pytest.approx(4.3)


# -- shared authentication state (b2bua.shared_auth) ----------------------------------


@dataclasses.dataclass
class _Locks:
    source_until: float = 0.0
    user_until: float = 0.0
    trusted_until: float = 0.0


class _Ledger:
    """An AuthLedger in memory, as another node's writes left it."""

    def __init__(self) -> None:
        self.locks = _Locks()
        self.accepted: dict[str, int] = {}
        self.failures: list[tuple[str, str | None]] = []
        self.start_lock: list[tuple[str, str, float]] = []
        self.broken = False

    async def nonce_secret(self) -> bytes:
        return b"s" * 32

    async def accept_nonce(
        self,
        nonce: str,
        issued: float,
        nc: int,
        expires_before: float,
        *,
        username: str,
        source: str,
        trusted_until: float,
    ) -> bool:
        if self.broken:
            raise ConnectionError("store down")
        if self.accepted.get(nonce, 0) >= nc:
            return False
        self.accepted[nonce] = nc
        return True

    async def lock_state(self, source: str, username: str | None, now: float) -> _Locks:
        if self.broken:
            raise ConnectionError("store down")
        return self.locks

    async def count_failure(
        self,
        source: str,
        username: str | None,
        now: float,
        *,
        window: float,
        max_failures: int,
        lockout: float,
    ) -> list[tuple[str, str, float]]:
        self.failures.append((source, username))
        return self.start_lock


def _shared(ledger: _Ledger) -> tuple[SharedAuth, AuthLimits]:
    limits = AuthLimits(max_failures=3, window=60.0, lockout=300.0)
    # Wall clock 1000 s ahead of the monotonic one.
    shared = SharedAuth(
        ledger, limits, nonce_lifetime=60.0, wall=lambda: 1100.0, monotonic=lambda: 100.0
    )
    return shared, limits


async def test_lockouts_of_other_nodes_are_imposed_before_the_check() -> None:
    ledger = _Ledger()
    shared, limits = _shared(ledger)
    await shared.before_check("192.0.2.7", "100@callrec")
    assert limits.check("192.0.2.7", "100@callrec", 100.0) is Verdict.ALLOW
    ledger.locks = _Locks(source_until=1400.0)
    await shared.before_check("192.0.2.7", "100@callrec")
    # Until 1400 wall time is until 400 on the monotonic clock.
    assert limits.check("192.0.2.7", None, 399.0) is Verdict.REFUSE_SOURCE
    assert limits.check("192.0.2.7", None, 401.0) is Verdict.ALLOW
    # A locked user, except from a source the user authenticated from on another node.
    ledger.locks = _Locks(user_until=1400.0, trusted_until=1200.0)
    await shared.before_check("198.51.100.1", "101@callrec")
    assert limits.check("198.51.100.1", "101@callrec", 150.0) is Verdict.ALLOW
    assert limits.check("198.51.100.2", "101@callrec", 150.0) is Verdict.REFUSE_USER
    # A store that is down: the node decides with what it knows.
    ledger.broken = True
    await shared.before_check("203.0.113.9", None)
    assert limits.check("203.0.113.9", None, 150.0) is Verdict.ALLOW


async def test_a_count_accepted_on_another_node_is_a_replay() -> None:
    ledger = _Ledger()
    shared, _ = _shared(ledger)
    ok = AuthResult(True, "100", False, "ok", nonce="n", issued=1090.0, nc=1)
    assert (await shared.accept(ok, "127.0.0.1", "100@callrec")).ok
    replay = await shared.accept(ok, "127.0.0.1", "100@callrec")
    assert not replay.ok and replay.failed and "another node" in replay.reason
    ledger.broken = True  # the store is down: the node's own count decided
    assert (await shared.accept(ok, "127.0.0.1", "100@callrec")).ok


async def test_a_lockout_started_by_the_shared_count_applies_here_at_once() -> None:
    ledger = _Ledger()
    shared, limits = _shared(ledger)
    await shared.count_failure("192.0.2.7", "100@callrec")
    assert ledger.failures == [("192.0.2.7", "100@callrec")]
    assert limits.check("192.0.2.7", None, 100.0) is Verdict.ALLOW
    ledger.start_lock = [("source", "192.0.2.7", 1400.0)]
    await shared.count_failure("192.0.2.7", None)
    assert limits.check("192.0.2.7", None, 100.0) is Verdict.REFUSE_SOURCE


# -- heartbeats and take-over (callrec.app.NodeWatch) ---------------------------------


class _Nodes:
    def __init__(self) -> None:
        self.beats: list[tuple[str, float, bool]] = []
        self.judged: list[float] = []
        self.down = False

    async def heartbeat(self, node: str, now: float, *, starting: bool = False) -> None:
        if self.down:
            raise StorageUnavailable("the database cannot be reached")
        self.beats.append((node, now, starting))

    async def take_over_dead_nodes(self, me: str, now: float, timeout: float) -> list[DeadNode]:
        self.judged.append(now)
        return [DeadNode("other", now - 20, ("c1@x",), 1)] if len(self.judged) == 1 else []


async def test_a_node_judges_others_only_after_a_whole_timeout_of_its_own_heartbeats() -> None:
    nodes = _Nodes()
    watch = NodeWatch(cast(Any, nodes), "me", timeout=15.0)
    await watch.beat(100.0)
    await watch.beat(105.0)
    assert nodes.judged == [] and nodes.beats[0] == ("me", 100.0, True)
    await watch.beat(115.0)
    assert nodes.judged == [115.0]
    # The store goes down, and comes back: every heartbeat is old now, the others' too.
    nodes.down = True
    await watch.beat(120.0)
    nodes.down = False
    await watch.beat(140.0)
    await watch.beat(150.0)
    assert nodes.judged == [115.0], "not before 15 s of its own heartbeats again"
    await watch.beat(155.0)
    assert nodes.judged == [115.0, 155.0]


def test_cluster_config(tmp_path: Path) -> None:
    path = tmp_path / "callrec.toml"
    assert load_config(None).cluster.node_timeout == 15.0
    path.write_text("[cluster]\nnode_timeout = 4\n")
    config = load_config(path)
    assert config.cluster.node_timeout == 4.0 and config.cluster.heartbeat_interval == 4 / 3
    path.write_text("[cluster]\nnode_timeout = 0\n")
    with pytest.raises(ConfigError, match=r"\[cluster\] node_timeout"):
        load_config(path)
